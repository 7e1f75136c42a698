"""The operator's client for the coordinator's operator API (used by the CLI and the demo)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc

from coordinator import convert
from coordinator.combine import ScopedTable
from coordinator.config import Role
from coordinator.export import RoundInfo
from coordinator.rounds import new_request, sign_request
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.domain import QuerySpec
from fedoversight.errors import ConfigError, OversightError, from_rpc_error
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.v1 import operator_pb2, operator_pb2_grpc

#: Deadline of the operator's unary calls (every RPC has one).
CALL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Identity:
    """Who the coordinator takes the caller for (``WhoAmI``)."""

    name: str
    role: Role
    #: "certificate", "token" or "insecure".
    via: str


_ROLES = {
    operator_pb2.OPERATOR_ROLE_VIEWER: Role.VIEWER,
    operator_pb2.OPERATOR_ROLE_OPERATOR: Role.OPERATOR,
}


@dataclass(frozen=True)
class Progress:
    round_id: str
    state: RoundState
    asked: int
    answered: int
    carriers: tuple[tuple[str, CarrierRoundState], ...]


@dataclass(frozen=True)
class RoundOutcome:
    round_id: str
    state: RoundState
    period: Period
    #: Each carrier asked: its state and why it did not answer (a fixed public message).
    carriers: tuple[tuple[str, CarrierRoundState, str], ...]
    tables: tuple[ScopedTable, ...]
    #: Carriers whose answer arrived after the round finished (kept apart, not in the tables).
    late: tuple[str, ...] = ()
    #: For a round the coordinator's schedule ran: its suite, and when the run was due.
    suite: str | None = None
    scheduled_for: dt.datetime | None = None

    @property
    def answered(self) -> int:
        return sum(1 for _, state, _ in self.carriers if state is CarrierRoundState.ANSWERED)

    def info(self) -> RoundInfo:
        """What exports say of this round."""
        return RoundInfo(
            round_id=self.round_id,
            period=str(self.period),
            state=str(self.state),
            carriers_asked=len(self.carriers),
            carriers_answered=self.answered,
            carriers=tuple((c, str(s), m) for c, s, m in self.carriers),
        )


class OperatorClient:
    """The operator API over one channel.

    With ``ca_cert`` the channel is TLS, and ``cert``/``key`` are the operator's client
    identity (mutual TLS). ``token_file`` holds a bearer token sent with every call instead of
    (or besides) the certificate's name. With ``signer`` (the operator key) rounds are signed
    on this side and the coordinator dispatches exactly what was signed.
    """

    def __init__(
        self,
        address: str,
        *,
        ca_cert: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        token_file: Path | None = None,
        token: str | None = None,
        signer: Signer | None = None,
        server_name: str | None = None,
        request_ttl: dt.timedelta = dt.timedelta(hours=1),
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if (cert is None) != (key is None):
            raise ConfigError("give both the operator certificate and its key, or neither")
        if token_file is not None and token is not None:
            raise ConfigError("give a token file or a token, not both")
        self._metadata: tuple[tuple[str, str], ...] = ()
        if token_file is not None:
            try:
                token = token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read token file {token_file}: {exc.strerror}") from exc
            if not token:
                raise ConfigError(f"token file {token_file} is empty")
            self._metadata = (("authorization", f"Bearer {token}"),)
        elif token is not None:
            if not token.strip():
                raise ConfigError("the bearer token is empty")
            self._metadata = (("authorization", f"Bearer {token.strip()}"),)
        self._signer = signer
        self._ttl = request_ttl
        if ca_cert is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            try:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=ca_cert.read_bytes(),
                    private_key=key.read_bytes() if key else None,
                    certificate_chain=cert.read_bytes() if cert else None,
                )
            except OSError as exc:
                raise ConfigError(f"cannot read TLS file: {exc.strerror}") from exc
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self._stub = operator_pb2_grpc.OversightStub(self._channel)

    async def __aenter__(self) -> OperatorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def create_round(
        self,
        period: Period,
        queries: Sequence[QuerySpec],
        *,
        carriers: Sequence[str] = (),
        quorum: int = 0,
        deadline_seconds: int = 0,
        idempotency_key: str | None = None,
    ) -> str:
        request = operator_pb2.CreateRoundRequest(
            carriers=list(carriers),
            quorum=quorum,
            deadline_seconds=deadline_seconds,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        if self._signer is not None:
            # The request names its carriers: all registered ones unless some are given.
            named = list(carriers) or [c.carrier_id for c in await self.list_carriers()]
            deadline = dt.timedelta(seconds=deadline_seconds) if deadline_seconds else None
            spec = new_request(period, queries, self._ttl, carriers=named, deadline=deadline)
            request.signed_request.CopyFrom(sign_request(spec, self._signer))
            del request.carriers[:]
        else:
            request.period.CopyFrom(wire.period_to_pb(period))
            request.queries.extend(wire.query_to_pb(q) for q in queries)
        try:
            summary = await self._stub.CreateRound(
                request, timeout=CALL_TIMEOUT, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return str(summary.round_id)

    async def watch(self, round_id: str, timeout: float) -> AsyncIterator[Progress]:
        try:
            async for progress in self._stub.WatchRound(
                operator_pb2.RoundRef(round_id=round_id),
                timeout=timeout,
                metadata=self._metadata,
            ):
                yield Progress(
                    round_id=round_id,
                    state=convert.round_state_from_pb(progress.summary.state),
                    asked=progress.summary.carriers_asked,
                    answered=progress.summary.carriers_answered,
                    carriers=tuple(
                        (c.carrier_id, convert.carrier_state_from_pb(c.state))
                        for c in progress.carriers
                    ),
                )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc

    async def get_round(self, round_id: str) -> RoundOutcome:
        try:
            msg = await self._stub.GetRound(
                operator_pb2.RoundRef(round_id=round_id),
                timeout=CALL_TIMEOUT,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return RoundOutcome(
            round_id=round_id,
            state=convert.round_state_from_pb(msg.summary.state),
            period=wire.period_from_pb(msg.summary.period),
            carriers=tuple(
                (c.carrier_id, convert.carrier_state_from_pb(c.state), c.message)
                for c in msg.carriers
            ),
            tables=tuple(convert.table_from_pb(t) for t in msg.tables),
            late=tuple(c.carrier_id for c in msg.carriers if c.HasField("late_answer_at")),
            suite=msg.summary.suite or None,
            scheduled_for=scheduled_for(msg.summary),
        )

    async def run_round(
        self,
        period: Period,
        queries: Sequence[QuerySpec],
        *,
        carriers: Sequence[str] = (),
        quorum: int = 0,
        deadline_seconds: int = 300,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> RoundOutcome:
        """Create a round, follow it to its end, and return its tables."""
        round_id = await self.create_round(
            period, queries, carriers=carriers, quorum=quorum, deadline_seconds=deadline_seconds
        )
        async for progress in self.watch(round_id, timeout=deadline_seconds + 60):
            if on_progress is not None:
                on_progress(progress)
        return await self.get_round(round_id)

    async def get_receipts(self, round_id: str) -> operator_pb2.RoundReceipts:
        try:
            msg: operator_pb2.RoundReceipts = await self._stub.GetReceipts(
                operator_pb2.RoundRef(round_id=round_id),
                timeout=CALL_TIMEOUT,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return msg

    async def get_anchors(self, carrier_id: str, rounds: int = 0) -> operator_pb2.CarrierAnchors:
        """Every signed result kept from ``carrier_id`` (in the ``rounds`` most recent rounds;
        0: the coordinator's default), each carrying the node's audit anchor."""
        try:
            msg: operator_pb2.CarrierAnchors = await self._stub.GetAnchors(
                operator_pb2.AnchorsRequest(carrier_id=carrier_id, rounds=rounds),
                timeout=CALL_TIMEOUT,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return msg

    async def list_rounds(
        self, limit: int = 50, *, suite: str | None = None
    ) -> list[operator_pb2.RoundSummary]:
        """The most recent rounds, newest first (those the schedule ran for ``suite``, when
        given; :func:`scheduled_for` reads a summary's due time)."""
        try:
            msg = await self._stub.ListRounds(
                operator_pb2.ListRoundsRequest(limit=limit, suite=suite or ""),
                timeout=CALL_TIMEOUT,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return list(msg.rounds)

    async def list_revisions(
        self, suite: str, month: str | None = None
    ) -> list[operator_pb2.Revision]:
        """A scheduled suite's revisions, by month then revision (of ``month``, "YYYY-MM",
        only when given)."""
        try:
            msg = await self._stub.ListRevisions(
                operator_pb2.ListRevisionsRequest(suite=suite, month=month or ""),
                timeout=CALL_TIMEOUT,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return list(msg.revisions)

    async def list_carriers(self) -> list[operator_pb2.CarrierInfo]:
        try:
            msg = await self._stub.ListCarriers(
                operator_pb2.ListCarriersRequest(),
                timeout=CALL_TIMEOUT,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return list(msg.carriers)

    async def list_metrics(self) -> operator_pb2.ListMetricsResponse:
        try:
            msg: operator_pb2.ListMetricsResponse = await self._stub.ListMetrics(
                operator_pb2.ListMetricsRequest(), timeout=CALL_TIMEOUT, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return msg

    async def whoami(self) -> Identity:
        """The caller's name and role as the coordinator sees them (refused, as every call is,
        for an unknown credential)."""
        try:
            msg = await self._stub.WhoAmI(
                operator_pb2.WhoAmIRequest(), timeout=CALL_TIMEOUT, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        role = _ROLES.get(msg.role)
        if role is None:
            raise OversightError("the coordinator named no role")
        return Identity(name=msg.name, role=role, via=msg.via)


def scheduled_for(summary: operator_pb2.RoundSummary) -> dt.datetime | None:
    """When a scheduled round was due (None for a round an operator created)."""
    if not summary.HasField("scheduled_for"):
        return None
    return summary.scheduled_for.ToDatetime(tzinfo=dt.UTC)


__all__ = [
    "Identity",
    "OperatorClient",
    "OversightError",
    "Progress",
    "RoundOutcome",
    "scheduled_for",
]
