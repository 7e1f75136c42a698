"""A suite the coordinator runs by itself, on a clock moved by hand, against simulated carriers
on loopback: the first due time runs a round over its window; claims of February arrive late;
the next due time runs again, and February has two revisions whose values are each what the
oracle computes from the data the carriers held at the time; a restart runs nothing again."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from carrier_node.policy import Policy
from coordinator.client import scheduled_for
from coordinator.combine import ScopedTable
from coordinator.config import PostgresStore
from coordinator.convert import round_state_from_pb
from coordinator.schedule import ManualClock
from coordinator.store import RoundState, RoundStore
from coordinator.store_postgres import PostgresBackend
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.errors import InvalidRequestError
from fedoversight.periods import Period
from fedoversight.testing import VIEWER, SimulatedFederation, oracle
from fedoversight.v1 import operator_pb2
from tests import postgres
from tests.integration.helpers import compare
from tests.integration.test_operator_api import cli, run_cli
from tests.integration.test_trust import small, wait_for

EXACT = Policy(perturbation={"enabled": False})
QUERY = wire.make_query("cost.pmpm", group_by=[D.MONTH])

SCHEDULE = """
[[suite]]
name = "monthly-pmpm"
description = "PMPM by month, the two months before the run"
trailing_months = 2
lag_months = 1
day_of_month = 5
hour = 6
deadline_seconds = 120

[[suite.query]]
metric = "cost.pmpm"
group_by = ["month"]
"""
SUITE = "monthly-pmpm"
FIRST_DUE = dt.datetime(2026, 3, 5, 6, 0, tzinfo=dt.UTC)
SECOND_DUE = dt.datetime(2026, 4, 5, 6, 0, tzinfo=dt.UTC)


def early_extract(directory: Path) -> int:
    """Take the claims that started in the second half of February out of a carrier's extract
    (as if not processed yet); the number of rows taken out."""
    path = directory / "medical_claims.parquet"
    schema = pq.read_schema(path)
    frame = pq.read_table(path).to_pandas()
    start = pd.to_datetime(frame["claim_start_date"])
    late = frame.loc[(start >= "2026-02-15") & (start < "2026-03-01"), "claim_id"].unique()
    kept = frame[~frame["claim_id"].isin(late)]
    replacement = path.with_name("medical_claims.parquet.new")
    pq.write_table(pa.Table.from_pandas(kept, schema=schema, preserve_index=False), replacement)
    replacement.replace(path)
    return len(frame) - len(kept)


def paid_cents(tables: Sequence[ScopedTable], month: str) -> int:
    """The program's paid cents in ``month``."""
    program = next(t for t in tables if t.scope == "program")
    cell = next(c for c in program.cells if dict(c.key)[D.MONTH] == month)
    value = {s.name: s.value for s in cell.stats}["paid_cents"]
    assert isinstance(value, int)
    return value


async def test_a_suite_runs_on_its_due_times_and_february_gets_a_second_revision(
    federation_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the command line's tables unwrapped
    dirs = {
        c: Path(shutil.copytree(d, tmp_path / "data" / c))
        for c, d in small(federation_data, 3).items()
    }
    late = sorted(dirs)[0]
    full = tmp_path / "medical_claims.full.parquet"
    shutil.copyfile(dirs[late] / "medical_claims.parquet", full)
    assert early_extract(dirs[late]) > 0
    early = {c: oracle.load_carrier(d) for c, d in dirs.items()}
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(SCHEDULE)
    clock = ManualClock(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    async with SimulatedFederation(
        dirs, tmp_path / "run", policy=EXACT, schedule=schedule, clock=clock
    ) as fed:
        assert fed.client is not None and fed.coordinator is not None
        client = fed.client
        launched = fed.coordinator.scheduler.launched
        assert await client.list_rounds(suite=SUITE) == []

        # The first due time: a round over January and February.
        clock.set(FIRST_DUE + dt.timedelta(minutes=3))
        assert await wait_for(lambda: len(launched) == 1)
        first = launched[(SUITE, FIRST_DUE)]
        async for _ in client.watch(first, timeout=120):
            pass
        one = await client.get_round(first)
        assert one.state is RoundState.COMPLETE
        assert one.period == Period.parse("2026-01:2026-02")
        assert (one.suite, one.scheduled_for) == (SUITE, FIRST_DUE)

        # February's late claims arrive (the carrier replaces its extract); the next due time.
        replacement = dirs[late] / "medical_claims.parquet.new"
        shutil.copyfile(full, replacement)
        replacement.replace(dirs[late] / "medical_claims.parquet")
        clock.set(SECOND_DUE)
        assert await wait_for(lambda: len(launched) == 2)
        second = launched[(SUITE, SECOND_DUE)]
        async for _ in client.watch(second, timeout=120):
            pass
        two = await client.get_round(second)
        assert two.state is RoundState.COMPLETE
        assert two.period == Period.parse("2026-02:2026-03")

        # The revisions: February twice, the other months once.
        rows = await client.list_revisions(SUITE)
        assert [(r.month, r.revision, r.round_id, r.latest) for r in rows] == [
            ("2026-01", 1, first, True),
            ("2026-02", 1, first, False),
            ("2026-02", 2, second, True),
            ("2026-03", 1, second, True),
        ]
        february = await fed.operator_client(VIEWER).list_revisions(SUITE, "2026-02")
        assert [(r.revision, r.round_id) for r in february] == [(1, first), (2, second)]
        assert [scheduled_for_of(r) for r in february] == [FIRST_DUE, SECOND_DUE]
        assert {round_state_from_pb(r.state) for r in february} == {RoundState.COMPLETE}
        assert await client.list_revisions(SUITE, "2026-04") == []
        assert await client.list_revisions("no-such-suite") == []
        for suite, month in (("Not A Suite", ""), (SUITE, "February")):
            with pytest.raises(InvalidRequestError):
                await client.list_revisions(suite, month)

        # Each revision's values are the oracle's over the data of its time.
        now = {c: oracle.load_carrier(d) for c, d in dirs.items()}
        for outcome, data in ((one, early), (two, now)):
            compare(QUERY, outcome.period, list(outcome.tables), data, EXACT)
        assert paid_cents(two.tables, "2026-02") > paid_cents(one.tables, "2026-02")
        assert paid_cents(two.tables, "2026-03") > 0

        # Rounds carry their suite and due time, newest first; the filter keeps to the suite.
        summaries = await client.list_rounds(suite=SUITE)
        assert [(s.round_id, s.suite, scheduled_for(s)) for s in summaries] == [
            (second, SUITE, SECOND_DUE),
            (first, SUITE, FIRST_DUE),
        ]

        # The command line: the suite's rounds, then each month's revisions.
        code, out = await run_cli(cli(fed, "round", "list", "--suite", SUITE))
        assert code == 0, out
        assert first in out and second in out and "2026-04-05 06:00" in out
        lines = out.splitlines()
        assert any("2026-02" in x and second in x and x.rstrip("│ ").endswith("yes") for x in lines)
        assert any("2026-02" in x and first in x and "yes" not in x for x in lines)

        # A restart the same month runs nothing again; months later, only the latest missed
        # due time runs.
        clock.set(SECOND_DUE + dt.timedelta(days=3))
        restarted = await fed.restart_coordinator()
        assert await wait_for(lambda: restarted.scheduler.wake_at() is not None)
        assert restarted.scheduler.launched == {}
        assert len(await client.list_rounds(suite=SUITE)) == 2
        clock.set(dt.datetime(2026, 7, 9, tzinfo=dt.UTC))
        assert await wait_for(lambda: len(restarted.scheduler.launched) == 1)
        assert list(restarted.scheduler.launched) == [
            (SUITE, dt.datetime(2026, 7, 5, 6, 0, tzinfo=dt.UTC))
        ]
        assert len(await client.list_rounds(suite=SUITE)) == 3


def scheduled_for_of(revision: operator_pb2.Revision) -> dt.datetime:
    return revision.scheduled_for.ToDatetime(tzinfo=dt.UTC)


@pytest.mark.postgres
async def test_a_suite_keeps_its_runs_in_a_postgresql_store(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    """The suite and due time of a run, its revisions and the memory of what ran, with the
    round store in PostgreSQL."""
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(SCHEDULE)
    clock = ManualClock(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    with postgres.fresh_schema() as schema:
        store = PostgresStore(url=SecretStr(postgres.DSN), schema_name=schema)
        async with SimulatedFederation(
            small(federation_data, 2),
            tmp_path / "run",
            policy=EXACT,
            schedule=schedule,
            clock=clock,
            round_store=store,
        ) as fed:
            assert fed.client is not None and fed.coordinator is not None
            clock.set(FIRST_DUE)
            launched = fed.coordinator.scheduler.launched
            assert await wait_for(lambda: len(launched) == 1)
            first = launched[(SUITE, FIRST_DUE)]
            async for _ in fed.client.watch(first, timeout=120):
                pass
            rows = await fed.client.list_revisions(SUITE)
            assert [(r.month, r.revision, r.round_id) for r in rows] == [
                ("2026-01", 1, first),
                ("2026-02", 1, first),
            ]
            restarted = await fed.restart_coordinator()
            await asyncio.sleep(0.2)
            assert restarted.scheduler.launched == {}
        with RoundStore(PostgresBackend(store)) as elsewhere:
            (record,) = elsewhere.list_rounds(suite=SUITE)
            assert (record.round_id, record.scheduled_for) == (first, FIRST_DUE)
            assert elsewhere.last_scheduled(SUITE) == FIRST_DUE
