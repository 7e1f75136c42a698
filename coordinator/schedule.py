"""Scheduled suites: rounds the coordinator runs by itself, month after month.

A schedule file (TOML, named by the coordinator config's ``schedule``) lists suites. Each suite
is a set of queries over a trailing window of months, run once a month at a fixed UTC time::

    [[suite]]
    name = "monthly-cost"
    trailing_months = 12   # the window: this many months ...
    lag_months = 1         # ... ending this many months before the month of the run
    day_of_month = 5       # run on the 5th at 06:30 UTC
    hour = 6
    minute = 30

    [[suite.query]]
    metric = "cost.pmpm"
    group_by = ["month"]

A run due on 2026-12-05 06:30 UTC covers 2025-12 to 2026-11. Each run is a round created
exactly as ``CreateRound`` creates one (signed with the coordinator's operator key), with the
idempotency key ``schedule:SUITE:DUE`` and the suite and due time recorded beside it in the
round store: a due time runs once, across restarts. After downtime only the most recent due
time missed is run (once, at start), not every month missed. A suite that never ran waits for
its first due time while the coordinator is up (nothing is caught up for it).

A month is covered by every run whose window holds it, so it is computed again as claims run
out: revision n of (suite, month) is the n-th such round, in due-time order, that finished
with figures (complete or partial; see :func:`revisions`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coordinator.store import RoundState
from fedoversight import catalogue, wire
from fedoversight.config import describe_validation_error
from fedoversight.dimensions import Dimension
from fedoversight.domain import QuerySpec
from fedoversight.errors import ConfigError, OversightError
from fedoversight.periods import MAX_MONTHS, Month, Period

log = logging.getLogger(__name__)

#: A suite's name: lowercase letters, digits, '-' and '_' (it is part of idempotency keys).
SUITE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: How long a run that could not be created waits before it is tried again (clock time).
RETRY_AFTER = dt.timedelta(minutes=5)
#: Prefix of the idempotency key of a scheduled round.
KEY_PREFIX = "schedule:"


class QueryEntry(BaseModel):
    """One query of a suite, as ``oversight round run`` takes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="a catalogue metric, e.g. cost.pmpm")
    version: int = Field(default=0, ge=0, description="the metric's version (0: the latest)")
    group_by: tuple[Dimension, ...] = Field(default=(), description="dimensions to group by")
    filters: dict[Dimension, tuple[str, ...]] = Field(
        default_factory=dict, description="keep rows whose dimension has one of these values"
    )
    parameters: dict[str, float] = Field(default_factory=dict, description="metric parameters")

    @model_validator(mode="after")
    def _valid(self) -> QueryEntry:
        self.spec()
        return self

    def spec(self) -> QuerySpec:
        """The query, validated against the catalogue (the metric's one-of dimension added
        when none is grouped by, as the command line does)."""
        try:
            metric = catalogue.get_metric(self.metric, self.version or None)
            group = tuple(self.group_by)
            if metric.one_of and not metric.one_of.intersection(group):
                group = (*group, min(metric.one_of))
            return wire.make_query(
                metric.name,
                metric.version,
                group,
                dict(self.filters) or None,
                dict(self.parameters) or None,
            )
        except OversightError as exc:
            raise ValueError(f"{self.metric}: {exc.detail}") from None


class Suite(BaseModel):
    """Queries over a trailing window of months, run monthly at a fixed UTC time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the suite's id: lowercase letters, digits, '-' and '_'")
    description: str = Field(default="", description="what the suite is for, in words")
    queries: tuple[QueryEntry, ...] = Field(
        alias="query", min_length=1, max_length=wire.MAX_QUERIES, description="[[suite.query]]"
    )
    trailing_months: int = Field(
        default=12, ge=1, le=MAX_MONTHS, description="how many months each run covers"
    )
    lag_months: int = Field(
        default=1,
        ge=0,
        le=120,
        description="months between the last month covered and the month of the run (1: a run"
        " in December covers up to November)",
    )
    day_of_month: int = Field(default=1, ge=1, le=28, description="day of the month to run on")
    hour: int = Field(default=0, ge=0, le=23, description="hour to run at (UTC)")
    minute: int = Field(default=0, ge=0, le=59, description="minute to run at (UTC)")
    carriers: tuple[str, ...] = Field(
        default=(), description="carrier ids to ask (empty: every registered carrier)"
    )
    quorum: int = Field(default=0, ge=0, description="carriers needed (0: one)")
    deadline_seconds: int = Field(
        default=0, ge=0, description="the round's deadline (0: the coordinator's default)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SUITE_NAME.fullmatch(value):
            raise ValueError("suite name: lowercase letters, digits, '-' or '_' (64 at most)")
        return value

    @field_validator("carriers")
    @classmethod
    def _carriers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a carrier is named twice")
        if not all(wire.ID_RE.fullmatch(c) for c in value):
            raise ValueError("carrier ids: lowercase letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _quorum(self) -> Suite:
        if self.carriers and self.quorum > len(self.carriers):
            raise ValueError("quorum larger than the carriers asked")
        return self

    def query_specs(self) -> list[QuerySpec]:
        return [q.spec() for q in self.queries]

    def due_in(self, month: Month) -> dt.datetime:
        """When the suite is due in ``month``."""
        return dt.datetime(
            month.year, month.month, self.day_of_month, self.hour, self.minute, tzinfo=dt.UTC
        )

    def last_due(self, now: dt.datetime) -> dt.datetime:
        """The latest due time at or before ``now``."""
        month = Month.of(now.astimezone(dt.UTC))
        due = self.due_in(month)
        return due if due <= now else self.due_in(shift(month, -1))

    def next_due(self, now: dt.datetime) -> dt.datetime:
        """The first due time strictly after ``now``."""
        month = Month.of(now.astimezone(dt.UTC))
        due = self.due_in(month)
        return due if due > now else self.due_in(shift(month, 1))

    def window(self, due: dt.datetime) -> Period:
        """The months a run due at ``due`` covers."""
        last = shift(Month.of(due.astimezone(dt.UTC)), -self.lag_months)
        return Period(shift(last, 1 - self.trailing_months), last)

    def describe(self) -> str:
        """The suite in words."""
        queries = "; ".join(_query_text(q) for q in self.query_specs())
        lag = (
            "the month of the run"
            if self.lag_months == 0
            else "the month before the run"
            if self.lag_months == 1
            else f"{self.lag_months} months before the run"
        )
        carriers = ", ".join(self.carriers) if self.carriers else "every registered carrier"
        return (
            f"{queries}; the {self.trailing_months} months up to {lag}; on day"
            f" {self.day_of_month} of each month at {self.hour:02d}:{self.minute:02d} UTC;"
            f" asking {carriers}"
        )


def _query_text(query: QuerySpec) -> str:
    text = query.metric
    if query.group_by:
        text += " by " + ", ".join(str(d) for d in query.group_by)
    if query.filters:
        text += " where " + " and ".join(f"{d} in {','.join(v)}" for d, v in query.filters)
    return text


class Schedule(BaseModel):
    """A schedule file: its suites."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suites: tuple[Suite, ...] = Field(default=(), alias="suite", description="[[suite]]")

    @model_validator(mode="after")
    def _unique(self) -> Schedule:
        names = [s.name for s in self.suites]
        if len(set(names)) != len(names):
            raise ValueError("a suite name is used twice")
        return self

    def suite(self, name: str) -> Suite | None:
        return next((s for s in self.suites if s.name == name), None)


def load_schedule(path: Path) -> Schedule:
    """Read a schedule file; every problem is a :class:`ConfigError` naming its key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read schedule {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"schedule {path} is not valid TOML: {exc}") from None
    try:
        return Schedule.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid schedule in {path}:\n{describe_validation_error(exc)}"
        ) from None


def shift(month: Month, months: int) -> Month:
    """``month`` moved by ``months`` (negative: back)."""
    index = month.year * 12 + month.month - 1 + months
    return Month(index // 12, index % 12 + 1)


def idempotency_key(suite: str, due: dt.datetime) -> str:
    """The idempotency key of a suite's run due at ``due``."""
    return f"{KEY_PREFIX}{suite}:{due.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%MZ')}"


# --- clocks -----------------------------------------------------------------------------------


class Clock(Protocol):
    """What the scheduler reads the time from, and waits on."""

    def now(self) -> dt.datetime:
        """The time now (timezone-aware)."""
        ...

    async def sleep_until(self, when: dt.datetime) -> None:
        """Return at ``when`` (at once when it is past)."""
        ...


class SystemClock:
    """The host's clock. Waits in steps of a minute at most, so a clock set forward (or a host
    woken from sleep) is noticed within a minute."""

    STEP = 60.0

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep_until(self, when: dt.datetime) -> None:
        while (delay := (when - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(delay, self.STEP))


class ManualClock:
    """A clock moved by hand (tests and rehearsals of a schedule): time stands still until
    :meth:`set` moves it, which wakes whoever waits for a time now reached."""

    def __init__(self, now: dt.datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("a clock keeps timezone-aware times")
        self._now = now
        self._waiters: list[tuple[dt.datetime, asyncio.Future[None]]] = []

    def now(self) -> dt.datetime:
        return self._now

    def set(self, when: dt.datetime) -> None:
        """Move the clock to ``when`` (never back)."""
        if when < self._now:
            raise ValueError("a clock does not go back")
        self._now = when
        waiting = []
        for due, waiter in self._waiters:
            if due <= when:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((due, waiter))
        self._waiters = waiting

    async def sleep_until(self, when: dt.datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((when, waiter))
        await waiter


# --- the scheduler ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A suite's run: what a scheduled round asks, and when it was due."""

    suite: Suite
    due: dt.datetime

    @property
    def period(self) -> Period:
        return self.suite.window(self.due)

    @property
    def key(self) -> str:
        return idempotency_key(self.suite.name, self.due)


class RunLauncher(Protocol):
    """Creates a run's round (the coordinator's CreateRound path); returns its id."""

    async def __call__(self, run: Run) -> str: ...


class Scheduler:
    """Runs each suite at its due times. ``last_run(suite)`` is the due time of the suite's
    latest run (the round store remembers; None when it never ran); ``launch`` creates a run's
    round."""

    def __init__(
        self,
        schedule: Schedule,
        *,
        clock: Clock,
        last_run: Callable[[str], Awaitable[dt.datetime | None]],
        launch: RunLauncher,
    ) -> None:
        self.schedule = schedule
        self.clock = clock
        self._last_run = last_run
        self._launch = launch
        #: A suite that never ran runs due times from here on.
        self._since = clock.now()
        #: When a suite's failed run may be tried again.
        self._retry_at: dict[str, dt.datetime] = {}
        #: Round ids created, by (suite, due) (this process's runs, for logs and tests).
        self.launched: dict[tuple[str, dt.datetime], str] = {}

    async def _is_done(self, suite: str, due: dt.datetime) -> bool:
        """Whether ``due`` ran, or need not run: a run due then or later exists, or the suite
        never ran and ``due`` came before this scheduler started."""
        last = await self._last_run(suite)
        return due <= last if last is not None else due < self._since

    async def run_due(self) -> list[str]:
        """Run every suite's most recent due time if it has not run; the rounds created."""
        now = self.clock.now()
        created = []
        for suite in self.schedule.suites:
            retry = self._retry_at.get(suite.name)
            if retry is not None and now < retry:
                continue
            due = suite.last_due(now)
            run = Run(suite, due)
            try:
                if await self._is_done(suite.name, due):
                    continue
                round_id = await self._launch(run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                detail = exc.detail if isinstance(exc, OversightError) else type(exc).__name__
                log.error(
                    "suite %s: the run due %s could not be created (%s); trying again in %s",
                    suite.name,
                    f"{due:%Y-%m-%d %H:%M}",
                    detail,
                    RETRY_AFTER,
                    exc_info=not isinstance(exc, OversightError),
                )
                self._retry_at[suite.name] = now + RETRY_AFTER
                continue
            self._retry_at.pop(suite.name, None)
            self.launched[(suite.name, due)] = round_id
            log.info(
                "suite %s: round %s for %s (due %s)",
                suite.name,
                round_id,
                run.period,
                f"{due:%Y-%m-%d %H:%M}",
                extra={"round_id": round_id},
            )
            created.append(round_id)
        return created

    def wake_at(self) -> dt.datetime | None:
        """When something is next due (or a failed run is tried again)."""
        now = self.clock.now()
        times = [s.next_due(now) for s in self.schedule.suites]
        times += [t for t in self._retry_at.values() if t > now]
        return min(times, default=None)

    async def run(self) -> None:
        """Run due suites until cancelled."""
        if not self.schedule.suites:
            return
        log.info(
            "schedule: %d suites, next due %s",
            len(self.schedule.suites),
            f"{self.wake_at():%Y-%m-%d %H:%M} UTC",
        )
        while True:
            await self.run_due()
            wake = self.wake_at()
            if wake is None:
                return
            await self.clock.sleep_until(wake)


# --- revisions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledRound:
    """A finished scheduled round of a suite, as revisions are counted from."""

    round_id: str
    scheduled_for: dt.datetime
    period: Period
    state: RoundState

    @property
    def has_figures(self) -> bool:
        """Whether it finished with figures (complete or partial): a revision."""
        return self.state in (RoundState.COMPLETE, RoundState.PARTIAL)


@dataclass(frozen=True)
class Revision:
    """Revision ``revision`` (1 first) of ``month`` in a suite: computed by ``round_id``."""

    month: Month
    revision: int
    round_id: str
    scheduled_for: dt.datetime
    state: RoundState
    #: The month's newest revision.
    latest: bool


def revisions(rounds: Sequence[ScheduledRound], month: Month | None = None) -> list[Revision]:
    """Each month's revisions (of ``month`` only, when given), by month then revision: the
    n-th revision of a month is the n-th round covering it, in due-time order, among the
    rounds that finished with figures (open and failed rounds are not revisions)."""
    counted: dict[Month, list[ScheduledRound]] = {}
    for r in sorted(rounds, key=lambda r: (r.scheduled_for, r.round_id)):
        if not r.has_figures:
            continue
        for m in r.period.months():
            if month is None or m == month:
                counted.setdefault(m, []).append(r)
    out: list[Revision] = []
    for m in sorted(counted):
        chain = counted[m]
        out.extend(
            Revision(m, n, r.round_id, r.scheduled_for, r.state, latest=n == len(chain))
            for n, r in enumerate(chain, start=1)
        )
    return out
