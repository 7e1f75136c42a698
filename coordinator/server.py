"""Assembly of the coordinator: store, node hub, round manager and operator API on one server."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator.access import CarrierAccess, OperatorAccess, Revocations
from coordinator.config import CoordinatorConfig, split_host_port
from coordinator.hub import NodeHub
from coordinator.monitoring import CoordinatorMetrics, MetricsEndpoint
from coordinator.operator_api import OversightService
from coordinator.rounds import RoundManager
from coordinator.schedule import Clock, Run, Schedule, Scheduler, SystemClock, load_schedule
from coordinator.store import RoundStore, open_round_store
from fedoversight.errors import ConfigError
from fedoversight.signing import Signer, Verifier
from fedoversight.tls import check_identity_files, load_certificate
from fedoversight.v1 import federation_pb2, federation_pb2_grpc, operator_pb2, operator_pb2_grpc

#: Services the coordinator names to reflection (and to health: all but reflection itself).
REFLECTED = (
    operator_pb2.DESCRIPTOR.services_by_name["Oversight"].full_name,
    federation_pb2.DESCRIPTOR.services_by_name["NodeFederation"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)

log = logging.getLogger(__name__)


class _StoreRegistry:
    def __init__(self, store: RoundStore) -> None:
        self._store = store
        self._known = {c for c, _ in store.carriers()}

    def is_registered(self, carrier_id: str) -> bool:
        return carrier_id in self._known

    def register(self, carrier_id: str) -> None:
        self._store.upsert_carrier(carrier_id)
        self._known.add(carrier_id)


#: Largest metadata block accepted (an operator's bearer token is far smaller).
MAX_METADATA_BYTES = 16 * 1024
#: Largest message on the health-only port (a health check is a few bytes).
HEALTH_MESSAGE_BYTES = 4 * 1024


def load_result_keys(config: CoordinatorConfig) -> dict[str, Verifier] | None:
    """Each registered carrier's result-signing key.

    Outside insecure mode every result must be signed: the map is returned even when keys are
    missing (those carriers' results are then all rejected, and said so loudly here). An
    insecure demo without any key accepts unsigned results (None).
    """
    keys: dict[str, Verifier] = {}
    missing: list[str] = []
    for entry in config.carriers:
        path = config.result_key_path(entry)
        if path is None:
            missing.append(entry.id)
            continue
        keys[entry.id] = Verifier.load(path)
    if config.insecure and not keys:
        return None
    if missing:
        log.warning(
            "%d carriers have no result-signing key configured; their results will be rejected: %s",
            len(missing),
            ", ".join(missing[:10]),
        )
    return keys


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class Coordinator:
    """The coordinator daemon. ``async with Coordinator(config) as c:`` serves until exit."""

    def __init__(
        self,
        config: CoordinatorConfig,
        *,
        signer: Signer | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``clock``: what the schedule's due times are read from (the host's by default)."""
        self.config = config
        if signer is None and config.operator_signing_key is not None:
            signer = Signer.load(config.operator_signing_key)
        self.signer = signer
        operator_verifier = (
            Verifier.load(config.operator_public_key)
            if config.operator_public_key is not None
            else signer.verifier
            if signer is not None
            else None
        )
        if (
            signer is not None
            and operator_verifier is not None
            and (signer.key_id != operator_verifier.key_id)
        ):
            raise ConfigError("operator_public_key is not the public half of operator_signing_key")
        self.operator_verifier = operator_verifier
        self.schedule = load_schedule(config.schedule) if config.schedule else Schedule()
        if self.schedule.suites and signer is None and not config.insecure:
            raise ConfigError(
                "a schedule needs operator_signing_key: its rounds are signed with it"
            )
        self.node_verifiers = load_result_keys(config)
        self.revocations = Revocations(config.revoked_serials, config.revocation_file)
        self.metrics = CoordinatorMetrics()
        self.store = open_round_store(config)
        for entry in config.carriers:
            self.store.upsert_carrier(entry.id, entry.name)
        tls = config.tls
        self.hub = NodeHub(
            _StoreRegistry(self.store),
            coordinator_id=config.coordinator_id,
            heartbeat_seconds=config.heartbeat_seconds,
            hello_timeout=config.hello_timeout_seconds,
            auto_register=config.auto_register,
            access=CarrierAccess(
                {c.id: c for c in config.carriers},
                federation_ca=load_certificate(tls.ca_cert) if tls is not None else None,
                revocations=self.revocations,
                require_certificate=tls is not None,
            ),
            metrics=self.metrics,
        )
        self.rounds = RoundManager(
            self.store,
            self.hub,
            signer=signer,
            node_verifiers=self.node_verifiers,
            operator_verifier=operator_verifier,
            allow_unsigned=config.insecure,
            request_ttl=dt.timedelta(seconds=config.request_ttl_seconds),
            default_deadline=dt.timedelta(seconds=config.default_deadline_seconds),
            disconnect_grace=config.disconnect_grace_seconds,
            metrics=self.metrics,
        )
        self.hub.listener = self.rounds
        self.metrics.track(
            carriers_connected=lambda: len(self.hub.sessions),
            rounds_open=lambda: self.rounds.open_count,
        )
        self.access = OperatorAccess(
            config.operators,
            revocations=self.revocations,
            tls=tls is not None,
            carrier_ids=[c.id for c in config.carriers],
        )
        self.server: grpc.aio.Server | None = None
        self.port: int = 0
        self.health_server: grpc.aio.Server | None = None
        self.health_port: int = 0
        self.operator_server: grpc.aio.Server | None = None
        self.operator_port: int = 0
        self.health = health.aio.HealthServicer()
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.scheduler = Scheduler(
            self.schedule,
            clock=clock or SystemClock(),
            last_run=self._last_run,
            launch=self._launch_run,
        )
        self._scheduling: asyncio.Task[None] | None = None

    async def _last_run(self, suite: str) -> dt.datetime | None:
        return await self.rounds.db(self.store.last_scheduled, suite)

    async def _launch_run(self, run: Run) -> str:
        """A suite's run, created as CreateRound creates a round the coordinator signs."""
        record = await self.rounds.launch(
            run.period,
            run.suite.query_specs(),
            run.suite.carriers,
            quorum=run.suite.quorum,
            deadline_seconds=run.suite.deadline_seconds,
            idempotency_key=run.key,
            scheduled=(run.suite.name, run.due),
        )
        return record.round_id

    @property
    def metrics_port(self) -> int:
        """The port serving /metrics (0 when metrics_address is unset or not started)."""
        return self.metrics_endpoint.port if self.metrics_endpoint is not None else 0

    def _serve_operators(self, server: grpc.aio.Server) -> None:
        """The operator API, gRPC health and server reflection on ``server``."""
        operator_pb2_grpc.add_OversightServicer_to_server(
            OversightService(self.store, self.rounds, self.hub, self.access, metrics=self.metrics),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(REFLECTED, server)

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (``listen`` may use port 0)."""
        server = grpc.aio.server(options=server_options(self.config.max_message_bytes))
        federation_pb2_grpc.add_NodeFederationServicer_to_server(self.hub, server)
        self._serve_operators(server)
        tls = self.config.tls
        if tls is None:
            log.warning(
                "INSECURE DEMO MODE: coordinator serving WITHOUT TLS on %s; any peer can"
                " connect, results are %s. Never use with real data.",
                self.config.listen,
                "signature-checked" if self.node_verifiers is not None else "unsigned",
            )
            port = server.add_insecure_port(self.config.listen)
        else:
            own = check_identity_files(tls.cert, tls.key, what="the coordinator's")
            days_left = (own.not_after - dt.datetime.now(dt.UTC)).days
            if days_left < 30:
                log.warning("the coordinator's certificate expires in %d days", days_left)
            if not self.config.operators:
                log.warning("no operators configured: the operator API refuses every call")
            port = server.add_secure_port(self.config.listen, self._credentials(True))
        await server.start()
        self.server, self.port = server, int(port)
        if self.config.health_listen is not None:
            await self._start_health_port(self.config.health_listen)
        if self.config.operator_listen is not None:
            await self._start_operator_port(self.config.operator_listen)
        if self.config.metrics_address is not None:
            host, metrics_port = split_host_port(self.config.metrics_address)
            self.metrics_endpoint = await asyncio.to_thread(
                MetricsEndpoint, self.metrics, host, metrics_port
            )
        for service in ("", *REFLECTED[:-1]):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await self.rounds.resume()
        if self.schedule.suites:
            self._scheduling = asyncio.create_task(self.scheduler.run(), name="schedule")
        log.info("coordinator listening on port %d", self.port)
        return self.port

    def _credentials(self, require_client_auth: bool) -> grpc.ServerCredentials:
        tls = self.config.tls
        assert tls is not None
        return grpc.ssl_server_credentials(
            [(Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())],
            root_certificates=Path(tls.ca_cert).read_bytes(),
            require_client_auth=require_client_auth,
        )

    async def _start_operator_port(self, listen: str) -> None:
        """The operator API alone on its own port for token operators: the TLS there asks for
        no client certificate (gRPC cannot ask for one without requiring it)."""
        server = grpc.aio.server(options=server_options(self.config.max_message_bytes))
        self._serve_operators(server)
        if self.config.tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, self._credentials(False))
        await server.start()
        self.operator_server, self.operator_port = server, int(port)
        log.info("operator API also on port %d (bearer tokens, no client certificates)", port)

    async def _start_health_port(self, listen: str) -> None:
        """The health service alone, in plaintext: a kubelet's gRPC probe neither speaks TLS
        with a client certificate nor verifies one, and learns only SERVING or not here."""
        server = grpc.aio.server(options=server_options(HEALTH_MESSAGE_BYTES))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = server.add_insecure_port(listen)
        await server.start()
        self.health_server, self.health_port = server, int(port)
        log.info("gRPC health service also on port %d (plaintext, health only)", port)

    async def wait(self) -> None:
        assert self.server is not None
        await self.server.wait_for_termination()

    async def shutdown(self, grace: float = 2.0) -> None:
        if self._scheduling is not None:
            self._scheduling.cancel()
            await asyncio.gather(self._scheduling, return_exceptions=True)
            self._scheduling = None
        await self.health.enter_graceful_shutdown()
        self.hub.close_all()
        for server in (self.operator_server, self.server):
            if server is not None:
                await server.stop(grace)
        self.server = self.operator_server = None
        if self.metrics_endpoint is not None:
            await asyncio.to_thread(self.metrics_endpoint.close)
            self.metrics_endpoint = None
        await self.rounds.close()
        await asyncio.to_thread(self.store.close)
        # Last: until then the probe port answers NOT_SERVING rather than refusing.
        if self.health_server is not None:
            await self.health_server.stop(grace)
            self.health_server = None

    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
