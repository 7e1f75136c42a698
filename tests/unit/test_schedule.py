"""Scheduled suites: due times, windows, the schedule file, the scheduler on a clock moved by
hand, and how revisions are numbered."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.config import load_coordinator_config
from coordinator.schedule import (
    RETRY_AFTER,
    ManualClock,
    Run,
    Schedule,
    ScheduledRound,
    Scheduler,
    Suite,
    idempotency_key,
    load_schedule,
    revisions,
    shift,
)
from coordinator.store import RoundState
from fedoversight.dimensions import Dimension
from fedoversight.errors import ConfigError, InvalidRequestError
from fedoversight.periods import Month, Period


def suite(**changes: object) -> Suite:
    data: dict[str, object] = {
        "name": "monthly-cost",
        "query": [{"metric": "cost.pmpm", "group_by": ["month"]}],
        "trailing_months": 12,
        "lag_months": 1,
        "day_of_month": 5,
        "hour": 6,
        "minute": 30,
    }
    data.update(changes)
    return Suite.model_validate(data)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


# --- due times and windows --------------------------------------------------------------------


def test_a_run_in_december_covers_the_twelve_months_to_november() -> None:
    s = suite()
    due = s.next_due(utc(2026, 12, 1))
    assert due == utc(2026, 12, 5, 6, 30)
    assert s.window(due) == Period.parse("2025-12:2026-11")
    assert s.last_due(utc(2026, 12, 5, 6, 29)) == utc(2026, 11, 5, 6, 30)
    assert s.last_due(utc(2026, 12, 5, 6, 30)) == due  # due at that very minute
    assert s.next_due(due) == utc(2027, 1, 5, 6, 30)
    assert suite(lag_months=0, trailing_months=3).window(due) == Period.parse("2026-10:2026-12")
    assert idempotency_key("monthly-cost", due) == "schedule:monthly-cost:2026-12-05T06:30Z"


def test_a_due_time_across_the_new_year() -> None:
    s = suite(day_of_month=1, hour=0, minute=0, trailing_months=2, lag_months=1)
    assert s.last_due(utc(2027, 1, 1)) == utc(2027, 1, 1)
    assert s.last_due(utc(2026, 12, 31, 23, 59)) == utc(2026, 12, 1)
    assert s.window(utc(2027, 1, 1)) == Period.parse("2026-11:2026-12")


moments = st.datetimes(
    min_value=dt.datetime(1990, 1, 1),
    max_value=dt.datetime(2150, 12, 31),
    timezones=st.just(dt.UTC),
)


@given(
    now=moments,
    day=st.integers(1, 28),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    trailing=st.integers(1, 120),
    lag=st.integers(0, 24),
)
def test_due_times_bracket_now_a_month_apart_and_windows_end_lag_months_back(
    now: dt.datetime, day: int, hour: int, minute: int, trailing: int, lag: int
) -> None:
    s = suite(day_of_month=day, hour=hour, minute=minute, trailing_months=trailing, lag_months=lag)
    last, upcoming = s.last_due(now), s.next_due(now)
    assert last <= now < upcoming
    for due in (last, upcoming):
        assert (due.day, due.hour, due.minute, due.second) == (day, hour, minute, 0)
    assert Month.of(upcoming) == Month.of(last).next()
    # Nothing is due strictly between them.
    assert s.next_due(last) == upcoming
    window = s.window(last)
    assert len(window.months()) == trailing
    assert window.last == shift(Month.of(last), -lag)


@given(st.integers(1900 * 12, 2200 * 12), st.integers(-500, 500))
def test_shifting_a_month_adds_months(index: int, months: int) -> None:
    month = Month(index // 12, index % 12 + 1)
    moved = shift(month, months)
    assert moved.year * 12 + moved.month - 1 == index + months
    assert shift(moved, -months) == month


# --- the schedule file ------------------------------------------------------------------------


SCHEDULE = """
[[suite]]
name = "monthly-cost"
description = "PMPM by month and state"
trailing_months = 12
lag_months = 1
day_of_month = 5
hour = 6
carriers = ["acme", "blue"]
quorum = 2

[[suite.query]]
metric = "cost.pmpm"
group_by = ["month", "state"]
filters = { program = ["FEHB"] }

[[suite.query]]
metric = "cost.pmpm_by_service_category"
group_by = ["month"]

[[suite]]
name = "quarterly-util"
day_of_month = 10

[[suite.query]]
metric = "util.inpatient"
"""


def test_a_schedule_file_names_its_suites_and_their_queries(tmp_path: Path) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text(SCHEDULE)
    schedule = load_schedule(path)
    assert [s.name for s in schedule.suites] == ["monthly-cost", "quarterly-util"]
    cost = schedule.suite("monthly-cost")
    assert cost is not None
    pmpm, by_category = cost.query_specs()
    assert (pmpm.metric, pmpm.version) == ("cost.pmpm", 1)
    assert pmpm.group_by == (Dimension.MONTH, Dimension.STATE)
    assert pmpm.filters == ((Dimension.PROGRAM, ("FEHB",)),)
    # A metric grouping by one of a few dimensions gets one when none is given, as on the
    # command line.
    assert Dimension.MONTH in by_category.group_by
    assert by_category.group_by[-1] in (Dimension.SERVICE_CATEGORY, Dimension.SERVICE_CATEGORY_2)
    assert (cost.carriers, cost.quorum) == (("acme", "blue"), 2)
    assert "cost.pmpm by month, state where program in FEHB" in cost.describe()
    assert "on day 5 of each month at 06:00 UTC" in cost.describe()
    util = schedule.suite("quarterly-util")
    assert util is not None and (util.trailing_months, util.lag_months) == (12, 1)
    assert "every registered carrier" in util.describe()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[suite]]\nname = "x"\nwhen = 1\n[[suite.query]]\nmetric = "cost.pmpm"', "suite[0].when"),
        ('[[suite]]\nname = "x"\n[[suite.query]]\nmetric = "cost.nothing"', "unknown metric"),
        (
            '[[suite]]\nname = "x"\n[[suite.query]]\nmetric = "rx.rebate_share"\ngroup_by=["sex"]',
            "does not accept",
        ),
        ('[[suite]]\nname = "Bad Name"\n[[suite.query]]\nmetric = "cost.pmpm"', "suite name"),
        ('[[suite]]\nname = "x"', "suite[0].query: required"),
        (
            '[[suite]]\nname = "x"\nday_of_month = 31\n[[suite.query]]\nmetric = "cost.pmpm"',
            "suite[0].day_of_month",
        ),
        (
            '[[suite]]\nname = "x"\n[[suite.query]]\nmetric = "cost.pmpm"\n'
            '[[suite]]\nname = "x"\n[[suite.query]]\nmetric = "cost.pmpm"',
            "a suite name is used twice",
        ),
        (
            '[[suite]]\nname = "x"\ncarriers = ["a"]\nquorum = 2\n'
            '[[suite.query]]\nmetric = "cost.pmpm"',
            "quorum larger",
        ),
        ("[[suite]\n", "not valid TOML"),
    ],
)
def test_a_bad_schedule_is_a_config_error_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_schedule(path)
    assert message in caught.value.detail
    assert "pydantic" not in caught.value.detail and "https://" not in caught.value.detail


def test_the_config_names_the_schedule_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "coordinator.toml"
    config.write_text('insecure = true\nschedule = "schedule.toml"\n')
    assert load_coordinator_config(config).schedule == tmp_path / "conf" / "schedule.toml"
    with pytest.raises(ConfigError, match="cannot read schedule"):
        load_schedule(tmp_path / "conf" / "schedule.toml")


# --- the scheduler ----------------------------------------------------------------------------


class Launches:
    """A round store's memory of runs, and a launcher recording them."""

    def __init__(self) -> None:
        self.ran: dict[tuple[str, dt.datetime], str] = {}
        self.failing = False

    async def last_run(self, suite: str) -> dt.datetime | None:
        return max((due for name, due in self.ran if name == suite), default=None)

    async def launch(self, run: Run) -> str:
        if self.failing:
            raise InvalidRequestError("unknown carriers: gone")
        assert run.key == idempotency_key(run.suite.name, run.due)
        round_id = f"r{len(self.ran) + 1}"
        self.ran[(run.suite.name, run.due)] = round_id
        return round_id


def scheduler(clock: ManualClock, launches: Launches, *suites: Suite) -> Scheduler:
    return Scheduler(
        Schedule.model_validate({"suite": [s.model_dump(by_alias=True) for s in suites]}),
        clock=clock,
        last_run=launches.last_run,
        launch=launches.launch,
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_due_time_runs_once_and_a_restart_does_not_run_it_again() -> None:
    clock = ManualClock(utc(2026, 3, 1))
    launches = Launches()
    s = suite(trailing_months=2)
    first = scheduler(clock, launches, s)
    task = asyncio.create_task(first.run())
    try:
        await settle()
        # A suite that never ran does not catch up February's due time: it waits for March's.
        assert launches.ran == {}
        clock.set(utc(2026, 3, 5, 6, 29))
        await settle()
        assert launches.ran == {}
        clock.set(utc(2026, 3, 5, 6, 30))
        await settle()
        assert list(launches.ran) == [("monthly-cost", utc(2026, 3, 5, 6, 30))]
        assert first.launched[("monthly-cost", utc(2026, 3, 5, 6, 30))] == "r1"
        clock.set(utc(2026, 4, 5, 6, 30))
        await settle()
        assert list(launches.ran)[1:] == [("monthly-cost", utc(2026, 4, 5, 6, 30))]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # A restart the same month finds the run done.
    clock.set(utc(2026, 4, 20))
    assert await scheduler(clock, launches, s).run_due() == []
    assert len(launches.ran) == 2


async def test_after_downtime_only_the_latest_missed_due_time_runs() -> None:
    clock = ManualClock(utc(2026, 3, 10))
    launches = Launches()
    s = suite()
    other = suite(name="other", day_of_month=20)
    launches.ran = {
        ("monthly-cost", utc(2026, 3, 5, 6, 30)): "r0",
        ("other", utc(2026, 2, 20, 6, 30)): "r00",
    }
    assert await scheduler(clock, launches, s, other).run_due() == []
    # Down from March 10 to July 12: the first suite missed April to July, the other March to
    # June; each runs its latest once.
    clock.set(utc(2026, 7, 12))
    again = scheduler(clock, launches, s, other)
    assert len(await again.run_due()) == 2
    assert await again.run_due() == []
    assert list(launches.ran)[2:] == [
        ("monthly-cost", utc(2026, 7, 5, 6, 30)),
        ("other", utc(2026, 6, 20, 6, 30)),
    ]
    assert again.wake_at() == utc(2026, 7, 20, 6, 30)


async def test_a_run_that_cannot_be_created_is_tried_again_later() -> None:
    clock = ManualClock(utc(2026, 3, 5, 6, 30))
    launches = Launches()
    launches.failing = True
    s = scheduler(clock, launches, suite())
    assert await s.run_due() == []
    assert s.wake_at() == utc(2026, 3, 5, 6, 30) + RETRY_AFTER
    launches.failing = False
    assert await s.run_due() == []  # not before the retry time
    clock.set(utc(2026, 3, 5, 6, 30) + RETRY_AFTER)
    assert await s.run_due() == ["r1"]
    assert launches.ran == {("monthly-cost", utc(2026, 3, 5, 6, 30)): "r1"}


async def test_the_manual_clock_wakes_sleepers_when_their_time_comes() -> None:
    clock = ManualClock(utc(2026, 1, 1))
    woken: list[int] = []

    async def sleeper(day: int) -> None:
        await clock.sleep_until(utc(2026, 1, day))
        woken.append(day)

    tasks = [asyncio.create_task(sleeper(d)) for d in (3, 2, 1)]
    await settle()
    assert woken == [1]
    clock.set(utc(2026, 1, 2))
    await settle()
    assert woken == [1, 2]
    with pytest.raises(ValueError, match="does not go back"):
        clock.set(utc(2025, 1, 1))
    clock.set(utc(2026, 2, 1))
    await asyncio.gather(*tasks)
    assert woken == [1, 2, 3]


# --- revisions --------------------------------------------------------------------------------


def scheduled(round_id: str, due: dt.datetime, period: str, state: RoundState) -> ScheduledRound:
    return ScheduledRound(round_id, due, Period.parse(period), state)


def test_each_run_covering_a_month_is_its_next_revision() -> None:
    rounds = [
        # Given out of order: revisions follow the due times.
        scheduled("r3", utc(2026, 5, 5), "2026-03:2026-04", RoundState.PARTIAL),
        scheduled("r1", utc(2026, 3, 5), "2026-01:2026-02", RoundState.COMPLETE),
        scheduled("r2", utc(2026, 4, 5), "2026-02:2026-03", RoundState.COMPLETE),
        # A failed run computed nothing: not a revision.
        scheduled("r4", utc(2026, 6, 5), "2026-04:2026-05", RoundState.FAILED),
    ]
    found = [(str(r.month), r.revision, r.round_id, r.latest) for r in revisions(rounds)]
    assert found == [
        ("2026-01", 1, "r1", True),
        ("2026-02", 1, "r1", False),
        ("2026-02", 2, "r2", True),
        ("2026-03", 1, "r2", False),
        ("2026-03", 2, "r3", True),
        ("2026-04", 1, "r3", True),
    ]
    only = revisions(rounds, Month.parse("2026-03"))
    assert [(r.revision, r.round_id, r.state) for r in only] == [
        (1, "r2", RoundState.COMPLETE),
        (2, "r3", RoundState.PARTIAL),
    ]
    assert revisions(rounds, Month.parse("2026-05")) == []


def test_schedule_show_says_each_suite_and_its_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from coordinator.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "schedule.toml").write_text(SCHEDULE)
    config = tmp_path / "coordinator.toml"
    config.write_text('insecure = true\nschedule = "schedule.toml"\n')
    result = CliRunner().invoke(
        app, ["schedule", "show", "--config", str(config), "--at", "2026-12-01T00:00"]
    )
    assert result.exit_code == 0, result.output
    assert "monthly-cost — PMPM by month and state" in result.output
    assert "next due 2026-12-05 06:00 UTC, covering 2025-12:2026-11" in result.output
    assert "quarterly-util" in result.output
    assert "next due 2026-12-10 00:00 UTC, covering 2025-12:2026-11" in result.output
    # A schedule that does not hold is a usage error naming the problem.
    (tmp_path / "schedule.toml").write_text('[[suite]]\nname = "x"\n')
    result = CliRunner().invoke(app, ["schedule", "show", "--config", str(config)])
    assert result.exit_code == 2
    assert "suite[0].query: required" in result.output
