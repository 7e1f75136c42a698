"""A simulated federation driven from plain (synchronous) code, as tests and notebooks are.

:class:`Federation` runs a :class:`~oversight_sim.harness.SimulatedFederation` on an event
loop of its own, in a background thread: a test needs no async plugin, and the nodes and the
coordinator keep answering while the test waits on a round. :class:`Client` is the operator's
side: it runs rounds and returns each round's typed tidy frame
(:func:`coordinator.frames.round_frame`). Faults of the scenario (or of the test's own
calls) strike at the moments they name; late claims replace a carrier's files between rounds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pandas as pd

from carrier_node.policy import Policy
from coordinator.client import OperatorClient, RoundOutcome
from coordinator.frames import round_frame
from fedoversight.dimensions import Dimension
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period
from fedoversight.v1 import types_pb2
from oversight_sim.carrier_sets import CarrierSet
from oversight_sim.harness import HARNESS_OPERATOR, SimulatedFederation
from oversight_sim.scenario import Fault, Scenario

log = logging.getLogger(__name__)

T = TypeVar("T")
#: How long a call into the federation's loop may take beyond a round's own deadline.
CALL_MARGIN_SECONDS = 120.0


def policy_of(value: Mapping[str, Any] | Path | None) -> Policy | None:
    """A carrier policy from a scenario's keys or policy file."""
    if value is None:
        return None
    if isinstance(value, Path):
        return Policy.load(value)
    return Policy.model_validate(dict(value))


class Federation:
    """``with Federation(scenario, carriers, work_dir) as fed:`` then ``fed.client.run(...)``.

    ``carriers`` maps carrier id to data directory (a :class:`CarrierSet` brings the
    scenario's late-claims refreshes); ``work_dir`` holds the round store, the nodes' state and
    the federation's PKI. ``harness_options`` go to :class:`SimulatedFederation` as they are
    (``wiretap``, ``on_answered``, ``operator_port``, ``metrics_address``, ...).
    """

    def __init__(
        self,
        scenario: Scenario,
        carriers: Mapping[str, Path],
        work_dir: Path,
        **harness_options: Any,
    ) -> None:
        self.scenario = scenario
        self.carriers = carriers if isinstance(carriers, CarrierSet) else CarrierSet(carriers)
        #: The data directory each node runs on now (see :meth:`replace_files`).
        self.data_dirs: dict[str, Path] = dict(self.carriers)
        policies = {c: policy_of(p) for c, p in scenario.policies.items()}
        self.harness = SimulatedFederation(
            self.data_dirs,
            work_dir,
            policy=policy_of(scenario.policy),
            policies={c: p for c, p in policies.items() if p is not None},
            carrier_settings=scenario.node_settings,
            engine_threads=scenario.engine_threads,
            insecure=not scenario.secure,
            canned=scenario.canned,
            node_processes=scenario.node_processes,
            connect_timeout=scenario.connect_timeout,
            request_hook=None if scenario.node_processes else self._on_request,
            **harness_options,
        )
        #: Rounds run through :attr:`client` so far.
        self.rounds = 0
        self._slow: dict[str, float] = {}
        self._at_request: dict[str, Fault] = {}
        self._faults: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> Federation:
        """Start the coordinator and every node; return once every node is connected."""
        if self._loop is not None:
            raise RuntimeError("the federation is running")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="simulated-federation", daemon=True
        )
        self._thread.start()
        try:
            self.call(self.harness.start(), timeout=self.scenario.connect_timeout + 60)
        except BaseException:
            self.stop()
            raise
        self._client = Client(self)
        return self

    def stop(self) -> None:
        """Stop every node and the coordinator, then the loop; safe to call more than once."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        client, self._client = self._client, None
        try:
            if client is not None:
                client.close()
        finally:
            self._stop_loop(loop, thread)

    def _stop_loop(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        try:
            if loop.is_running():
                self.call(self._stop(), timeout=120)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    async def _stop(self) -> None:
        if self._faults:
            await asyncio.gather(*self._faults, return_exceptions=True)
        await self.harness.stop()
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def __enter__(self) -> Federation:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the federation's loop and return its result (an escape hatch
        to the async harness: ``fed.call(fed.harness.client.get_receipts(round_id))``)."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the federation is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    @property
    def client(self) -> Client:
        """The operator's client (as the harness operator)."""
        if self._client is None:
            raise RuntimeError("the federation is not running")
        return self._client

    @property
    def address(self) -> str:
        """The coordinator's address on loopback."""
        return self.harness.address

    # --- faults -----------------------------------------------------------------------------

    def stop_node(self, carrier: str) -> None:
        """Stop a carrier's node cleanly (it says goodbye; what it was doing is refused)."""
        self.call(self.harness.stop_node(carrier))

    def kill_node(self, carrier: str) -> None:
        """Cut a carrier's node off abruptly, as a killed process: no goodbye, no refusal."""
        self.call(self.harness.kill_node(carrier))

    def start_node(self, carrier: str, **changes: Any) -> None:
        """Start a stopped or killed node again on its state directory (as after a reboot);
        ``changes``: node settings for this start."""
        self.call(self.harness.start_node(carrier, **changes))

    def slow_node(self, carrier: str, seconds: float) -> None:
        """Every request reaches the carrier's node ``seconds`` late from now on (0: no
        longer)."""
        if seconds:
            self._slow[carrier] = seconds
        else:
            self._slow.pop(carrier, None)

    def replace_files(self, carrier: str, directory: Path) -> None:
        """The carrier replaces its extract: its node restarts on ``directory``'s files (the
        shared data of the carrier set is never changed in place)."""
        self.data_dirs[carrier] = directory
        if carrier in self.harness.nodes:
            self.stop_node(carrier)
        self.start_node(carrier)

    def nodes_up(self) -> list[str]:
        """The carriers whose nodes run in this process now."""
        return sorted(self.harness.nodes)

    def begin_round(self) -> int:
        """Count a new round: apply the refreshes due after the last one and the scenario's
        faults of this one (``before`` now, ``request`` when its request reaches the node).
        :class:`Client` calls this; a test driving the async client itself may too."""
        self.rounds += 1
        number = self.rounds
        for refresh in self.carriers.refreshes:
            if refresh.after_round == number - 1:
                self.replace_files(refresh.carrier, refresh.directory)
        self._at_request = {}
        for fault in self.scenario.faults:
            if fault.round != number:
                continue
            if fault.moment == "before":
                self.call(self._strike(fault))
            else:
                self._at_request[fault.carrier] = fault
        return number

    async def _strike(self, fault: Fault) -> None:
        log.info("fault: %s %s (round %d)", fault.action, fault.carrier, fault.round)
        if fault.action == "slow":
            self._slow[fault.carrier] = fault.seconds
        elif fault.action == "kill":
            await self.harness.kill_node(fault.carrier)
        else:
            await self.harness.stop_node(fault.carrier)
            if fault.action == "restart":
                await self.harness.start_node(fault.carrier)

    def _on_request(
        self,
        carrier: str,
        signed: types_pb2.SignedRequest,
        deliver: Callable[[types_pb2.SignedRequest], None],
    ) -> None:
        """Runs on the federation's loop as a request reaches a node."""
        fault = self._at_request.pop(carrier, None)
        if fault is not None and fault.action != "slow":
            task = asyncio.get_running_loop().create_task(self._strike(fault))
            self._faults.add(task)
            task.add_done_callback(self._faults.discard)
            return  # the node goes away with the request undelivered
        if fault is not None:
            self._slow[carrier] = fault.seconds
        delay = self._slow.get(carrier, 0.0)
        if delay:
            asyncio.get_running_loop().call_later(delay, deliver, signed)
        else:
            deliver(signed)


class Client:
    """The operator's side of a running :class:`Federation`: rounds in, typed frames out.

    Rounds run through the analysts' client, ``fedoversight.client.Client`` (:attr:`analyst`,
    connected as the harness operator), so a test reads exactly what a notebook does: every
    frame is :func:`coordinator.frames.round_frame` of the round, one row per scope
    (``program`` or a carrier), cell and statistic or figure, with ``withheld``,
    ``incomplete``, ``noise_sd`` and ``unreliable`` beside each value; ``frame.attrs`` holds
    the round's id, state and each carrier's outcome. Rounds run through :meth:`run`,
    :meth:`run_many` and :meth:`run_queries` count for the scenario's faults and refreshes;
    the analysts' client's other methods (``trend``, ``rounds``, ``carriers``, ...) are
    reached through :attr:`analyst`.
    """

    def __init__(self, federation: Federation) -> None:
        from fedoversight.client import Client as AnalystsClient

        self.federation = federation
        pki = federation.harness.pki
        if pki is None:
            self.analyst = AnalystsClient(federation.address)
        else:
            kit = pki.operators[HARNESS_OPERATOR]
            self.analyst = AnalystsClient(
                federation.address, ca_cert=kit.ca_cert, cert=kit.cert, key=kit.key
            )
        #: The id of the last round run through this client.
        self.last_round_id: str | None = None

    def close(self) -> None:
        """Close the analysts' client (the federation does, when it stops)."""
        self.analyst.close()

    @property
    def operator(self) -> OperatorClient:
        """The async operator client of the harness (its calls run with ``federation.call``)."""
        client = self.federation.harness.client
        assert client is not None
        return client

    @property
    def last_outcome(self) -> RoundOutcome | None:
        """The last round's outcome as the operator API gives it now."""
        return None if self.last_round_id is None else self.outcome(self.last_round_id)

    def _deadline(self, deadline: int | None) -> int:
        return deadline or self.federation.scenario.deadline_seconds

    def _ran(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.last_round_id = str(frame.attrs["round_id"])
        return frame

    def run(
        self,
        metric: str,
        period: Period | str,
        by: Sequence[str | Dimension] | str = (),
        filters: Mapping[str, str | Iterable[str]] | None = None,
        carriers: Sequence[str] = (),
        *,
        version: int = 0,
        parameters: Mapping[str, float] | None = None,
        quorum: int = 0,
        deadline: int | None = None,
    ) -> pd.DataFrame:
        """Run one metric (the catalogue's latest version unless ``version``) over ``period``
        (``"2026-01:2026-03"``), grouped ``by`` dimensions and ``filters`` (dimension to
        values), asking ``carriers`` (all when empty), and return the round's typed tidy frame:
        ``fedoversight.client.Client.run``, ``deadline`` the scenario's when not given."""
        self.federation.begin_round()
        return self._ran(
            self.analyst.run(
                metric,
                period,
                by if isinstance(by, str) else [str(d) for d in by],
                filters,
                carriers,
                version=version,
                parameters=parameters,
                quorum=quorum,
                deadline=self._deadline(deadline),
            )
        )

    def run_many(
        self,
        metrics: Sequence[str],
        period: Period | str,
        by: Sequence[str | Dimension] | str = (),
        filters: Mapping[str, str | Iterable[str]] | None = None,
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline: int | None = None,
    ) -> pd.DataFrame:
        """Several metrics in one round (``fedoversight.client.Client.run_many``)."""
        self.federation.begin_round()
        return self._ran(
            self.analyst.run_many(
                metrics,
                period,
                by if isinstance(by, str) else [str(d) for d in by],
                filters,
                carriers,
                quorum=quorum,
                deadline=self._deadline(deadline),
            )
        )

    def run_queries(
        self,
        period: Period | str,
        queries: Sequence[QuerySpec],
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline: int | None = None,
    ) -> pd.DataFrame:
        """Several queries (``fedoversight.wire.make_query``), each grouped its own way, in
        one round (through the harness's operator client)."""
        span = Period.parse(period) if isinstance(period, str) else period
        seconds = self._deadline(deadline)
        self.federation.begin_round()
        outcome = self.federation.call(
            self.operator.run_round(
                span, queries, carriers=carriers, quorum=quorum, deadline_seconds=seconds
            ),
            timeout=seconds + CALL_MARGIN_SECONDS,
        )
        return self._ran(round_frame(outcome))

    def outcome(self, round_id: str) -> RoundOutcome:
        """A round as the operator API returns it now (tables, carriers' outcomes)."""
        return self.analyst.outcome(round_id)

    def results(self, round_id: str) -> pd.DataFrame:
        """A round's typed tidy frame as it stands now (late answers included)."""
        return self.analyst.results(round_id)


def start_federation(
    scenario: Scenario, carriers: Mapping[str, Path], work_dir: Path, **harness_options: Any
) -> Federation:
    """A started :class:`Federation` (stop it with :meth:`Federation.stop`)."""
    return Federation(scenario, carriers, work_dir, **harness_options).start()
