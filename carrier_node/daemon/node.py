"""The carrier node daemon: dials out to the coordinator, answers requests, never listens.

:class:`NodeDaemon` puts the parts together and runs them: the stream to the coordinator
(:mod:`~carrier_node.daemon.connection`), answering each request
(:mod:`~carrier_node.daemon.answering`, admitted by :mod:`~carrier_node.daemon.gate`, signed by
:mod:`~carrier_node.daemon.results`), manual release (:mod:`~carrier_node.daemon.manual`), the
data source (:mod:`~carrier_node.daemon.sources`) and the I/O thread on which the node's
records — its state and its hash-chained audit log (:mod:`carrier_node.records`) — are
written. Every request received, the decision on it and everything released is in the audit
log before anything is sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from carrier_node.config import NodeConfig, audit_log_path, disclosure_secret_path
from carrier_node.daemon.answering import Answering, AnswerTiming
from carrier_node.daemon.connection import Connection, WireTap
from carrier_node.daemon.gate import Arrival, RequestGate
from carrier_node.daemon.io import IoThread
from carrier_node.daemon.manual import ManualRelease
from carrier_node.daemon.results import ResultMaker
from carrier_node.daemon.sources import DataAccess
from carrier_node.data.source import DataSource
from carrier_node.disclosure import Discloser, NodeSecret, PrivacyBudget
from carrier_node.policy import Policy
from carrier_node.query.metrics import implemented
from carrier_node.records.audit import AuditKind, AuditLog
from carrier_node.records.state import NodeState, ReviewStatus, node_state_path
from fedoversight import catalogue
from fedoversight.domain import RequestSpec
from fedoversight.errors import ConfigError
from fedoversight.signing import Signer, Verifier
from fedoversight.v1 import federation_pb2, types_pb2

log = logging.getLogger(__name__)

NODE_VERSION = "0.1.0"


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
        on_answered: Callable[[AnswerTiming], None] | None = None,
    ) -> None:
        """``source``: a data source to use instead of the configured one; ``wiretap``: called
        with every message put on the wire; ``review_poll_seconds``: how often the daemon looks
        for the reviewer's decisions on held results (manual release mode); ``on_answered``:
        called with each delivery's :class:`~carrier_node.daemon.answering.AnswerTiming`."""
        self.config = config
        self._policy = policy or (
            Policy.load(config.policy_file) if config.policy_file else Policy()
        )
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
        self._state = NodeState(node_state_path(config.state_dir, config.carrier_id))
        secret = NodeSecret.load_or_create(
            disclosure_secret_path(config.state_dir, config.carrier_id),
            self.policy.perturbation.key_version,
        )
        dp_policy = self.policy.differential_privacy
        self._budget = (
            PrivacyBudget(
                config.state_dir / f"{config.carrier_id}.privacy.sqlite3",
                dp_policy.budget_per_month,
            )
            if dp_policy.enabled
            else None
        )
        self.audit = AuditLog(audit_log_path(config), fsync=config.audit_fsync)
        self.io = IoThread(f"node-{config.carrier_id}")
        self.data = DataAccess(
            config, record_secret=secret.record_secret, clamped=dp_policy.enabled, source=source
        )
        self.connection = Connection(
            config,
            hello=self._hello,
            on_welcome=self._on_welcome,
            on_request=lambda signed: self._spawn(self.answering.answer(signed)),
            on_ack=self._on_ack,
            wiretap=wiretap,
        )
        self.results = ResultMaker(config, signer)
        self.manual = ManualRelease(
            state=self._state,
            audit=self.audit,
            io=self.io,
            results=self.results,
            snapshot=self.data.snapshot,
            send=self.connection.send,
            poll_seconds=review_poll_seconds,
        )
        verifier = Verifier.load(config.operator_public_key) if config.operator_public_key else None
        self.answering = Answering(
            policy=self.policy,
            state=self._state,
            audit=self.audit,
            io=self.io,
            gate=RequestGate(
                self._state,
                verifier,
                carrier_id=config.carrier_id,
                allow_unsigned=config.insecure,
                max_age=dt.timedelta(seconds=config.max_request_age_seconds),
            ),
            data=self.data,
            discloser=Discloser(self.policy, secret, self._budget),
            results=self.results,
            manual=self.manual,
            send=self.connection.send,
            max_concurrent=config.max_concurrent_requests,
            on_answered=on_answered,
        )
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

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
        await self.data.open()

    def admit(
        self, signed: types_pb2.SignedRequest | Arrival, now: dt.datetime | None = None
    ) -> RequestSpec:
        """Every check a request passes before anything runs (see
        :meth:`~carrier_node.daemon.answering.Answering.admit`)."""
        return self.answering.admit(signed, now)

    async def run(self) -> None:
        """Connect, answer, reconnect until :meth:`shutdown`."""
        await self.open_source()
        await self.io.run(
            self.audit.append,
            AuditKind.STARTED,
            node_version=NODE_VERSION,
            catalogue_version=catalogue.CATALOGUE_VERSION,
            policy_digest=self.policy.digest,
            signing_key_id=self._signer.key_id if self._signer is not None else "",
        )
        unsettled = await self.io.run(
            self._state.held_releases,
            [s for s in ReviewStatus if s.unsettled],
        )
        if self.policy.release_mode == "manual" or unsettled:
            self._spawn(self.manual.run(self._stopping))
        await self.connection.run(self._stopping)

    async def shutdown(self) -> None:
        self._stopping.set()
        self.connection.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.io.close()
        self._state.close()
        if self._budget is not None:
            self._budget.close()
        self.audit.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the connection's callbacks -------------------------------------------------------

    def _hello(self) -> federation_pb2.Hello:
        return federation_pb2.Hello(
            carrier_id=self.config.carrier_id,
            catalogue_version=catalogue.CATALOGUE_VERSION,
            node_version=NODE_VERSION,
            metrics=[m for m in self.policy.answered_metrics() if m in implemented()],
        )

    async def _on_ack(self, request_id: str) -> None:
        await self.io.run(self._state.ack, request_id)

    async def _on_welcome(self) -> None:
        """Settle the reviewer's decisions, then send the whole outbox again."""
        await self.manual.settle_all()  # sent with the rest of the outbox
        for _request_id, stored in await self.io.run(self._state.pending):
            self.connection.send(federation_pb2.NodeMessage.FromString(stored))
