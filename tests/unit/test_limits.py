"""What keeps a node from being wedged: time budgets that stop every stage, the cost estimate
that admits a request, slots that keep room for light requests, and records that fail cleanly."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pytest

from carrier_node.budget import Budget
from carrier_node.daemon.cost import CARDINALITY, estimate, query_cells
from carrier_node.daemon.scheduler import Scheduler
from carrier_node.data.files import FileSource
from carrier_node.query.engine import Engine
from carrier_node.records import audit as audit_module
from carrier_node.records.audit import AuditKind, AuditLog, verify
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.errors import (
    DataSourceError,
    DeadlineExceededError,
    NodeBusyError,
    NodeStoppingError,
    RequestTooLargeError,
    public_message,
)
from fedoversight.periods import Period

YEAR = Period.parse("2026-01:2026-12")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- budgets --------------------------------------------------------------------------------


def test_a_budget_ends_at_its_deadline_and_stays_ended() -> None:
    clock = FakeClock()
    budget = Budget(5.0, clock=clock)
    budget.check("the engine")
    assert budget.remaining() == 5.0
    clock.now += 5.0
    with pytest.raises(DeadlineExceededError):
        budget.check("disclosure control")
    clock.now -= 10.0  # the clock going back does not revive it
    assert budget.remaining() == 0.0
    with pytest.raises(DeadlineExceededError):
        budget.check("signing")


def test_cancelling_interrupts_what_runs_once_and_what_starts_later_at_once() -> None:
    budget = Budget(60.0)
    calls: list[str] = []
    with budget.interruptible(lambda: calls.append("engine")):
        budget.cancel(NodeStoppingError("stopping"))
        budget.cancel(DeadlineExceededError("late"))  # the first reason stays
    assert calls == ["engine"]
    assert isinstance(budget.error, NodeStoppingError)
    with budget.interruptible(lambda: calls.append("later")):
        pass
    assert calls == ["engine", "later"]
    with pytest.raises(NodeStoppingError):
        budget.check("the engine")


# --- the cost estimate ----------------------------------------------------------------------


def test_the_estimate_multiplies_cardinalities_months_and_filters() -> None:
    fine = wire.make_query(
        "enrollment.member_months", group_by=[D.MONTH, D.AGE_BAND, D.SEX, D.STATE]
    )
    assert query_cells(fine, YEAR) == 12 * 6 * 4 * 60
    filtered = wire.make_query(
        "enrollment.member_months",
        group_by=[D.MONTH, D.STATE],
        filters={D.STATE: ["VA", "MD"]},
    )
    assert query_cells(filtered, YEAR) == 12 * 2
    by_quarter = wire.make_query("enrollment.member_months", group_by=[D.QUARTER, D.YEAR])
    assert query_cells(by_quarter, Period.parse("2025-11:2026-04")) == 3 * 2
    assert query_cells(wire.make_query("enrollment.member_months"), YEAR) == 1
    assert all(n >= 1 for n in CARDINALITY.values())


def test_a_request_too_large_says_its_estimate_and_the_limit() -> None:
    error = RequestTooLargeError(1_234_567, 1_000_000)
    text = public_message(error)
    assert "1,234,567" in text and "1,000,000" in text
    from tests.unit.trust_kit import request_spec

    request = request_spec()
    assert estimate(request).cells == sum(query_cells(q, request.period) for q in request.queries)


# --- slots ----------------------------------------------------------------------------------


async def test_a_light_request_finds_a_slot_while_heavy_ones_run_and_wait() -> None:
    scheduler = Scheduler(2, max_queued=2, light_cells=100)
    budget = Budget(30.0)
    heavy_started = asyncio.Event()
    release_heavy = asyncio.Event()
    order: list[str] = []

    async def run(name: str, cells: int, hold: asyncio.Event | None = None) -> None:
        async with scheduler.slot(cells, budget):
            order.append(name)
            if name == "heavy-1":
                heavy_started.set()
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(run("heavy-1", 10_000, release_heavy))
    await heavy_started.wait()
    second = asyncio.create_task(run("heavy-2", 10_000))
    await asyncio.sleep(0.05)
    assert scheduler.waiting == 1  # heavy requests take all slots but one
    await asyncio.wait_for(run("light", 10), timeout=2.0)  # not behind either heavy one
    assert order == ["heavy-1", "light"]
    release_heavy.set()
    await asyncio.wait_for(asyncio.gather(first, second), timeout=2.0)
    assert order == ["heavy-1", "light", "heavy-2"]
    assert scheduler.running == 0


async def test_a_full_queue_refuses_and_a_wait_past_the_deadline_is_refused() -> None:
    scheduler = Scheduler(1, max_queued=1, light_cells=0)
    hold = asyncio.Event()

    async def holder() -> None:
        async with scheduler.slot(1, Budget(30.0)):
            await hold.wait()

    running = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        async with scheduler.slot(1, Budget(0.2)):
            pass
    assert time.monotonic() - started < 2.0
    assert scheduler.waiting == 0  # the request that gave up left the queue
    waiting = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    with pytest.raises(NodeBusyError):
        async with scheduler.slot(1, Budget(30.0)):
            pass
    scheduler.stop()
    with pytest.raises(NodeStoppingError):
        await waiting
    with pytest.raises(NodeStoppingError):
        async with scheduler.slot(1, Budget(30.0)):
            pass
    hold.set()
    await running
    assert scheduler.running == 0


# --- the engine's statements are interrupted ------------------------------------------------


def test_a_duckdb_statement_is_interrupted_from_another_thread(tmp_path: Path) -> None:
    from oversight_sim.synth import SynthConfig, write_carriers

    (data,) = write_carriers(tmp_path, SynthConfig(carriers=1, members=200, months=1))
    source = FileSource(data, threads=1)
    source.open()
    heavy = (
        "SELECT count(*) FROM range(1000000000) a, range(1000) b WHERE (a.range * b.range) % 7 = 3"
    )
    started = time.monotonic()
    with source.session() as session:
        timer = threading.Timer(0.3, session.interrupt)
        timer.start()
        with pytest.raises(DataSourceError):
            session.execute_arrow(heavy)
    assert time.monotonic() - started < 5.0


class BlockingSession:
    """A session whose statements run until interrupted."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.limits: list[float] = []

    def interrupt(self) -> None:
        self.stop.set()

    def time_limit(self, seconds: float) -> None:
        self.limits.append(seconds)

    def create_table(self, name: str, statement: str) -> None:
        self.execute_arrow(statement)

    def drop_table(self, name: str) -> None:
        return None

    def execute_arrow(self, sql: str) -> pa.Table:
        if self.stop.wait(timeout=30.0):
            raise DataSourceError("interrupted")
        return pa.table({})


class BlockingSource:
    dialect = "duckdb"

    def __init__(self) -> None:
        self.last = BlockingSession()

    def execute_arrow(self, sql: str) -> pa.Table:
        return self.last.execute_arrow(sql)

    @contextmanager
    def session(self) -> Iterator[BlockingSession]:
        self.last = BlockingSession()
        yield self.last

    def snapshot(self) -> str:
        return "blocking"


def test_the_engine_stops_at_the_deadline_with_the_budgets_error() -> None:
    source = BlockingSource()
    engine = Engine(source, "c001")
    budget = Budget(60.0)
    query = wire.make_query("enrollment.member_months", group_by=[D.MONTH])
    timer = threading.Timer(0.3, budget.cancel, [DeadlineExceededError("past the deadline")])
    timer.start()
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        engine.evaluate_many(YEAR, [query], budget)
    assert time.monotonic() - started < 5.0
    assert source.last.limits and 0 < source.last.limits[0] <= 60.0  # the source's own limit


# --- records --------------------------------------------------------------------------------


def test_a_failed_audit_write_leaves_no_partial_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c001.audit.jsonl"
    log = AuditLog(path, fsync=False)
    log.append(AuditKind.STARTED, policy_digest="abc")
    real_write = os.write

    def disk_full(fd: int, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        real_write(fd, view[: len(view) // 2])  # half an entry reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit_module.os, "write", disk_full)
    with pytest.raises(OSError):
        log.append(AuditKind.RECEIVED, request_id="r1.q", round_id="r1")
    monkeypatch.setattr(audit_module.os, "write", real_write)
    log.append(AuditKind.RECEIVED, request_id="r2.q", round_id="r2")
    log.close()
    outcome = verify(path)
    assert outcome.ok, outcome.problem
    assert outcome.entries == 2
