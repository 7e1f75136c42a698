"""The coordinator's Prometheus metrics, and the HTTP endpoint that serves them.

Every figure is a count, a duration or a state: no label holds a round id, a carrier id or
anything a carrier sent beyond the code of its refusal (a fixed, small set), so the series
stay few however many rounds and carriers there are. Each coordinator has its own registry
(several coordinators in one process, as in tests, do not share their counts).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from coordinator.store import RoundState
from fedoversight.errors import ConfigError
from fedoversight.v1 import types_pb2

log = logging.getLogger(__name__)

#: Round outcomes (a round's terminal states).
OUTCOMES = tuple(s.value for s in RoundState if not s.is_open)

#: Bounds (seconds) of the round-duration buckets: rounds take from a second to their
#: deadline (five minutes by default, an hour at most in practice).
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def error_code_name(code: int) -> str:
    """The name of an error code (``ERROR_CODE_TOO_LARGE``); a code this build does not know
    is ``ERROR_CODE_UNSPECIFIED`` (a label never takes a value a carrier chose freely)."""
    try:
        return types_pb2.ErrorCode.Name(code)  # type: ignore[arg-type]
    except ValueError:
        return types_pb2.ErrorCode.Name(types_pb2.ERROR_CODE_UNSPECIFIED)


class CoordinatorMetrics:
    """The coordinator's metrics, in a registry of their own (:attr:`registry`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # process_* (CPU, memory, open files, start time), read from /proc at each scrape.
        ProcessCollector(registry=registry)
        self.rounds_created = Counter(
            "oversight_rounds_created",
            "Rounds created (an idempotent retry of a creation is not counted again)",
            registry=registry,
        )
        self.rounds_finished = Counter(
            "oversight_rounds_finished",
            "Rounds finished, by outcome: complete (every carrier answered), partial (the"
            " quorum answered), failed (fewer than the quorum)",
            ["outcome"],
            registry=registry,
        )
        self.round_duration = Histogram(
            "oversight_round_duration_seconds",
            "Time from a round's creation to its outcome",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.rounds_open = Gauge(
            "oversight_rounds_open", "Rounds created and not finished yet", registry=registry
        )
        self.carriers_connected = Gauge(
            "oversight_carriers_connected",
            "Carrier nodes with an open stream to the coordinator",
            registry=registry,
        )
        self.carrier_streams_refused = Counter(
            "oversight_carrier_streams_refused",
            "Node streams refused at their hello (unknown carrier, certificate not matching"
            " its id, revoked, unsupported catalogue)",
            registry=registry,
        )
        self.results_received = Counter(
            "oversight_results_received",
            "Signed results stored (a result delivered again is not counted again)",
            registry=registry,
        )
        self.results_rejected = Counter(
            "oversight_results_rejected",
            "Results not stored, by the code of the check they failed (signature, not"
            " answering their request, no such round)",
            ["code"],
            registry=registry,
        )
        self.refusals = Counter(
            "oversight_refusals",
            "Carriers' refusals recorded in a round, by the refusal's error code",
            ["code"],
            registry=registry,
        )
        self.operator_calls = Counter(
            "oversight_operator_calls",
            "Operator API calls, by method and gRPC status",
            ["method", "status"],
            registry=registry,
        )
        # Every outcome and code a series at 0 from the start: increase() over a series that
        # appears at 1 sees no increase, so the first refusal of a kind would go unnoticed.
        for outcome in OUTCOMES:
            self.rounds_finished.labels(outcome=outcome)
        for code in (v.name for v in types_pb2.ErrorCode.DESCRIPTOR.values):
            self.refusals.labels(code=code)
            self.results_rejected.labels(code=code)

    def track(
        self, *, carriers_connected: Callable[[], int], rounds_open: Callable[[], int]
    ) -> None:
        """Read these gauges at each scrape from the hub and the round manager."""
        self.carriers_connected.set_function(carriers_connected)
        self.rounds_open.set_function(rounds_open)

    def round_finished(self, outcome: RoundState, seconds: float) -> None:
        self.rounds_finished.labels(outcome=outcome.value).inc()
        self.round_duration.observe(max(seconds, 0.0))

    def refusal(self, code: int) -> None:
        self.refusals.labels(code=error_code_name(code)).inc()

    def result_rejected(self, code: int) -> None:
        self.results_rejected.labels(code=error_code_name(code)).inc()

    def operator_call(self, method: str, status: str) -> None:
        self.operator_calls.labels(method=method, status=status).inc()


class MetricsEndpoint:
    """``/metrics`` over HTTP on ``host:port`` (prometheus_client's own server, in threads of
    its own: a scrape never waits for the event loop)."""

    def __init__(self, metrics: CoordinatorMetrics, host: str, port: int) -> None:
        try:
            server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics_address: cannot listen on {host}:{port} ({exc.strerror or exc})"
            ) from None
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.port: int = int(server.server_port)
        shown = f"[{host}]" if ":" in host else host
        log.info("Prometheus metrics on http://%s:%d/metrics", shown, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
