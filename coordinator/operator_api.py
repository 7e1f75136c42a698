"""The operator-facing service (run rounds, read results, list carriers and metrics)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc

from coordinator import convert
from coordinator.access import Caller, ForbiddenError, OperatorAccess
from coordinator.combine import ScopedTable
from coordinator.config import Role
from coordinator.hub import NodeHub
from coordinator.monitoring import CoordinatorMetrics
from coordinator.results import TABLES_KEPT
from coordinator.rounds import RoundManager, check_registered
from coordinator.schedule import SUITE_NAME, ScheduledRound, revisions
from coordinator.store import CarrierRound, CarrierRoundState, RoundStore, StoredResult
from fedoversight import catalogue, wire
from fedoversight.dimensions import Dimension
from fedoversight.errors import (
    AuthenticationError,
    InvalidRequestError,
    OversightError,
    grpc_status,
)
from fedoversight.periods import Month
from fedoversight.v1 import operator_pb2, operator_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Most rounds one ListRounds call returns.
MAX_LIST = 1000
#: Rounds GetAnchors looks through by default, and at most.
DEFAULT_ANCHOR_ROUNDS = 1000
MAX_ANCHOR_ROUNDS = 100_000

#: Least seconds between two progress messages of an open round, per carrier it lists (so
#: following a round costs work in proportion to its carriers, not to their square), and the
#: most that makes.
PROGRESS_SPACING = 0.0002
MAX_PROGRESS_SPACING = 0.5


def guarded(
    role: Role,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Run a unary servicer method for callers of at least ``role``, inside the one error
    translator; each call is counted by its method and status."""

    def decorate(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(method)
        async def wrapper(
            self: OversightService, request: Any, context: grpc.aio.ServicerContext
        ) -> T:
            status = grpc.StatusCode.CANCELLED
            try:
                caller = self.access.require(context, role)
                reply = await method(self, request, context, caller)
                status = grpc.StatusCode.OK
                return reply
            except (AuthenticationError, ForbiddenError) as exc:
                log.warning("operator call %s refused: %s", method.__name__, exc.detail)
                status = grpc_status(exc)
                await context.abort(status, exc.detail)
            except OversightError as exc:
                # Coordinator-side detail (validation of the operator's own input) is safe.
                status = grpc_status(exc)
                await context.abort(status, exc.detail)
            except Exception:
                log.exception("operator call %s failed", method.__name__)
                status = grpc.StatusCode.INTERNAL
                await context.abort(status, "internal error")
            finally:
                self.metrics.operator_call(method.__name__, status.name)
            raise AssertionError("unreachable")

        return wrapper

    return decorate


def _round_id(ref: operator_pb2.RoundRef) -> str:
    if not wire.ID_RE.fullmatch(ref.round_id):
        raise InvalidRequestError("round id is not of the expected form")
    return ref.round_id


class OversightService(operator_pb2_grpc.OversightServicer):
    def __init__(
        self,
        store: RoundStore,
        rounds: RoundManager,
        hub: NodeHub,
        access: OperatorAccess,
        *,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else CoordinatorMetrics()
        self._store = store
        self._rounds = rounds
        self._hub = hub
        self.access = access
        # GetRound's tables in protobuf form, by round, with the tables they were converted
        # from: the round manager hands out the same tables object until the round's results
        # change, so they are converted once per change.
        self._converted: OrderedDict[
            str, tuple[Sequence[ScopedTable], list[operator_pb2.ScopedTable]]
        ] = OrderedDict()

    def _tables_pb(
        self, round_id: str, tables: Sequence[ScopedTable]
    ) -> list[operator_pb2.ScopedTable]:
        entry = self._converted.get(round_id)
        if entry is None or entry[0] is not tables:
            entry = (tables, [convert.table_to_pb(t) for t in tables])
            self._converted[round_id] = entry
        self._converted.move_to_end(round_id)
        while len(self._converted) > TABLES_KEPT:
            self._converted.popitem(last=False)
        return entry[1]

    @guarded(Role.OPERATOR)
    async def CreateRound(
        self,
        request: operator_pb2.CreateRoundRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller,
    ) -> operator_pb2.RoundSummary:
        if request.HasField("signed_request"):
            if request.HasField("period") or request.queries:
                raise InvalidRequestError("a signed request carries its own period and queries")
            spec = self._rounds.check_signed_request(request.signed_request)
            signed = types_pb2.SignedRequest()
            signed.CopyFrom(request.signed_request)
            if request.carriers and sorted(set(request.carriers)) != list(spec.carriers):
                raise InvalidRequestError(
                    "the carriers asked are not those the signed request names"
                )
            carriers = list(spec.carriers)
            if not carriers:
                raise InvalidRequestError("a signed request names the carriers it asks")
            registered = [c for c, _ in await self._rounds.db(self._store.carriers)]
            check_registered(carriers, registered)
            record = await self._rounds.create_round(
                signed,
                carriers,
                quorum=request.quorum,
                deadline_seconds=request.deadline_seconds,
                idempotency_key=request.idempotency_key or None,
                request=spec,
            )
        else:
            if not request.HasField("period") or not request.queries:
                raise InvalidRequestError("a round needs a period and at least one query")
            if len(request.queries) > wire.MAX_QUERIES:
                raise InvalidRequestError("too many queries in one round")
            record = await self._rounds.launch(
                wire.period_from_pb(request.period),
                [wire.query_from_pb(q) for q in request.queries],
                list(request.carriers),
                quorum=request.quorum,
                deadline_seconds=request.deadline_seconds,
                idempotency_key=request.idempotency_key or None,
            )
        log.info(
            "round %s created by %s (%s, %s)",
            record.round_id,
            caller.name,
            caller.via,
            "signed by the operator"
            if request.HasField("signed_request")
            else "signed by the coordinator"
            if record.signature
            else "unsigned",
            extra={"round_id": record.round_id},
        )
        record, statuses = await self._rounds.snapshot(record.round_id)
        return convert.summary_to_pb(record, self._rounds.request_of(record), statuses)

    async def WatchRound(
        self, request: operator_pb2.RoundRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[operator_pb2.RoundProgress]:
        status = grpc.StatusCode.CANCELLED
        try:
            self.access.require(context, Role.VIEWER)
            round_id = _round_id(request)
            loop = asyncio.get_running_loop()
            # Each carrier's status as last sent, converted again only when it changed (an
            # open round's snapshot keeps the same object until the carrier's state changes).
            converted: dict[str, tuple[object, operator_pb2.CarrierStatus]] = {}

            def status(c: CarrierRound) -> operator_pb2.CarrierStatus:
                seen = converted.get(c.carrier_id)
                if seen is None or seen[0] is not c:
                    seen = converted[c.carrier_id] = (c, convert.carrier_status_to_pb(c))
                return seen[1]

            while True:
                # Read before the snapshot: a change made while it is taken or sent wakes the
                # wait below at once instead of being missed until the timeout.
                seen = self._rounds.changes
                taken = loop.time()
                record, statuses = await self._rounds.snapshot(round_id)
                yield operator_pb2.RoundProgress(
                    summary=convert.summary_to_pb(
                        record, self._rounds.request_of(record), statuses
                    ),
                    carriers=[status(c) for c in statuses],
                )
                if not record.state.is_open:
                    status = grpc.StatusCode.OK
                    return
                await self._rounds.wait_for_change(timeout=1.0, since=seen)
                # Each message lists every carrier, and a large round's answers come in a
                # burst: while the round is open, messages are spaced by PROGRESS_SPACING per
                # carrier (the close is sent at once).
                spacing = min(MAX_PROGRESS_SPACING, PROGRESS_SPACING * len(statuses))
                if loop.time() - taken < spacing:
                    await self._rounds.wait_until_closed(round_id, spacing - (loop.time() - taken))
        except (AuthenticationError, ForbiddenError) as exc:
            log.warning("operator call WatchRound refused: %s", exc.detail)
            status = grpc_status(exc)
            await context.abort(status, exc.detail)
        except OversightError as exc:
            status = grpc_status(exc)
            await context.abort(status, exc.detail)
        finally:
            self.metrics.operator_call("WatchRound", status.name)

    @guarded(Role.VIEWER)
    async def GetRound(
        self, request: operator_pb2.RoundRef, context: grpc.aio.ServicerContext, caller: Caller
    ) -> operator_pb2.Round:
        round_id = _round_id(request)
        record, statuses = await self._rounds.snapshot(round_id)
        tables = await self._rounds.tables(record)
        return operator_pb2.Round(
            summary=convert.summary_to_pb(record, self._rounds.request_of(record), statuses),
            carriers=[convert.carrier_status_to_pb(c) for c in statuses],
            tables=self._tables_pb(round_id, tables),  # copied into the reply
        )

    @guarded(Role.VIEWER)
    async def GetReceipts(
        self, request: operator_pb2.RoundRef, context: grpc.aio.ServicerContext, caller: Caller
    ) -> operator_pb2.RoundReceipts:
        round_id = _round_id(request)
        record, statuses = await self._rounds.snapshot(round_id)
        results = await self._rounds.db(self._store.results, round_id)
        return operator_pb2.RoundReceipts(
            round_id=round_id,
            request=types_pb2.SignedRequest(
                request=record.request_bytes, signature=record.signature, key_id=record.key_id
            ),
            receipts=[_receipt(r) for r in results],
            answered=[s.carrier_id for s in statuses if s.state is CarrierRoundState.ANSWERED],
        )

    @guarded(Role.VIEWER)
    async def GetAnchors(
        self,
        request: operator_pb2.AnchorsRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller,
    ) -> operator_pb2.CarrierAnchors:
        if not wire.ID_RE.fullmatch(request.carrier_id):
            raise InvalidRequestError("carrier id is not of the expected form")
        rounds = min(request.rounds or DEFAULT_ANCHOR_ROUNDS, MAX_ANCHOR_ROUNDS)
        results = await self._rounds.db(carrier_results, self._store, request.carrier_id, rounds)
        return operator_pb2.CarrierAnchors(
            carrier_id=request.carrier_id,
            receipts=[_receipt(r) for r in results],
        )

    @guarded(Role.VIEWER)
    async def ListRounds(
        self,
        request: operator_pb2.ListRoundsRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller,
    ) -> operator_pb2.ListRoundsResponse:
        limit = min(request.limit or 50, MAX_LIST)
        suite = _suite(request.suite) if request.suite else None
        records = await self._rounds.db(
            functools.partial(self._store.list_rounds, limit, suite=suite)
        )
        out = []
        for record in records:
            statuses = await self._rounds.db(self._store.carrier_rounds, record.round_id)
            out.append(convert.summary_to_pb(record, self._rounds.request_of(record), statuses))
        return operator_pb2.ListRoundsResponse(rounds=out)

    @guarded(Role.VIEWER)
    async def ListCarriers(
        self,
        request: operator_pb2.ListCarriersRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller,
    ) -> operator_pb2.ListCarriersResponse:
        carriers = []
        for carrier_id, name in await self._rounds.db(self._store.carriers):
            session = self._hub.sessions.get(carrier_id)
            info = operator_pb2.CarrierInfo(
                carrier_id=carrier_id, display_name=name, connected=session is not None
            )
            if session is not None:
                info.catalogue_version = session.catalogue_version
                info.node_version = session.node_version
                info.last_seen.FromDatetime(session.last_seen)
            carriers.append(info)
        return operator_pb2.ListCarriersResponse(carriers=carriers)

    @guarded(Role.VIEWER)
    async def ListMetrics(
        self,
        request: operator_pb2.ListMetricsRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller,
    ) -> operator_pb2.ListMetricsResponse:
        return metrics_response()

    @guarded(Role.VIEWER)
    async def ListRevisions(
        self,
        request: operator_pb2.ListRevisionsRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller,
    ) -> operator_pb2.ListRevisionsResponse:
        suite = _suite(request.suite)
        month = Month.parse(request.month) if request.month else None
        records = await self._rounds.db(self._store.suite_rounds, suite)
        finished = {r.round_id: r.finished_at for r in records}
        found = revisions(
            [
                ScheduledRound(
                    round_id=r.round_id,
                    scheduled_for=r.scheduled_for,
                    period=self._rounds.request_of(r).period,
                    state=r.state,
                )
                for r in records
                if r.scheduled_for is not None and not r.state.is_open
            ],
            month,
        )
        return operator_pb2.ListRevisionsResponse(
            suite=suite,
            revisions=[convert.revision_to_pb(v, finished[v.round_id]) for v in found],
        )

    @guarded(Role.VIEWER)
    async def WhoAmI(
        self,
        request: operator_pb2.WhoAmIRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller,
    ) -> operator_pb2.WhoAmIResponse:
        return operator_pb2.WhoAmIResponse(
            name=caller.name, role=_ROLES_PB[caller.role], via=caller.via
        )


def _suite(name: str) -> str:
    if not SUITE_NAME.fullmatch(name):
        raise InvalidRequestError("suite name is not of the expected form")
    return name


_ROLES_PB = {
    Role.VIEWER: operator_pb2.OPERATOR_ROLE_VIEWER,
    Role.OPERATOR: operator_pb2.OPERATOR_ROLE_OPERATOR,
}


def carrier_results(store: RoundStore, carrier_id: str, rounds: int) -> list[StoredResult]:
    """Every signed result the store keeps from one carrier in the ``rounds`` most recent
    rounds (late ones included), oldest round first (on the store's thread)."""
    out: list[StoredResult] = []
    for record in reversed(store.list_rounds(rounds)):
        for late in (False, True):
            out.extend(
                r for r in store.results(record.round_id, late=late) if r.carrier_id == carrier_id
            )
    return out


def metrics_response() -> operator_pb2.ListMetricsResponse:
    def dims(values: Iterable[Dimension]) -> list[types_pb2.Dimension.ValueType]:
        return [types_pb2.Dimension.ValueType(wire.dimension_to_pb(d)) for d in sorted(values)]

    return operator_pb2.ListMetricsResponse(
        catalogue_version=catalogue.CATALOGUE_VERSION,
        metrics=[
            operator_pb2.MetricInfo(
                name=m.name,
                version=m.version,
                title=m.title,
                definition=m.definition,
                dimensions=dims(m.dimensions),
                statistics=[
                    operator_pb2.MetricStatisticInfo(
                        name=s.name,
                        kind=str(s.kind),
                        description=s.description,
                        rests_on=s.rests_on or "",
                        part_of=s.part_of or "",
                        bound=s.bound or 0,
                    )
                    for s in m.statistics
                ],
                figures=[f.name for f in m.figures],
                figure_details=[
                    operator_pb2.MetricFigureInfo(
                        name=f.name, description=f.description, inputs=list(f.inputs)
                    )
                    for f in m.figures
                ],
                parameters=[
                    operator_pb2.MetricParameterInfo(
                        name=p.name,
                        description=p.description,
                        default=p.default,
                        minimum=p.minimum,
                        maximum=p.maximum,
                    )
                    for p in m.parameters
                ],
                group_by_one_of=dims(m.one_of),
            )
            for m in catalogue.metrics()
        ],
    )


def _receipt(result: StoredResult) -> operator_pb2.Receipt:
    """A stored result as the operator API gives it: the signed bytes, as received."""
    return operator_pb2.Receipt(
        carrier_id=result.carrier_id,
        result=types_pb2.SignedResult(
            result=result.result_bytes, signature=result.signature, key_id=result.key_id
        ),
        received_at=convert.ts(result.received_at),
    )
