"""A coordinator and N carrier node daemons on loopback, in one process, over real gRPC
(mutual TLS and signatures on, unless asked for an insecure demo)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from carrier_node.config import NodeConfig, TlsFiles
from carrier_node.daemon import NodeDaemon, WireTap
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
from coordinator.server import Coordinator
from fedoversight.signing import Signer

log = logging.getLogger(__name__)


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
    """

    carrier_dirs: Mapping[str, Path]
    work_dir: Path
    policy: Policy | None = None
    #: A carrier's own policy where it differs from ``policy`` (carriers are sovereign).
    policies: Mapping[str, Policy] = field(default_factory=dict)
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
    #: Keep the round store in PostgreSQL rather than in ``work_dir/rounds.sqlite3``.
    round_store: PostgresStore | None = None
    coordinator: Coordinator | None = None
    nodes: dict[str, NodeDaemon] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: Evaluation threads shared by every node: in one process, a pool per node would run
    #: every node's evaluations at once and starve the event loop they all share.
    _evaluations: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="evaluation"
        )
    )
    client: OperatorClient | None = None
    pki: Provisioned | None = None

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
                        OperatorPlan(name=HARNESS_VIEWER, role=Role.VIEWER),
                        OperatorPlan(name=HARNESS_TOKEN_OPERATOR, role=Role.OPERATOR, token=True),
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
                    )
                    for o in pki.operators.values()
                ),
            )
        return CoordinatorConfig.model_validate(settings)

    async def start(self, connect_timeout: float = 60.0) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.insecure:
            await asyncio.to_thread(self.provision)
        self.coordinator = Coordinator(self.coordinator_config())
        await self.coordinator.start()
        # Open every node's data first (validation runs off the loop, two at a time: DuckDB
        # releases the GIL), then connect them all.
        for carrier_id in sorted(self.carrier_dirs):
            self.nodes[carrier_id] = self.make_node(carrier_id)
        gate = asyncio.Semaphore(2)

        async def open_one(node: NodeDaemon) -> None:
            async with gate:
                await node.open_source()

        await asyncio.gather(*(open_one(n) for n in self.nodes.values()))
        for carrier_id, node in self.nodes.items():
            self._tasks[carrier_id] = asyncio.create_task(node.run())
        await asyncio.wait_for(
            asyncio.gather(*(n.connected.wait() for n in self.nodes.values())), connect_timeout
        )
        self.client = self.operator_client()

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
        settings.update(self.node_settings)
        settings.update(changes)
        return NodeConfig.model_validate(settings)

    def make_node(self, carrier_id: str, **changes: object) -> NodeDaemon:
        return NodeDaemon(
            self.node_config(carrier_id, **changes),
            policy=self.policies.get(carrier_id, self.policy),
            wiretap=self.wiretap,
            evaluation_executor=self._evaluations,
        )

    async def stop_node(self, carrier_id: str) -> None:
        """Take a carrier away (as if its node vanished)."""
        node = self.nodes.pop(carrier_id)
        await node.shutdown()
        task = self._tasks.pop(carrier_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def start_node(
        self, carrier_id: str, connect_timeout: float = 60.0, **changes: object
    ) -> NodeDaemon:
        """Start a carrier's node on its state directory (again, after :meth:`stop_node`: as
        after a reboot, with the secret, budget and outbox it left) and wait until it is
        connected; ``changes``: node settings for this start."""
        if carrier_id in self.nodes:
            raise RuntimeError(f"node {carrier_id} is running")
        node = self.make_node(carrier_id, **changes)
        await node.open_source()
        self.nodes[carrier_id] = node
        self._tasks[carrier_id] = asyncio.create_task(node.run())
        await asyncio.wait_for(node.connected.wait(), connect_timeout)
        return node

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        for carrier_id in list(self.nodes):
            await self.stop_node(carrier_id)
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
