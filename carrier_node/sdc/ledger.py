"""The release ledger and the differencing guard.

Every released cell is recorded with the definition of its population: the months it covers
and, for each dimension, the values it is restricted to (by its key and the query's filters).
A new cell whose population is nested in an earlier one's (or contains it) — nested filters,
all-but-one, a longer or shorter window, a finer grouping of the same population — and whose
count differs from it by 1 to ``threshold - 1`` would let anyone subtract the two and learn
about a small group, so the guard refuses it. The ledger lives in the node's SQLite state and
survives restarts.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedoversight.dimensions import Dimension
from fedoversight.domain import CellKey
from fedoversight.periods import Month, Period

#: Dimensions that describe who a member is in a month (the enrolled population).
MEMBER_DIMENSIONS = frozenset(
    {
        Dimension.PROGRAM, Dimension.PLAN_CODE, Dimension.AGE_BAND, Dimension.SEX,
        Dimension.STATE, Dimension.MEDICARE_PRIMARY, Dimension.ENROLLEE_TYPE,
    }
)
TIME_DIMENSIONS = frozenset({Dimension.MONTH, Dimension.QUARTER, Dimension.YEAR})
#: Statistics that count the enrolled population, whatever metric returns them.
ENROLLED_STATISTICS = frozenset({"members", "member_months"})


@dataclass(frozen=True)
class Box:
    """A population: months covered and, per dimension, the allowed values (absent = any)."""

    months: frozenset[str]
    restrictions: tuple[tuple[Dimension, frozenset[str]], ...]

    def within(self, other: Box) -> bool:
        """Every member-month of ``self`` is one of ``other``'s."""
        if not self.months <= other.months:
            return False
        mine = dict(self.restrictions)
        for dim, allowed in other.restrictions:
            if dim not in mine or not mine[dim] <= allowed:
                return False
        return True

    def to_json(self) -> str:
        return json.dumps(
            {"months": sorted(self.months),
             "r": {str(d): sorted(v) for d, v in self.restrictions}},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Box:
        data = json.loads(text)
        return cls(
            frozenset(data["months"]),
            tuple(sorted((Dimension(d), frozenset(v)) for d, v in data["r"].items())),
        )


@functools.lru_cache(maxsize=1024)
def _period_months(period: Period) -> frozenset[str]:
    return frozenset(str(m) for m in period.months())


@functools.lru_cache(maxsize=4096)
def _months_of(dim: Dimension, value: str, period: Period) -> frozenset[str]:
    months = period.months()
    if dim is Dimension.MONTH:
        return frozenset(str(m) for m in months if str(m) == value)
    if dim is Dimension.QUARTER:
        return frozenset(str(m) for m in months if m.quarter() == value)
    return frozenset(str(m) for m in months if str(m.year) == value)


def cell_box(
    period: Period,
    key: CellKey,
    filters: Mapping[Dimension, tuple[str, ...]],
    dimensions: frozenset[Dimension] | None = None,
) -> Box:
    """The population of a cell; ``dimensions`` limits which restrictions count."""
    return _cell_box(period, key, tuple(filters.items()), dimensions)


@functools.lru_cache(maxsize=65536)
def _cell_box(
    period: Period,
    key: CellKey,
    filters: tuple[tuple[Dimension, tuple[str, ...]], ...],
    dimensions: frozenset[Dimension] | None,
) -> Box:
    months = _period_months(period)
    allowed: dict[Dimension, frozenset[str]] = {d: frozenset(v) for d, v in filters}
    for dim, value in key:
        allowed[dim] = allowed.get(dim, frozenset({value})) & {value}
    for dim in list(allowed):
        if dim in TIME_DIMENSIONS:
            months = months & frozenset().union(
                *(_months_of(dim, v, period) for v in allowed.pop(dim))
            )
        elif dim is Dimension.CARRIER or (dimensions is not None and dim not in dimensions):
            allowed.pop(dim)
    return Box(months, tuple(sorted(allowed.items())))


@dataclass(frozen=True)
class Release:
    family: str
    statistic: str
    box: Box
    value: int


def family_of(metric: str, statistic: str) -> str:
    return "enrolled" if statistic in ENROLLED_STATISTICS else metric


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
  id INTEGER PRIMARY KEY,
  family TEXT NOT NULL,
  statistic TEXT NOT NULL,
  box TEXT NOT NULL,
  value INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  released_at TEXT NOT NULL
);
"""


class Ledger:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # Per family and statistic, each distinct population released and the values it was
        # released with (usually one).
        self._index: dict[tuple[str, str], dict[Box, set[int]]] = defaultdict(dict)
        self._rows = 0
        for family, statistic, box, value in self._db.execute(
            "SELECT family, statistic, box, value FROM ledger"
        ):
            self._index[(family, statistic)].setdefault(Box.from_json(box), set()).add(int(value))
            self._rows += 1

    def __len__(self) -> int:
        """Distinct releases kept."""
        return self._rows

    def conflict(
        self, release: Release, threshold: int, pending: Iterable[Release] = ()
    ) -> Release | None:
        """An earlier (or pending) release that, with ``release``, isolates a small group."""
        stream = (release.family, release.statistic)
        earlier = (
            (box, value)
            for box, values in self._index.get(stream, {}).items() for value in sorted(values)
        )
        candidates = [*earlier, *((p.box, p.value) for p in pending
                                  if (p.family, p.statistic) == stream)]
        for box, value in candidates:
            if box == release.box:
                continue  # the same population again: nothing new is learnt
            nested = release.box.within(box) or box.within(release.box)
            if nested and 0 < abs(value - release.value) < threshold:
                return Release(release.family, release.statistic, box, value)
        return None

    def record(self, releases: Iterable[Release], request_id: str) -> None:
        """Keep the populations released. One already kept with the same value (the enrolled
        population of a cell that several metrics report, a round run again) adds nothing the
        guard could use and is not kept twice; the audit log has every release."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._lock:
            fresh: dict[tuple[str, str, Box, int], Release] = {}
            for r in releases:
                if r.value not in self._index.get((r.family, r.statistic), {}).get(r.box, ()):
                    fresh.setdefault((r.family, r.statistic, r.box, r.value), r)
            if not fresh:
                return
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO ledger (family, statistic, box, value, request_id, released_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(r.family, r.statistic, r.box.to_json(), r.value, request_id, now)
                 for r in fresh.values()],
            )
            self._db.execute("COMMIT")
            for r in fresh.values():
                self._index[(r.family, r.statistic)].setdefault(r.box, set()).add(r.value)
            self._rows += len(fresh)

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["Box", "Ledger", "Month", "Release", "cell_box", "family_of"]
