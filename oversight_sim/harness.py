"""A coordinator and N carrier node daemons on loopback, over real gRPC (mutual TLS and
signatures on, unless asked for an insecure demo): in one process, or with the nodes in a few
worker processes of their own.

A large federation (a thousand carriers on two cores) runs light nodes: many carriers share a
few synthetic datasets (:func:`oversight_sim.canned.spread`) and answer from canned engines
(``canned=True``, :mod:`oversight_sim.canned`); every other part of each node is the real
daemon's. With ``node_processes`` the nodes run in that many processes beside the
coordinator's, so the coordinator's own cost can be measured apart from theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

from carrier_node.config import NodeConfig, TlsFiles
from carrier_node.daemon import AnswerTiming, NodeDaemon, WireTap
from carrier_node.policy import Policy
from coordinator.client import OperatorClient
from coordinator.config import (
    CarrierEntry,
    CoordinatorConfig,
    OperatorEntry,
    PostgresStore,
    Role,
    ServerTls,
)
from coordinator.provision import CarrierPlan, OperatorPlan, Provisioned, ProvisionPlan, provision
from coordinator.schedule import Clock
from coordinator.server import Coordinator
from fedoversight.signing import Signer
from fedoversight.v1 import types_pb2
from oversight_sim.canned import CannedAnswers, CannedEngine, canned_answers

log = logging.getLogger(__name__)

#: ``(carrier_id, signed request, deliver)``: see :attr:`SimulatedFederation.request_hook`.
RequestHook = Callable[
    [str, types_pb2.SignedRequest, Callable[[types_pb2.SignedRequest], None]], None
]


HARNESS_OPERATOR = "harness-operator"
HARNESS_VIEWER = "harness-viewer"
#: An operator known by a bearer token (its kit has a certificate too).
HARNESS_TOKEN_OPERATOR = "harness-token-operator"


@dataclass
class SimulatedFederation:
    """``async with SimulatedFederation(dirs, work) as fed:`` then ``fed.client`` runs rounds.

    ``carrier_dirs`` maps carrier id to its data directory; ``work_dir`` holds the round store,
    every node's state and audit log, and (unless ``insecure``) the federation's PKI: a CA,
    the coordinator's certificate (for 127.0.0.1 and localhost), an operator and a viewer
    identity, and every carrier's start-up kit, made by :func:`coordinator.provision.provision`.
    So by default everything runs as in production: mutual TLS on the node streams and the
    operator API, requests signed by the operator key, results signed by each node's key.
    ``insecure=True`` is plaintext and unsigned (local demos only).

    Large federations (hundreds or thousands of carriers on a few cores):

    - ``carrier_dirs`` may map many carriers to the same directory
      (:func:`oversight_sim.canned.spread`);
    - ``canned=True``: each distinct directory is opened and validated once, its real engine
      evaluates each distinct request once, and every node on it answers from that
      (:class:`~oversight_sim.canned.CannedEngine`): gate, policy, disclosure control,
      signing, the audit log and the outbox are each node's own, as in production;
    - ``node_processes=K``: the nodes run in K worker processes (started with ``spawn``), each
      hosting its share of them on one event loop; the coordinator, the operator client and
      nothing else run in this process. ``nodes`` is then empty, node-level hooks (``wiretap``,
      ``on_answered``) and :meth:`stop_node` / :meth:`start_node` are unavailable.

    ``on_answered`` is called with each in-process node's :class:`AnswerTiming` (where an
    answer's time went, stage by stage). ``connect_timeout`` bounds the wait for every node to
    be connected at start.
    """

    carrier_dirs: Mapping[str, Path]
    work_dir: Path
    policy: Policy | None = None
    #: A carrier's own policy where it differs from ``policy`` (carriers are sovereign).
    policies: Mapping[str, Policy] = field(default_factory=dict)
    #: A carrier's own node settings, over ``node_settings`` (its control totals file, ...).
    carrier_settings: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    wiretap: WireTap | None = None
    engine_threads: int = 1
    heartbeat_seconds: int = 10
    disconnect_grace_seconds: float = 2.0
    insecure: bool = False
    max_message_bytes: int = 16 * 1024 * 1024
    #: Revoked certificate serials, one per line (re-read by the coordinator when it changes).
    revocation_file: Path | None = None
    #: Also serve the operator API on a port of its own, client certificates optional there.
    operator_port: bool = False
    #: Node settings (``NodeConfig`` fields) every node gets, over the harness's own.
    node_settings: Mapping[str, object] = field(default_factory=dict)
    #: Serve the coordinator's Prometheus metrics here (``127.0.0.1:0``: a free port, then
    #: ``coordinator.metrics_port``).
    metrics_address: str | None = None
    #: Keep the round store in PostgreSQL rather than in ``work_dir/rounds.sqlite3``.
    round_store: PostgresStore | None = None
    #: The coordinator's schedule file (its suites run by themselves), and the clock their
    #: due times are read from (the host's when None; a ``ManualClock`` to rehearse months).
    schedule: Path | None = None
    clock: Clock | None = None
    #: Nodes answer from canned engines, one real engine per distinct data directory.
    canned: bool = False
    #: Worker processes hosting the nodes (0: the nodes run in this process).
    node_processes: int = 0
    on_answered: Callable[[AnswerTiming], None] | None = None
    #: Called instead of an in-process node's own handler with each request it receives:
    #: ``request_hook(carrier_id, signed, deliver)``, where ``deliver(signed)`` hands the
    #: request to the node (a hook may delay it, or not call it at all: faults mid-round).
    request_hook: RequestHook | None = None
    connect_timeout: float = 60.0
    #: Coordinator settings (``CoordinatorConfig`` fields: purposes, offices, ...) over the
    #: harness's own.
    coordinator_settings: Mapping[str, object] = field(default_factory=dict)
    #: More operators to provision (each gets a kit), beside the harness's three.
    extra_operators: tuple[OperatorPlan, ...] = ()
    #: The office of each operator, by name (with offices in ``coordinator_settings``).
    operator_offices: Mapping[str, str] = field(default_factory=dict)
    coordinator: Coordinator | None = None
    nodes: dict[str, NodeDaemon] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: Nodes killed by :meth:`kill_node`, their records still open.
    _killed: dict[str, list[NodeDaemon]] = field(default_factory=dict)
    #: Evaluation threads shared by every node: in one process, a pool per node would run
    #: every node's evaluations at once and starve the event loop they all share.
    _evaluations: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="evaluation"
        )
    )
    client: OperatorClient | None = None
    pki: Provisioned | None = None
    #: The canned engines' datasets (with ``canned``, nodes in this process only).
    answers: dict[Path, CannedAnswers] = field(default_factory=dict)
    _workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = field(
        default_factory=list
    )

    @property
    def address(self) -> str:
        assert self.coordinator is not None
        return f"127.0.0.1:{self.coordinator.port}"

    @property
    def operator_signer(self) -> Signer | None:
        """The operator key (None in insecure mode): what a genuine request is signed with."""
        return None if self.pki is None else Signer.load(self.pki.operator_signing_key)

    def provision(self) -> Provisioned:
        """The federation's PKI under ``work_dir/pki`` (made once, then reused)."""
        if self.pki is None:
            self.pki = provision(
                ProvisionPlan(
                    coordinator_id="sim-coordinator",
                    coordinator_address="127.0.0.1:0",
                    coordinator_names=("localhost",),
                    carriers=tuple(CarrierPlan(id=c) for c in sorted(self.carrier_dirs)),
                    operators=(
                        OperatorPlan(name=HARNESS_OPERATOR, role=Role.OPERATOR),
                        # The viewer has a token too: a web dashboard signs it in with one.
                        OperatorPlan(name=HARNESS_VIEWER, role=Role.VIEWER, token=True),
                        OperatorPlan(name=HARNESS_TOKEN_OPERATOR, role=Role.OPERATOR, token=True),
                        *self.extra_operators,
                    ),
                ),
                self.work_dir / "pki",
            )
        return self.pki

    def coordinator_config(self) -> CoordinatorConfig:
        settings: dict[str, object] = {
            "listen": "127.0.0.1:0",
            "store_path": self.work_dir / "rounds.sqlite3",
            "carriers": tuple(CarrierEntry(id=c) for c in sorted(self.carrier_dirs)),
            "heartbeat_seconds": self.heartbeat_seconds,
            "disconnect_grace_seconds": self.disconnect_grace_seconds,
            "max_message_bytes": self.max_message_bytes,
            "insecure": self.insecure,
            "revocation_file": self.revocation_file,
            "operator_listen": "127.0.0.1:0" if self.operator_port else None,
            "round_store": self.round_store,
            "metrics_address": self.metrics_address,
            "schedule": self.schedule,
        }
        if not self.insecure:
            pki = self.provision()
            settings.update(
                tls=ServerTls(
                    ca_cert=pki.trust_bundle, cert=pki.coordinator_cert, key=pki.coordinator_key
                ),
                operator_signing_key=pki.operator_signing_key,
                operator_public_key=pki.operator_public_key,
                result_keys_dir=pki.result_keys_dir,
                operators=tuple(
                    OperatorEntry(
                        name=o.name,
                        role=o.role,
                        token_sha256=hashlib.sha256(o.token.read_bytes().strip()).hexdigest()
                        if o.token
                        else None,
                        office=self.operator_offices.get(o.name),
                    )
                    for o in pki.operators.values()
                ),
            )
        settings.update(self.coordinator_settings)
        return CoordinatorConfig.model_validate(settings)

    async def start(self, connect_timeout: float | None = None) -> None:
        timeout = self.connect_timeout if connect_timeout is None else connect_timeout
        if self.node_processes and (self.wiretap is not None or self.on_answered is not None):
            raise ValueError("wiretap and on_answered need the nodes in this process")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.insecure:
            await asyncio.to_thread(self.provision)
        self.coordinator = Coordinator(self.coordinator_config(), clock=self.clock)
        await self.coordinator.start()
        if self.node_processes:
            try:
                await self._start_workers(timeout)
            except BaseException:
                await self._stop_workers()  # none left behind a failed start
                await self.coordinator.shutdown(grace=0.5)
                raise
            self.client = self.operator_client()
            return
        # Open every node's data first (validation runs off the loop, two at a time: DuckDB
        # releases the GIL), then connect them all.
        if self.canned:
            self.answers = canned_answers(self.carrier_dirs, threads=self.engine_threads)
        for carrier_id in sorted(self.carrier_dirs):
            self.nodes[carrier_id] = self.make_node(carrier_id)
        gate = asyncio.Semaphore(2)

        async def open_one(node: NodeDaemon) -> None:
            async with gate:
                await node.open_source()

        async def open_answers(answers: CannedAnswers) -> None:
            async with gate:
                await asyncio.to_thread(answers.open)

        if self.canned:
            await asyncio.gather(*(open_answers(a) for a in self.answers.values()))
        else:
            await asyncio.gather(*(open_one(n) for n in self.nodes.values()))
        for carrier_id, node in self.nodes.items():
            self._tasks[carrier_id] = asyncio.create_task(node.run())
        await asyncio.wait_for(
            asyncio.gather(*(n.connected.wait() for n in self.nodes.values())), timeout
        )
        self.client = self.operator_client()

    async def _start_workers(self, timeout: float) -> None:
        """Start the worker processes, each with its share of the nodes, and wait until every
        node is connected."""
        context = multiprocessing.get_context("spawn")
        carriers = sorted(self.carrier_dirs)
        shares = [carriers[i :: self.node_processes] for i in range(self.node_processes)]
        for share in (s for s in shares if s):
            ours, theirs = context.Pipe()
            plan = WorkerPlan(
                configs=tuple(self.node_config(c) for c in share),
                policies={c: self.policies.get(c, self.policy) for c in share},
                canned=self.canned,
                engine_threads=self.engine_threads,
            )
            process = context.Process(
                target=serve_nodes, args=(plan, theirs), name="sim-nodes", daemon=True
            )
            process.start()
            theirs.close()
            self._workers.append((process, ours))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for worker, conn in self._workers:
            while not await loop.run_in_executor(None, conn.poll, 0.5):
                if worker.exitcode is not None:
                    raise RuntimeError(f"node worker {worker.pid} exited ({worker.exitcode})")
                if loop.time() > deadline:
                    raise TimeoutError(f"node worker {worker.pid} not ready in {timeout:.0f}s")
            kind, detail = conn.recv()
            if kind != "ready":
                raise RuntimeError(f"node worker {worker.pid} failed: {detail}")

    async def _stop_workers(self) -> None:
        loop = asyncio.get_running_loop()
        for _, conn in self._workers:
            with contextlib.suppress(OSError):  # a worker that is gone already
                conn.send("stop")
        for process, conn in self._workers:
            await loop.run_in_executor(None, process.join, 30.0)
            if process.is_alive():
                process.kill()
            conn.close()
        self._workers.clear()

    async def restart_coordinator(self) -> Coordinator:
        """Stop the coordinator and start it again on the same port and round store (as after
        a reboot); the nodes and the operator client reconnect by themselves."""
        assert self.coordinator is not None
        port = self.coordinator.port
        await self.coordinator.shutdown(grace=0.5)
        config = self.coordinator_config().model_copy(update={"listen": f"127.0.0.1:{port}"})
        self.coordinator = Coordinator(config, clock=self.clock)
        await self.coordinator.start()
        return self.coordinator

    def operator_client(self, name: str = HARNESS_OPERATOR) -> OperatorClient:
        """A client for the operator API as the harness operator (or viewer)."""
        if self.pki is None:
            return OperatorClient(self.address)
        kit = self.pki.operators[name]
        return OperatorClient(self.address, ca_cert=kit.ca_cert, cert=kit.cert, key=kit.key)

    @property
    def operator_address(self) -> str:
        """The operator port's address (with ``operator_port``)."""
        assert self.coordinator is not None and self.coordinator.operator_port
        return f"127.0.0.1:{self.coordinator.operator_port}"

    def node_config(self, carrier_id: str, **changes: object) -> NodeConfig:
        settings: dict[str, object] = {
            "carrier_id": carrier_id,
            "coordinator": self.address,
            "data_dir": self.carrier_dirs[carrier_id],
            "state_dir": self.work_dir / "nodes",
            "insecure": self.insecure,
            "engine_threads": self.engine_threads,
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 2.0,
            "max_message_bytes": self.max_message_bytes,
        }
        if not self.insecure:
            kit = self.provision().carriers[carrier_id]
            assert kit.cert is not None and kit.key is not None
            settings.update(
                tls=TlsFiles(ca_cert=kit.ca_cert, cert=kit.cert, key=kit.key),
                operator_public_key=kit.operator_public_key,
                result_signing_key=kit.result_signing_key,
            )
        own = {**self.node_settings, **self.carrier_settings.get(carrier_id, {}), **changes}
        if own.get("warehouse") is not None and "data_dir" not in own:
            # A carrier on its warehouse: its directory is what was loaded there (the oracle
            # reads it), not the node's source.
            settings["data_dir"] = None
        settings.update(own)
        return NodeConfig.model_validate(settings)

    def make_node(self, carrier_id: str, **changes: object) -> NodeDaemon:
        config = self.node_config(carrier_id, **changes)
        policy = self.policies.get(carrier_id, self.policy)
        if not self.canned:
            node = NodeDaemon(
                config,
                policy=policy,
                wiretap=self.wiretap,
                on_answered=self.on_answered,
                evaluation_executor=self._evaluations,
            )
        else:
            answers = self.answers.get(self.carrier_dirs[carrier_id])
            if answers is None:
                answers = self.answers[self.carrier_dirs[carrier_id]] = CannedAnswers(
                    self.carrier_dirs[carrier_id], threads=self.engine_threads
                )
            node = canned_node(
                config, policy, answers, self.wiretap, self.on_answered, self._evaluations
            )
        if self.request_hook is not None:
            hook = self.request_hook
            # The connection's handler is the node's entry for requests; wrapping it here keeps
            # fault injection in the simulator, out of the daemon.
            deliver = node.connection._on_request
            node.connection._on_request = lambda signed: hook(carrier_id, signed, deliver)
        return node

    async def stop_node(self, carrier_id: str) -> None:
        """Take a carrier away (as if its node vanished)."""
        node = self.nodes.pop(carrier_id)
        await node.shutdown()
        task = self._tasks.pop(carrier_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._close_source(node)

    async def _close_source(self, node: NodeDaemon) -> None:
        """Close a stopped node's own data source (a process would exit; this one goes on).
        A canned node's source is its dataset's, shared: closed with it, never here."""
        # No data while its records were never opened; close() is not part of the protocol.
        close = getattr(getattr(node, "data", None) and node.data.source, "close", None)
        if not self.canned and callable(close):
            await asyncio.to_thread(close)

    async def kill_node(self, carrier_id: str) -> None:
        """Take a carrier away abruptly, as if its process were killed: the stream is cut
        with no goodbye and nothing it was doing is finished or refused. Its records are
        closed at :meth:`stop` (or by :meth:`start_node`, which starts it again)."""
        node = self.nodes.pop(carrier_id)
        task = self._tasks.pop(carrier_id)
        task.cancel()
        node.connection.close()
        await asyncio.gather(task, return_exceptions=True)
        self._killed.setdefault(carrier_id, []).append(node)

    async def _close_killed(self, carrier_id: str | None = None) -> None:
        ids = list(self._killed) if carrier_id is None else [carrier_id]
        for node in (n for c in ids for n in self._killed.pop(c, [])):
            await asyncio.gather(node.shutdown(), return_exceptions=True)
            await self._close_source(node)

    async def start_node(
        self, carrier_id: str, connect_timeout: float = 60.0, **changes: object
    ) -> NodeDaemon:
        """Start a carrier's node on its state directory (again, after :meth:`stop_node`: as
        after a reboot, with the secret, budget and outbox it left) and wait until it is
        connected; ``changes``: node settings for this start."""
        if carrier_id in self.nodes:
            raise RuntimeError(f"node {carrier_id} is running")
        await self._close_killed(carrier_id)
        node = self.make_node(carrier_id, **changes)
        if self.canned:
            await asyncio.to_thread(self.answers[self.carrier_dirs[carrier_id]].open)
        await node.open_source()
        self.nodes[carrier_id] = node
        self._tasks[carrier_id] = asyncio.create_task(node.run())
        await asyncio.wait_for(node.connected.wait(), connect_timeout)
        return node

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.nodes:
            await asyncio.gather(*(self.stop_node(c) for c in list(self.nodes)))
        await self._close_killed()
        if self._workers:
            await self._stop_workers()
        if self.coordinator is not None:
            await self.coordinator.shutdown(grace=0.5)
        self._evaluations.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> SimulatedFederation:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def canned_node(
    config: NodeConfig,
    policy: Policy | None,
    answers: CannedAnswers,
    wiretap: WireTap | None = None,
    on_answered: Callable[[AnswerTiming], None] | None = None,
    evaluation_executor: Executor | None = None,
) -> NodeDaemon:
    """A node daemon answering from ``answers`` (opened by the caller)."""
    node = NodeDaemon(
        config,
        source=answers.source,
        policy=policy,
        wiretap=wiretap,
        on_answered=on_answered,
        evaluation_executor=evaluation_executor,
    )
    node.data.engine = CannedEngine(
        answers, config.carrier_id, clamped=node.policy.differential_privacy.enabled
    )
    return node


@dataclass(frozen=True)
class WorkerPlan:
    """What a node worker process runs: its nodes' configurations and policies."""

    configs: tuple[NodeConfig, ...]
    policies: dict[str, Policy | None]
    canned: bool
    engine_threads: int


def serve_nodes(plan: WorkerPlan, conn: Connection) -> None:
    """A node worker process: run the plan's nodes until told to stop. Says ``("ready",
    None)`` once every node is connected (or ``("error", reason)``), then waits for ``stop``."""
    try:
        asyncio.run(_serve_nodes(plan, conn))
    finally:
        conn.close()


async def _serve_nodes(plan: WorkerPlan, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    nodes: list[NodeDaemon] = []
    tasks: list[asyncio.Task[None]] = []
    evaluations = ThreadPoolExecutor(
        max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="evaluation"
    )
    try:
        answers: dict[Path, CannedAnswers] = {}
        for config in plan.configs:
            policy = plan.policies.get(config.carrier_id)
            if plan.canned:
                assert config.data_dir is not None
                data = answers.get(config.data_dir)
                if data is None:
                    data = answers[config.data_dir] = CannedAnswers(
                        config.data_dir, threads=plan.engine_threads
                    )
                    await asyncio.to_thread(data.open)
                nodes.append(canned_node(config, policy, data, evaluation_executor=evaluations))
            else:
                nodes.append(NodeDaemon(config, policy=policy, evaluation_executor=evaluations))
        for node in nodes:
            if not plan.canned:
                await node.open_source()
            tasks.append(asyncio.create_task(node.run()))
        await asyncio.gather(*(n.connected.wait() for n in nodes))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    conn.send(("ready", None))
    with contextlib.suppress(EOFError):  # "stop", or EOF: the harness is gone
        await loop.run_in_executor(None, conn.recv)
    await asyncio.gather(*(n.shutdown() for n in nodes), return_exceptions=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    evaluations.shutdown(wait=False, cancel_futures=True)
