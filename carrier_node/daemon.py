"""The carrier node daemon: dials out to the coordinator, answers requests, never listens.

One long-lived bidirectional stream per node (mutual TLS; reconnected with jittered backoff).
Requests are admitted by :class:`~carrier_node.gate.RequestGate` (operator signature, validity
window, replay, strict decoding), checked against the policy, evaluated off the event loop
where the data lives, protected by :mod:`carrier_node.disclosure`, signed with the node's
result key, kept in the outbox until the coordinator acknowledges them, and resent after a
reconnect. Every request received, the decision on it and everything released is written to
the node's hash-chained audit log (:mod:`carrier_node.audit`) before anything is sent.

In manual release mode (the policy's ``release_mode = "manual"``) a signed result is not sent:
it is held in the node's state and the coordinator is told nothing (its round waits for this
carrier, or closes without it at its deadline). ``carrier-node approve`` records the reviewer's
decision; the daemon picks decisions up every few seconds and on each connection, logs them,
and sends the result, or a refusal saying the carrier's reviewer rejected it. A held result is
perturbed like any other: its noise is a function of its contents, so the reviewer sees
exactly what would go out, and a later release of the same contents goes out the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from carrier_node.audit import AuditKind, AuditLog, JsonValue, encode_bytes
from carrier_node.config import NodeConfig, audit_log_path, disclosure_secret_path
from carrier_node.disclosure import Discloser, NodeSecret, PrivacyBudget
from carrier_node.engine import DataSource, Engine
from carrier_node.gate import RequestGate
from carrier_node.metrics import BUILDERS
from carrier_node.policy import Policy
from carrier_node.state import (
    HeldRelease,
    NodeState,
    ReviewStatus,
    node_state_path,
    query_record,
)
from fedoversight import catalogue, wire
from fedoversight.domain import QuerySpec, QueryTable, RequestSpec, ResultSpec
from fedoversight.errors import (
    ConfigError,
    DataSourceError,
    InvalidRequestError,
    OversightError,
    error_code,
    public_message,
)
from fedoversight.signing import Signer, Verifier
from fedoversight.tls import check_identity_files, describe_handshake_failure
from fedoversight.v1 import federation_pb2, federation_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

NODE_VERSION = "0.1.0"

T = TypeVar("T")

#: Called with every message the node puts on the wire (tests record them; audits could too).
WireTap = Callable[[federation_pb2.NodeMessage], None]

#: What the coordinator is told when the carrier's reviewer rejects a held result.
REVIEWER_REJECTED = "rejected by the carrier's reviewer"


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class NodeDaemon:
    def __init__(
        self,
        config: NodeConfig,
        *,
        source: DataSource | None = None,
        policy: Policy | None = None,
        signer: Signer | None = None,
        wiretap: WireTap | None = None,
        review_poll_seconds: float = 2.0,
    ) -> None:
        """``review_poll_seconds``: how often the daemon looks for the reviewer's decisions on
        held results (manual release mode)."""
        self.config = config
        self.policy = policy or (
            Policy.load(config.policy_file) if config.policy_file else Policy()
        )
        self._source = source
        if signer is None and config.result_signing_key is not None:
            signer = Signer.load(config.result_signing_key)
        if signer is None and not config.insecure:
            raise ConfigError("result_signing_key is required unless insecure = true")
        self._signer = signer
        self._wiretap = wiretap
        if config.insecure:
            log.warning(
                "INSECURE DEMO MODE: %s; never use with real claims data",
                "plaintext connection, unsigned requests accepted"
                if config.tls is None else "unsigned requests accepted",
            )
        self._state = NodeState(node_state_path(config.state_dir, config.carrier_id))
        self._review_poll_seconds = review_poll_seconds
        self._secret = NodeSecret.load_or_create(
            disclosure_secret_path(config.state_dir, config.carrier_id),
            self.policy.perturbation.key_version,
        )
        dp_policy = self.policy.differential_privacy
        self._budget = (
            PrivacyBudget(config.state_dir / f"{config.carrier_id}.privacy.sqlite3",
                          dp_policy.budget_per_month)
            if dp_policy.enabled else None
        )
        self._discloser = Discloser(self.policy, self._secret, self._budget)
        self.audit = AuditLog(audit_log_path(config), fsync=config.audit_fsync)
        # Checks, the outbox and the audit log get a thread of their own, so they never wait
        # behind an evaluation (which runs on the default executor).
        self._io_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"node-{config.carrier_id}"
        )
        self._io_thread_closed = False
        verifier = (
            Verifier.load(config.operator_public_key) if config.operator_public_key else None
        )
        self._gate = RequestGate(
            self._state,
            verifier,
            carrier_id=config.carrier_id,
            allow_unsigned=config.insecure,
            max_age=dt.timedelta(seconds=config.max_request_age_seconds),
        )
        self._engine: Engine | None = None
        self._source_error: DataSourceError | None = None
        self._source_lock = asyncio.Lock()
        self._outgoing: asyncio.Queue[federation_pb2.NodeMessage | None] | None = None
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._semaphore = asyncio.Semaphore(config.max_concurrent_requests)
        self._tasks: set[asyncio.Task[None]] = set()
        self._call: grpc.aio.StreamStreamCall[
            federation_pb2.NodeMessage, federation_pb2.CoordinatorMessage
        ] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> NodeDaemon:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    async def open_source(self) -> None:
        """Open the data source (validating it) off the event loop.

        Unusable data does not stop the daemon: it stays connected and refuses requests with a
        data-source error (the located problems are in its own log and in ``check``), trying
        the source again for each new request, so that fixed files (or a warehouse back up)
        need no restart.
        """
        async with self._source_lock:
            if self._engine is not None:
                return
            try:
                await self._open_source()
            except DataSourceError as exc:
                log.error("data source unusable: %s", exc.detail)
                self._source_error = exc
            else:
                if self._source_error is not None:
                    log.info("data source usable again")
                self._source_error = None

    async def _open_source(self) -> None:
        if self._source is None and self.config.warehouse is not None:
            from carrier_node.warehouse import PostgresSource

            warehouse = PostgresSource(self.config.warehouse)
            await asyncio.to_thread(warehouse.open)
            self._source = warehouse
        if self._source is None:
            from carrier_node.datasource import FileSource

            assert self.config.data_dir is not None
            source = FileSource(
                self.config.data_dir,
                threads=self.config.engine_threads,
                memory_limit=self.config.engine_memory_limit,
                temp_directory=self.config.state_dir / "engine-spill",
            )
            await asyncio.to_thread(source.open)  # logs every located problem itself
            self._source = source
        self._engine = Engine(
            self._source, self.config.carrier_id,
            record_secret=self._secret.record_secret,
            clamped=self.policy.differential_privacy.enabled,
        )

    async def run(self) -> None:
        """Connect, answer, reconnect until :meth:`shutdown`."""
        await self.open_source()
        await self._io(
            self.audit.append,
            AuditKind.STARTED,
            node_version=NODE_VERSION,
            catalogue_version=catalogue.CATALOGUE_VERSION,
            policy_digest=self.policy.digest,
            signing_key_id=self._signer.key_id if self._signer is not None else "",
        )
        unsettled = await self._io(
            self._state.held_releases,
            [s for s in ReviewStatus if s.unsettled],
        )
        if self.policy.release_mode == "manual" or unsettled:
            self._spawn(self._review_loop())
        delay = self.config.reconnect_min_seconds
        while not self._stopping.is_set():
            welcomed = False
            try:
                welcomed = await self._session()
            except asyncio.CancelledError:
                if self._stopping.is_set():  # shutdown() cancelled the call: a clean exit
                    break
                raise
            except grpc.aio.AioRpcError as exc:
                self._log_stream_end(exc, welcomed)
            except OversightError as exc:
                log.error("cannot connect: %s", exc.detail)
            finally:
                self._connected.clear()
            if self._stopping.is_set():
                break
            delay = self.config.reconnect_min_seconds if welcomed else min(
                delay * 2, self.config.reconnect_max_seconds
            )
            wait = delay * random.uniform(0.5, 1.0)
            log.info("reconnecting in %.1fs", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)

    def _log_stream_end(self, exc: grpc.aio.AioRpcError, welcomed: bool) -> None:
        details = exc.details() or ""
        code = exc.code()
        if code is grpc.StatusCode.UNAVAILABLE and self.config.tls is not None:
            reason = describe_handshake_failure(details)
            if reason is None and "socket closed" in details.lower():
                reason = (
                    "the coordinator closed the connection while it was being set up: it"
                    " probably refused this node's certificate (unknown CA, expired or"
                    " revoked; the coordinator's log names the reason)"
                )
            if reason is not None:
                log.error("TLS with the coordinator failed: %s", reason)
                return
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            log.error("the stream ended: a message exceeded the size limit")
            return
        log.warning("stream to coordinator ended: %s", code.name)

    async def shutdown(self) -> None:
        self._stopping.set()
        if self._outgoing is not None:
            self._outgoing.put_nowait(None)
        if self._call is not None:
            self._call.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._io_thread_closed = True
        self._io_thread.shutdown(wait=True)
        self._state.close()
        if self._budget is not None:
            self._budget.close()
        self.audit.close()

    async def _io(self, call: Callable[..., T], *args: object, **kwargs: JsonValue) -> T:
        if self._io_thread_closed:
            raise OversightError("the node is shutting down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._io_thread, functools.partial(call, *args, **kwargs)
        )

    # --- the stream -----------------------------------------------------------------------

    def _channel(self) -> grpc.aio.Channel:
        options = channel_options(self.config.max_message_bytes)
        tls = self.config.tls
        if tls is None:
            if not self.config.insecure:
                raise OversightError("no TLS configured")
            return grpc.aio.insecure_channel(self.config.coordinator, options=options)
        # This side's identity first: an expired certificate or a key that does not match is
        # named here rather than left to a failed handshake.
        check_identity_files(Path(tls.cert), Path(tls.key), what="this node's")
        try:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(tls.ca_cert).read_bytes(),
                private_key=Path(tls.key).read_bytes(),
                certificate_chain=Path(tls.cert).read_bytes(),
            )
        except OSError as exc:
            raise ConfigError(f"cannot read TLS file: {exc.strerror}") from exc
        if tls.server_name:
            options = [*options, ("grpc.ssl_target_name_override", tls.server_name)]  # type: ignore[list-item]
        return grpc.aio.secure_channel(self.config.coordinator, credentials, options=options)

    async def _outgoing_iter(
        self, queue: asyncio.Queue[federation_pb2.NodeMessage | None]
    ) -> AsyncIterator[federation_pb2.NodeMessage]:
        while True:
            message = await queue.get()
            if message is None:
                return
            if self._wiretap is not None:
                self._wiretap(message)
            yield message

    def _send(self, message: federation_pb2.NodeMessage) -> None:
        if self._outgoing is not None:
            self._outgoing.put_nowait(message)

    async def _session(self) -> bool:
        queue: asyncio.Queue[federation_pb2.NodeMessage | None] = asyncio.Queue()
        self._outgoing = queue
        welcomed = False
        async with self._channel() as channel:
            stub = federation_pb2_grpc.NodeFederationStub(channel)
            call = stub.Connect(
                self._outgoing_iter(queue), timeout=self.config.stream_max_seconds
            )
            self._call = call
            queue.put_nowait(
                federation_pb2.NodeMessage(
                    hello=federation_pb2.Hello(
                        carrier_id=self.config.carrier_id,
                        catalogue_version=catalogue.CATALOGUE_VERSION,
                        node_version=NODE_VERSION,
                        metrics=[
                            m for m in self.policy.answered_metrics() if m in BUILDERS
                        ],
                    )
                )
            )
            heartbeat: asyncio.Task[None] | None = None
            try:
                async for message in call:
                    body = message.WhichOneof("body")
                    if body == "welcome":
                        welcomed = True
                        log.info("connected to coordinator %s", message.welcome.coordinator_id)
                        self._connected.set()
                        await self._settle_reviews()  # sent with the rest of the outbox
                        for _request_id, stored in await self._io(self._state.pending):
                            self._send(federation_pb2.NodeMessage.FromString(stored))
                        if heartbeat is None:
                            interval = message.welcome.heartbeat_seconds or (
                                self.config.heartbeat_seconds
                            )
                            heartbeat = asyncio.create_task(self._heartbeats(float(interval)))
                    elif body == "request":
                        self._spawn(self._answer(message.request))
                    elif body == "ack":
                        await self._io(self._state.ack, message.ack.request_id)
                    elif body == "refusal":
                        log.error("coordinator refused this node: %s",
                                  message.refusal.public_message)
                        await asyncio.sleep(self.config.reconnect_max_seconds)
                        return False
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                queue.put_nowait(None)
                self._outgoing = None
                self._call = None
        return welcomed

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            ts = Timestamp()
            ts.GetCurrentTime()
            self._send(federation_pb2.NodeMessage(heartbeat=federation_pb2.Heartbeat(sent_at=ts)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- answering ------------------------------------------------------------------------

    async def _answer(self, signed: types_pb2.SignedRequest) -> None:
        if self._source_error is not None:
            await self.open_source()  # unusable so far: perhaps fixed since
        request_id, round_id = _peek_ids(bytes(signed.request))
        request_sha256 = hashlib.sha256(bytes(signed.request)).hexdigest()
        # The look-ups, the checks and their audit entries in one trip to the I/O thread.
        outcome = await self._io(self._receive, signed, request_id, round_id, request_sha256)
        if outcome is None:  # its result awaits the carrier's reviewer
            return
        if isinstance(outcome, federation_pb2.NodeMessage):  # stored answer, or the refusal
            self._send(outcome)
            return
        answer = await self._evaluate_and_release(outcome, signed, request_sha256)
        if answer is not None:  # None: held for the reviewer, nothing is stored or sent
            self._send(answer)

    def _receive(
        self, signed: types_pb2.SignedRequest, request_id: str, round_id: str,
        request_sha256: str,
    ) -> RequestSpec | federation_pb2.NodeMessage | None:
        """On the I/O thread: the stored answer to a duplicate delivery (logged as resent);
        None while the request's result awaits the reviewer; the refusal of a request that
        fails a check (kept in the outbox); else the admitted request."""
        # A duplicate delivery of a request already answered (the very same bytes, not just
        # the same claimed id) gets the stored answer.
        stored = self._state.get_outbox(request_id, request_sha256) if request_id else None
        if stored is not None:
            self.audit.append(
                AuditKind.RESENT, request_id=request_id, round_id=round_id,
                message_sha256=hashlib.sha256(stored).hexdigest(),
            )
            return federation_pb2.NodeMessage.FromString(stored)
        if request_id and self._state.awaiting_review(request_id, request_sha256):
            # Delivered again (after a reconnect) while its result waits for the reviewer.
            log.info("request %s: its result awaits the carrier's reviewer", request_id)
            return None
        try:
            return self.admit(signed)
        except OversightError as exc:
            message = self._refusal(request_id, round_id, exc)
        if request_id:
            # The refusal of a request that never passed the checks must not displace an
            # answer kept under the same (claimed) id.
            self._state.put_outbox(
                request_id, message.SerializeToString(), request_sha256, replace=False
            )
        return message

    def admit(
        self, signed: types_pb2.SignedRequest, now: dt.datetime | None = None
    ) -> RequestSpec:
        """Every check before anything runs: signature, expiry, replay, strict decoding, the
        data source, the policy. Each request is in the audit log with the decision on it.

        Raises :class:`~fedoversight.errors.OversightError` (the refusal) and nothing else.
        """
        data = bytes(signed.request)
        request_id, round_id = _peek_ids(data)
        received: tuple[AuditKind, str, str, dict[str, JsonValue]] = (
            AuditKind.RECEIVED, request_id, round_id,
            {
                "request_sha256": hashlib.sha256(data).hexdigest(),
                "key_id": signed.key_id if _KEY_ID_RE.fullmatch(signed.key_id) else "?",
                "signed": bool(signed.signature),
                "bytes": len(data),
            },
        )
        stage = "gate"
        try:
            request = self._gate.admit(signed, now=now)
            stage = "data source"
            if self._source_error is not None:
                raise self._source_error
            stage = "policy"
            for query in request.queries:
                self.policy.check(query)
        except OversightError as exc:
            self._audit_refusal(received, stage, exc)
            log.warning("request %s refused at the %s: %s", request_id or "?", stage,
                        type(exc).__name__)
            raise
        except Exception as exc:  # nothing above should raise anything else; refuse anyway
            self._audit_refusal(received, stage, exc)
            log.error("request %s: unexpected %s at the %s", request_id or "?",
                      type(exc).__name__, stage)
            raise InvalidRequestError("request could not be checked") from None
        self.audit.append_many([
            received,
            (AuditKind.ADMITTED, request.request_id, request.round_id, {
                "period": f"{request.period.first}:{request.period.last}",
                "queries": [_describe(q) for q in request.queries],
                "expires_at": request.expires_at.isoformat(),
            }),
        ])
        return request

    def _audit_refusal(
        self,
        received: tuple[AuditKind, str, str, dict[str, JsonValue]],
        stage: str,
        exc: BaseException,
    ) -> None:
        _, request_id, round_id, _ = received
        reason = exc.detail if isinstance(exc, OversightError) else type(exc).__name__
        self.audit.append_many([
            received,
            (AuditKind.REFUSED, request_id, round_id, {
                "stage": stage,
                "code": types_pb2.ErrorCode.Name(error_code(exc)),  # type: ignore[arg-type]
                "reason": reason,
            }),
        ])

    async def _evaluate_and_release(
        self, request: RequestSpec, signed: types_pb2.SignedRequest, request_sha256: str
    ) -> federation_pb2.NodeMessage | None:
        """The signed result, or a refusal, each logged and kept in the outbox before it is
        returned to be sent; None when the result is held for the reviewer."""
        try:
            async with self._semaphore:
                tables = await asyncio.to_thread(self._evaluate, request)
            if self.policy.release_mode == "manual":
                await self._io(self._hold, request, signed, tables)
                return None
            return await self._io(self._release_and_keep, request, signed, tables, request_sha256)
        except _OutboxError:
            raise  # released and logged, but not kept: not sent (as if the node had stopped)
        except Exception as exc:
            if isinstance(exc, OversightError):
                log.warning("request %s refused in evaluation: %s (%s)", request.request_id,
                            type(exc).__name__, exc.detail)
            else:
                log.exception("request %s failed", request.request_id)
            return await self._io(self._refuse_evaluation, request, exc, request_sha256)

    def _refuse_evaluation(
        self, request: RequestSpec, exc: BaseException, request_sha256: str
    ) -> federation_pb2.NodeMessage:
        """Log a refusal in evaluation and keep it in the outbox (on the I/O thread)."""
        self.audit.append(
            AuditKind.REFUSED, request_id=request.request_id,
            round_id=request.round_id, stage="evaluation",
            code=types_pb2.ErrorCode.Name(error_code(exc)),  # type: ignore[arg-type]
            reason=exc.detail if isinstance(exc, OversightError) else type(exc).__name__,
        )
        message = self._refusal(request.request_id, request.round_id, exc)
        # A verified request's answer replaces whatever was kept under its id.
        self._state.put_outbox(request.request_id, message.SerializeToString(), request_sha256)
        return message

    def _evaluate(self, request: RequestSpec) -> list[QueryTable]:
        assert self._engine is not None
        self._discloser.check(request)
        raws = self._engine.evaluate_many(request.period, request.queries)
        tables, decisions = self._discloser.protect(request, raws)
        for decision in decisions:
            counts = decision.counts()
            if counts:
                log.info("request %s %s: withheld statistics %s", request.request_id,
                         decision.metric, counts)
        return tables

    def _data_snapshot(self) -> str:
        """The data source's description (stats its files: taken once per result)."""
        assert self._source is not None
        return self._source.snapshot()

    def _result_message(
        self, request: RequestSpec, signed: types_pb2.SignedRequest, tables: list[QueryTable],
        data_snapshot: str,
    ) -> federation_pb2.NodeMessage:
        result = ResultSpec(
            request_id=request.request_id,
            round_id=request.round_id,
            carrier_id=self.config.carrier_id,
            catalogue_version=catalogue.CATALOGUE_VERSION,
            tables=tuple(tables),
            request_digest=wire.digest(bytes(signed.request)),
            data_snapshot=data_snapshot,
        )
        data = wire.result_to_pb(result).SerializeToString()
        if len(data) > self.config.max_message_bytes - 1024:
            raise OversightError("result larger than the message limit")
        signature, key_id = b"", ""
        if self._signer is not None:
            signature, key_id = self._signer.sign(data), self._signer.key_id
        return federation_pb2.NodeMessage(
            result=types_pb2.SignedResult(result=data, signature=signature, key_id=key_id)
        )

    def _release(
        self, request: RequestSpec, signed: types_pb2.SignedRequest, tables: list[QueryTable]
    ) -> federation_pb2.NodeMessage:
        """Sign the result and record what is released before it is sent."""
        data_snapshot = self._data_snapshot()
        message = self._result_message(request, signed, tables, data_snapshot)
        self.audit.append(
            AuditKind.RELEASED,
            request_id=request.request_id,
            round_id=request.round_id,
            **_released_entry(
                message.result,
                request_sha256=hashlib.sha256(bytes(signed.request)).hexdigest(),
                data_snapshot=data_snapshot,
                tables=tables,
                period=str(request.period),
                queries=[query_record(q) for q in request.queries],
            ),
        )
        return message

    def _release_and_keep(
        self, request: RequestSpec, signed: types_pb2.SignedRequest, tables: list[QueryTable],
        request_sha256: str,
    ) -> federation_pb2.NodeMessage:
        """:meth:`_release`, then keep the result in the outbox until it is acknowledged (on
        the I/O thread; both durable before the result is sent)."""
        message = self._release(request, signed, tables)
        try:
            self._state.put_outbox(request.request_id, message.SerializeToString(), request_sha256)
        except Exception as exc:
            log.error("request %s: the result could not be kept in the outbox: %s",
                      request.request_id, type(exc).__name__)
            raise _OutboxError from exc
        return message

    # --- manual release -------------------------------------------------------------------

    def _hold(
        self, request: RequestSpec, signed: types_pb2.SignedRequest, tables: list[QueryTable]
    ) -> None:
        """Sign the result and keep it back for the reviewer (logged as held, not sent)."""
        message = self._result_message(request, signed, tables, self._data_snapshot())
        result = message.result
        request_sha256 = hashlib.sha256(bytes(signed.request)).hexdigest()
        queries = [query_record(q) for q in request.queries]
        self.audit.append(
            AuditKind.HELD,
            request_id=request.request_id,
            round_id=request.round_id,
            result_sha256=hashlib.sha256(result.result).hexdigest(),
            request_sha256=request_sha256,
            key_id=result.key_id,
            tables=[_table_summary(t) for t in tables],
            period=str(request.period),
            queries=list[JsonValue](queries),
        )
        self._state.hold(
            HeldRelease(
                request_id=request.request_id,
                round_id=request.round_id,
                request_sha256=request_sha256,
                message=message.SerializeToString(),
                period=str(request.period),
                queries=tuple(queries),
                expires_at=request.expires_at.isoformat(),
                created_at=dt.datetime.now(dt.UTC).isoformat(),
            )
        )
        log.info("request %s: result held for the carrier's reviewer (carrier-node approve)",
                 request.request_id)

    async def _review_loop(self) -> None:
        """Carry out the reviewer's decisions while the daemon runs."""
        while not self._stopping.is_set():
            try:
                for message in await self._settle_reviews():
                    self._send(message)
            except OversightError:  # shutting down
                return
            except Exception:
                log.exception("carrying out the reviewer's decisions failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._review_poll_seconds)

    async def _settle_reviews(self) -> list[federation_pb2.NodeMessage]:
        """Log every decided held result and put its answer in the outbox; return the
        answers (to send now when connected; the outbox has them for the next connection)."""
        answers = []
        for held in await self._io(self._state.decided):
            answer = await self._io(self._settle, held.request_id)
            if answer is not None:
                answers.append(answer)
        return answers

    def _settle(self, request_id: str) -> federation_pb2.NodeMessage | None:
        # Read again on the I/O thread, which runs every settlement: each is logged once.
        held = self._state.held_release(request_id)
        if held is None or held.status not in (ReviewStatus.APPROVED, ReviewStatus.REJECTED):
            return None
        queries: list[JsonValue] = list(held.queries)
        if held.status is ReviewStatus.APPROVED:
            message = federation_pb2.NodeMessage.FromString(held.message)
            spec = wire.decode_result_bytes(bytes(message.result.result))
            self.audit.append(
                AuditKind.RELEASED,
                request_id=held.request_id,
                round_id=held.round_id,
                **_released_entry(
                    message.result,
                    request_sha256=held.request_sha256,
                    data_snapshot=spec.data_snapshot,
                    tables=spec.tables,
                    period=held.period,
                    queries=queries,
                ),
                approved_by=held.reviewer,
                approved_at=held.decided_at,
                held_at=held.created_at,
            )
            log.info("request %s: released on the reviewer's approval", held.request_id)
        else:
            message = federation_pb2.NodeMessage(
                refusal=types_pb2.Refusal(
                    request_id=held.request_id,
                    round_id=held.round_id,
                    code=types_pb2.ERROR_CODE_POLICY_REFUSED,
                    public_message=REVIEWER_REJECTED,
                )
            )
            held_message = federation_pb2.NodeMessage.FromString(held.message)
            self.audit.append(
                AuditKind.REJECTED,
                request_id=held.request_id,
                round_id=held.round_id,
                result_sha256=hashlib.sha256(held_message.result.result).hexdigest(),
                rejected_by=held.reviewer,
                rejected_at=held.decided_at,
                held_at=held.created_at,
                reason=held.reason,
                code=types_pb2.ErrorCode.Name(types_pb2.ERROR_CODE_POLICY_REFUSED),
                public_message=REVIEWER_REJECTED,
            )
            log.info("request %s: rejected by the reviewer; refusal sent", held.request_id)
        self._state.settle(held.request_id, message.SerializeToString())
        return message

    @staticmethod
    def _refusal(request_id: str, round_id: str, exc: BaseException) -> federation_pb2.NodeMessage:
        return federation_pb2.NodeMessage(
            refusal=types_pb2.Refusal(
                request_id=request_id,
                round_id=round_id,
                code=error_code(exc),  # type: ignore[arg-type]
                public_message=public_message(exc),
            )
        )


_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")


class _OutboxError(Exception):
    """A released result could not be kept in the outbox (so it is not sent)."""


def _peek_ids(data: bytes) -> tuple[str, str]:
    """The request and round ids a request claims, before anything is verified ("" when
    absent or not of the expected form; nothing else is read)."""
    peek = types_pb2.MetricRequest()
    try:
        peek.ParseFromString(data)
    except Exception:  # any garbage: no ids
        return "", ""
    request_id = peek.request_id if wire.ID_RE.fullmatch(peek.request_id) else ""
    round_id = peek.round_id if wire.ID_RE.fullmatch(peek.round_id) else ""
    return request_id, round_id


def _describe(query: QuerySpec) -> str:
    text = f"{query.metric}@{query.version}"
    if query.group_by:
        text += " by " + ",".join(str(d) for d in query.group_by)
    if query.filters:
        text += " where " + ";".join(f"{d}:{len(v)} values" for d, v in query.filters)
    return text


def _released_entry(
    result: types_pb2.SignedResult,
    *,
    request_sha256: str,
    data_snapshot: str,
    tables: Sequence[QueryTable],
    period: str,
    queries: list[JsonValue],
) -> dict[str, JsonValue]:
    """The fields of a ``released`` audit entry (auto or approved)."""
    return {
        "result_sha256": hashlib.sha256(result.result).hexdigest(),
        "request_sha256": request_sha256,
        "signature": bytes(result.signature).hex(),
        "key_id": result.key_id,
        "data_snapshot": data_snapshot,
        "tables": [_table_summary(t) for t in tables],
        "period": period,
        "queries": queries,
        "result": encode_bytes(bytes(result.result)),
    }


def _table_summary(table: QueryTable) -> dict[str, JsonValue]:
    d = table.disclosure
    return {
        "metric": table.metric,
        "version": table.version,
        "cells": len(table.cells),
        "released": d.cells_released,
        "withheld": d.cells_withheld,
        "partly_withheld": d.cells_partly_withheld,
        "perturbed": d.cells_perturbed,
        "method": str(d.method),
        "withheld_statistics": {str(reason): n for reason, n in d.withheld},
        "policy_digest": d.policy_digest,
    }
