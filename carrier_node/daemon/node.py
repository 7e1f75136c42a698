"""The carrier node daemon: dials out to the coordinator, answers requests, never listens.

:class:`NodeDaemon` puts the parts together and runs them: the stream to the coordinator
(:mod:`~carrier_node.daemon.connection`), answering each request
(:mod:`~carrier_node.daemon.answering`, admitted by :mod:`~carrier_node.daemon.gate`, signed by
:mod:`~carrier_node.daemon.results`), manual release (:mod:`~carrier_node.daemon.manual`), the
data source (:mod:`~carrier_node.daemon.sources`) and the I/O thread on which the node's
records — its state and its hash-chained audit log (:mod:`carrier_node.records`) — are
written. Every request received, the decision on it and everything released is in the audit
log before anything is sent.

The node stays up whatever happens to its records: when its state directory cannot be
written (read-only, full), every request is refused with a reason that says so, and the
records are tried again at the next request, so a fixed directory needs no restart. On
:meth:`NodeDaemon.shutdown` evaluations under way are stopped (the engine's statement
interrupted) and refused, the refusals kept for the next start with everything signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from types import TracebackType
from typing import Any

from carrier_node.config import (
    NodeConfig,
    audit_log_path,
    disclosure_secret_path,
    load_control_totals,
)
from carrier_node.daemon.answering import RECORDS_ERRORS, Answering, AnswerTiming
from carrier_node.daemon.connection import Connection, WireTap
from carrier_node.daemon.gate import Arrival, RequestGate
from carrier_node.daemon.io import IoThread
from carrier_node.daemon.manual import ManualRelease
from carrier_node.daemon.results import ResultMaker, refusal
from carrier_node.daemon.scheduler import Scheduler
from carrier_node.daemon.sources import DataAccess
from carrier_node.data.source import DataSource
from carrier_node.disclosure import Discloser, NodeSecret, PrivacyBudget
from carrier_node.policy import Policy
from carrier_node.query.metrics import implemented
from carrier_node.records.audit import AuditKind, AuditLog
from carrier_node.records.state import NodeState, ReviewStatus, node_state_path
from fedoversight import catalogue
from fedoversight.domain import RequestSpec
from fedoversight.errors import ConfigError, RecordsUnavailableError
from fedoversight.logs import log_fields
from fedoversight.signing import Signer, Verifier
from fedoversight.v1 import federation_pb2, types_pb2

log = logging.getLogger(__name__)

NODE_VERSION = "0.1.0"

#: Where the answers of a request answered by :meth:`NodeDaemon.answer_here` go (in that
#: task's context) instead of onto the stream.
_HERE: contextvars.ContextVar[list[federation_pb2.NodeMessage] | None] = contextvars.ContextVar(
    "answered_here", default=None
)


class NodeDaemon:
    #: The node's records and what uses them; set while the records are open.
    audit: AuditLog
    answering: Answering
    manual: ManualRelease
    data: DataAccess

    def __init__(
        self,
        config: NodeConfig,
        *,
        source: DataSource | None = None,
        policy: Policy | None = None,
        signer: Signer | None = None,
        wiretap: WireTap | None = None,
        review_poll_seconds: float = 2.0,
        evaluation_executor: Executor | None = None,
        on_answered: Callable[[AnswerTiming], None] | None = None,
    ) -> None:
        """``source``: a data source to use instead of the configured one; ``wiretap``: called
        with every message put on the wire; ``review_poll_seconds``: how often the daemon looks
        for the reviewer's decisions on held results (manual release mode);
        ``evaluation_executor``: threads shared with the other nodes of a simulated federation
        (a node has its own, one per slot, otherwise); ``on_answered``: called with each
        delivery's :class:`~carrier_node.daemon.answering.AnswerTiming`.

        Raises :class:`ConfigError` for what no restart fixes (configuration, keys); records
        that cannot be opened leave the node running and refusing (see :attr:`records_error`).
        """
        self.config = config
        self._policy = policy or (
            Policy.load(config.policy_file) if config.policy_file else Policy()
        )
        self._control_totals = load_control_totals(config)
        if signer is None and config.result_signing_key is not None:
            signer = Signer.load(config.result_signing_key)
        if signer is None and not config.insecure:
            raise ConfigError("result_signing_key is required unless insecure = true")
        if config.insecure:
            log.warning(
                "INSECURE DEMO MODE: %s; never use with real claims data",
                "plaintext connection, unsigned requests accepted"
                if config.tls is None
                else "unsigned requests accepted",
            )
        self._signer = signer
        self._verifier = (
            Verifier.load(config.operator_public_key) if config.operator_public_key else None
        )
        self._source = source
        self._review_poll_seconds = review_poll_seconds
        self._evaluation_executor = evaluation_executor
        self._on_answered = on_answered
        self.io = IoThread(f"node-{config.carrier_id}")
        self.connection = Connection(
            config,
            hello=self._hello,
            on_welcome=self._on_welcome,
            on_request=lambda signed: self._spawn(self._on_request(signed)),
            on_ack=self._on_ack,
            wiretap=wiretap,
        )
        self.results = ResultMaker(config, signer)
        self._stopping = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._state: NodeState | None = None
        self._budget: PrivacyBudget | None = None
        #: Why the node's records cannot be opened (None while they are open).
        self.records_error: RecordsUnavailableError | None = None
        self._open_records()

    # --- the node's records and what uses them ---------------------------------------------

    @property
    def records_open(self) -> bool:
        return self._state is not None

    def _open_records(self) -> bool:
        """Open the state, secrets, budget store and audit log, and build what uses them;
        whether they are open. A directory that cannot be written is kept as
        :attr:`records_error` (logged) and tried again at the next request."""
        if self._state is not None:
            return True
        config = self.config
        opened: list[NodeState | PrivacyBudget | AuditLog] = []
        try:
            state = NodeState(node_state_path(config.state_dir, config.carrier_id))
            opened.append(state)
            secret = NodeSecret.load_or_create(
                disclosure_secret_path(config.state_dir, config.carrier_id),
                self.policy.perturbation.key_version,
            )
            dp_policy = self.policy.differential_privacy
            budget = (
                PrivacyBudget(
                    config.state_dir / f"{config.carrier_id}.privacy.sqlite3",
                    dp_policy.budget_per_month,
                )
                if dp_policy.enabled
                else None
            )
            if budget is not None:
                opened.append(budget)
            audit = AuditLog(audit_log_path(config), fsync=config.audit_fsync)
        except RECORDS_ERRORS as exc:
            for record in opened:
                with contextlib.suppress(*RECORDS_ERRORS):
                    record.close()
            if self.records_error is None:
                log.error(
                    "the node's records in %s cannot be opened (%s: %s): every request is"
                    " refused until the directory is writable again",
                    config.state_dir,
                    type(exc).__name__,
                    getattr(exc, "strerror", None) or exc,
                )
            self.records_error = RecordsUnavailableError(type(exc).__name__)
            return False
        self._build(state, secret, budget, audit)
        if self.records_error is not None:
            log.info("the node's records are writable again")
        self.records_error = None
        return True

    def _build(
        self,
        state: NodeState,
        secret: NodeSecret,
        budget: PrivacyBudget | None,
        audit: AuditLog,
    ) -> None:
        config = self.config
        self.audit = audit
        self.data = DataAccess(
            config,
            record_secret=secret.record_secret,
            clamped=self.policy.differential_privacy.enabled,
            source=self._source,
            control_totals=self._control_totals,
        )
        self.manual = ManualRelease(
            state=state,
            audit=audit,
            io=self.io,
            results=self.results,
            snapshot=self.data.snapshot,
            send=self.connection.send,
            poll_seconds=self._review_poll_seconds,
        )
        self.answering = Answering(
            policy=self.policy,
            state=state,
            audit=audit,
            io=self.io,
            gate=RequestGate(
                state,
                self._verifier,
                carrier_id=config.carrier_id,
                allow_unsigned=config.insecure,
                max_age=dt.timedelta(seconds=config.max_request_age_seconds),
            ),
            data=self.data,
            discloser=Discloser(self.policy, secret, budget),
            results=self.results,
            manual=self.manual,
            send=self._send,
            scheduler=Scheduler(
                config.max_concurrent_requests,
                max_queued=config.max_queued_requests,
                light_cells=config.light_request_cells,
            ),
            max_seconds=config.max_evaluation_seconds,
            margin_seconds=config.deadline_margin_seconds,
            executor=self._evaluation_executor,
            on_answered=self._on_answered,
        )
        self._budget = budget
        self._state = state

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> NodeDaemon:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    @property
    def policy(self) -> Policy:
        """The carrier's policy (fixed for the daemon's life: a new one needs a restart)."""
        return self._policy

    @property
    def connected(self) -> asyncio.Event:
        return self.connection.connected

    async def open_source(self) -> None:
        """Open the data source (see :class:`~carrier_node.daemon.sources.DataAccess`)."""
        if self.records_open:
            await self.data.open()

    def admit(
        self, signed: types_pb2.SignedRequest | Arrival, now: dt.datetime | None = None
    ) -> RequestSpec:
        """Every check a request passes before anything runs (see
        :meth:`~carrier_node.daemon.answering.Answering.admit`)."""
        return self.answering.admit(signed, now)

    async def run(self) -> None:
        """Connect, answer, reconnect until :meth:`shutdown`."""
        # What the node logs meanwhile (and the tasks it starts) names its carrier.
        with log_fields(carrier_id=self.config.carrier_id):
            if self.records_open:
                await self._started()
            await self.connection.run(self._stopping)

    async def _started(self) -> None:
        """Open the source, log the start, resume manual release: once the records are open."""
        await self.open_source()
        try:
            await self.io.run(
                self.audit.append,
                AuditKind.STARTED,
                node_version=NODE_VERSION,
                catalogue_version=catalogue.CATALOGUE_VERSION,
                policy_digest=self.policy.digest,
                signing_key_id=self._signer.key_id if self._signer is not None else "",
                # A log found without its head, or not ending where it says, is not complete
                # for all the node knows: said here, in the chain, for `audit verify` to report.
                **(
                    {"audit_head": self.audit.head_at_open}
                    if self.audit.head_at_open is not None
                    else {}
                ),
            )
            assert self._state is not None
            unsettled = await self.io.run(
                self._state.held_releases,
                [s for s in ReviewStatus if s.unsettled],
            )
        except RECORDS_ERRORS as exc:
            log.error("the node's records cannot be written (%s)", type(exc).__name__)
            return
        if self.policy.release_mode == "manual" or unsettled:
            self._spawn(self.manual.run(self._stopping))

    async def shutdown(self) -> None:
        """Stop: refuse what waits, stop evaluations under way (their refusals are kept for
        the next start), end the stream, close the records. Within the configured grace
        period however busy the node is; safe to call more than once."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._shutdown)

    async def _stop(self) -> None:
        self._stopping.set()
        if self.records_open:
            self.answering.stop()
        if self._tasks:  # each stopped evaluation records its refusal
            await asyncio.wait(set(self._tasks), timeout=self.config.shutdown_grace_seconds)
        self.connection.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.records_open:
            self.answering.close()
        self.io.close()
        if self._state is not None:
            self._state.close()
        if self._budget is not None:
            self._budget.close()
        if self.records_open:
            self.audit.close()

    # --- answering outside the stream (another transport carries the messages) -------------

    async def start_here(self) -> None:
        """Start without the stream, to answer requests another transport delivers
        (:meth:`answer_here`): the data source opened, the start in the audit log."""
        if self.records_open:
            await self._started()

    async def answer_here(
        self, signed: types_pb2.SignedRequest
    ) -> federation_pb2.NodeMessage | None:
        """Answer one signed request delivered by another transport (Flower's ClientApp shim,
        :mod:`carrier_node.flower`) and return the answer rather than sending it: the same
        path as a request from the stream (:meth:`_on_request`: the gate's checks, the policy,
        the engine, disclosure control, signing, the audit log, the outbox). None when nothing
        is to be sent now (the result is held for the carrier's reviewer)."""
        answers: list[federation_pb2.NodeMessage] = []

        async def answer() -> None:
            _HERE.set(answers)  # this task's context only
            await self._on_request(signed)

        await asyncio.ensure_future(answer())
        return answers[-1] if answers else None

    async def forget(self, request_id: str) -> None:
        """The answer to ``request_id`` was stored by whoever asked: drop it from the outbox
        (what the native stream's acknowledgement does)."""
        await self._on_ack(request_id)

    def _send(self, message: federation_pb2.NodeMessage) -> None:
        """An answer: to :meth:`answer_here`'s caller when it asked, else onto the stream."""
        here = _HERE.get()
        if here is not None:
            here.append(message)
        else:
            self.connection.send(message)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the connection's callbacks -------------------------------------------------------

    async def _on_request(self, signed: types_pb2.SignedRequest) -> None:
        if not self.records_open:
            opened = await self.io.run(self._open_records)
            if opened:
                await self._started()
            else:
                arrival = Arrival.of(signed)
                self._send(refusal(arrival.request_id, arrival.round_id, RecordsUnavailableError()))
                return
        await self.answering.answer(signed)

    def _hello(self) -> federation_pb2.Hello:
        return federation_pb2.Hello(
            carrier_id=self.config.carrier_id,
            catalogue_version=catalogue.CATALOGUE_VERSION,
            node_version=NODE_VERSION,
            metrics=[m for m in self.policy.answered_metrics() if m in implemented()],
        )

    async def _on_ack(self, request_id: str) -> None:
        if self._state is not None:
            try:
                await self.io.run(self._state.ack, request_id)
            except RECORDS_ERRORS as exc:  # acknowledged again after the next reconnect
                log.warning("an acknowledgement could not be recorded (%s)", type(exc).__name__)

    async def _on_welcome(self) -> None:
        """Settle the reviewer's decisions, then send the whole outbox again."""
        if self._state is None:
            return
        try:
            await self.manual.settle_all()  # sent with the rest of the outbox
            pending = await self.io.run(self._state.pending)
        except RECORDS_ERRORS as exc:
            log.error("the outbox cannot be read (%s)", type(exc).__name__)
            return
        for _request_id, stored in pending:
            self.connection.send(federation_pb2.NodeMessage.FromString(stored))
