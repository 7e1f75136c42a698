"""Combination of carriers' statistics into program-wide figures.

Carriers return additive sufficient statistics per cell, so the program figure is exact over
what they released: each statistic is summed over the carriers that have the cell (integers
exactly, histograms bin by bin) and the catalogue's figure formulas are applied to the sums. A
perturbed carrier value makes its sum perturbed (the noises add: see ``docs/disclosure.md``). A
statistic some carrier withheld cannot be summed: it is left out, and the sum says what it
misses (:class:`~fedoversight.domain.Missing`): how many carriers, and, where their nodes could
say it, at most how much and on how many members — a withheld member count is below the
carrier's floor, a withheld part is at most its released whole. Every figure resting on an
incomplete statistic is incomplete. A carrier without a cell of some key simply has nothing
there (zero), which leaves the sum complete.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedoversight import catalogue
from fedoversight.catalogue import MetricSpec, StatKind
from fedoversight.dimensions import Dimension
from fedoversight.domain import (
    CellKey,
    DisclosureSummary,
    Missing,
    QueryTable,
    Status,
    StatValue,
    StatValueType,
    worst_status,
)
from fedoversight.errors import InvalidRequestError
from fedoversight.histogram import Histogram
from fedoversight.periods import Month, Period

logger = logging.getLogger(__name__)

PROGRAM_SCOPE = "program"
#: The extra formula input: calendar months of the period that fall in the cell.
MONTHS_IN_CELL = "months_in_cell"


@dataclass(frozen=True)
class FigureValue:
    name: str
    #: NaN when an input statistic has no value (or the formula has no answer, e.g. 0 ÷ 0).
    value: float
    #: False when a statistic it rests on is missing or left something out.
    complete: bool


@dataclass(frozen=True)
class CombinedCell:
    key: CellKey
    stats: tuple[StatValue, ...]
    figures: tuple[FigureValue, ...]
    #: The worst status of the statistics (a partial sum of released values is released).
    status: Status

    @property
    def incomplete_stats(self) -> tuple[str, ...]:
        """Names of the statistics whose sums leave out a withheld carrier value."""
        return tuple(s.name for s in self.stats if s.missing is not None)

    @property
    def incomplete(self) -> bool:
        """True when some statistic's sum leaves out a carrier's withheld value."""
        return any(s.missing is not None for s in self.stats)

    def stat(self, name: str) -> StatValue:
        for s in self.stats:
            if s.name == name:
                return s
        raise KeyError(name)

    def figure(self, name: str) -> FigureValue:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True)
class ScopedTable:
    #: A carrier id, or ``"program"`` for the combination over carriers.
    scope: str
    metric: str
    version: int
    group_by: tuple[Dimension, ...]
    cells: tuple[CombinedCell, ...]
    #: A carrier's table: what its node says of the protection applied (None for the program).
    disclosure: DisclosureSummary | None = None


def carrier_table(carrier_id: str, table: QueryTable, period: Period) -> ScopedTable:
    """One carrier's cells as they came (a withheld value with what its node said of it, or
    that one carrier's value is missing), with the figures computed from them."""
    scoped = _combine(carrier_id, {carrier_id: table}, period)
    own = {_normal_key(c.key, table.group_by, carrier_id): c for c in table.cells}
    cells = []
    for cell in scoped.cells:
        came = {s.name: s for s in own[cell.key].stats}
        stats = tuple(
            dataclasses.replace(s, missing=came[s.name].missing)
            if s.name in came and came[s.name].missing is not None
            else s
            for s in cell.stats
        )
        cells.append(dataclasses.replace(cell, stats=stats))
    return dataclasses.replace(scoped, cells=tuple(cells), disclosure=table.disclosure)


def combine(tables: Mapping[str, QueryTable], period: Period) -> ScopedTable:
    """The program-wide table of one query from each carrier's table (carrier id -> table)."""
    return _combine(PROGRAM_SCOPE, tables, period)


def leave_out(table: ScopedTable, carriers: int) -> ScopedTable:
    """``table`` as a program table that also misses ``carriers`` carriers' answers (asked,
    but they did not answer): every statistic and figure is incomplete, by an unknown amount."""
    if carriers <= 0:
        return table
    cells = []
    for cell in table.cells:
        stats = []
        for stat in cell.stats:
            before = stat.missing or Missing(0, 0, 0)
            stats.append(dataclasses.replace(stat, missing=Missing(before.carriers + carriers)))
        figures = tuple(dataclasses.replace(f, complete=False) for f in cell.figures)
        cells.append(dataclasses.replace(cell, stats=tuple(stats), figures=figures))
    return dataclasses.replace(table, cells=tuple(cells))


# --- internals --------------------------------------------------------------------------------


@dataclass
class _Accumulator:
    """The running sum of one statistic of one cell over carriers."""

    value: StatValueType | None = None
    released: bool = False
    perturbed: bool = False
    #: Carriers whose value is left out, and what is known of how much they leave out.
    missing_carriers: int = 0
    at_most: int | None = 0
    members_at_most: int | None = 0

    def add(self, stat: StatValue, kind: StatKind | None, bound: int | None) -> None:
        """``bound``: at most how much a withheld value is (None: unknown)."""
        value = stat.value
        if stat.status.withheld or value is None:
            self.leave_out(stat.missing, bound)
            return
        _check_type(stat.name, value, kind)
        self.released = True
        self.perturbed = self.perturbed or stat.status is Status.PERTURBED
        self.value = value if self.value is None else _add(self.value, value, stat.name)
        if stat.missing is not None:  # released, but leaving something out (histogram bins)
            self.leave_out(stat.missing, stat.missing.at_most)

    def leave_out(self, missing: Missing | None, bound: int | None) -> None:
        """A carrier's part is unknown: withheld (with what it said of it) or absent."""
        self.missing_carriers += missing.carriers if missing is not None else 1
        self.at_most = None if self.at_most is None or bound is None else self.at_most + bound
        members = missing.members_at_most if missing is not None else None
        self.members_at_most = (
            None
            if self.members_at_most is None or members is None
            else self.members_at_most + members
        )

    @property
    def incomplete(self) -> bool:
        return self.missing_carriers > 0

    def result(self, name: str) -> StatValue:
        missing = None
        if self.incomplete:
            missing = Missing(self.missing_carriers, self.at_most, self.members_at_most)
        if not self.released:
            return StatValue(name, Status.WITHHELD, None, missing)
        status = Status.PERTURBED if self.perturbed else Status.RELEASED
        return StatValue(name, status, self.value, missing)


def _check_type(name: str, value: StatValueType, kind: StatKind | None) -> None:
    is_histogram = isinstance(value, Histogram)
    if isinstance(value, bool) or (
        kind is not None and is_histogram != (kind is StatKind.HISTOGRAM)
    ):
        raise InvalidRequestError(f"statistic {name} has a value of the wrong type")


def _add(a: StatValueType, b: StatValueType, name: str) -> StatValueType:
    if isinstance(a, Histogram) and isinstance(b, Histogram):
        return a + b
    if isinstance(a, Histogram) or isinstance(b, Histogram):
        raise InvalidRequestError(f"statistic {name} mixes histograms and numbers")
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    return math.fsum((a, b))


def _check_tables(tables: Mapping[str, QueryTable]) -> tuple[str, int, tuple[Dimension, ...]]:
    if not tables:
        raise InvalidRequestError("nothing to combine")
    shapes = {(t.metric, t.version, t.group_by) for t in tables.values()}
    if len(shapes) != 1:
        raise InvalidRequestError("tables of different queries cannot be combined")
    return shapes.pop()


def _normal_key(key: CellKey, group_by: tuple[Dimension, ...], carrier_id: str) -> CellKey:
    """The key in group-by order, with the carrier dimension set to the carrier it came from."""
    values = dict(key)
    if len(values) != len(key):
        raise InvalidRequestError("a cell key names a dimension twice")
    if Dimension.CARRIER in group_by:
        values[Dimension.CARRIER] = carrier_id
    order = {d: i for i, d in enumerate(group_by)}
    return tuple(sorted(values.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def months_in_cell(key: CellKey, period: Period) -> int:
    """Months of ``period`` within the cell's month, quarter and year keys (all if none)."""
    time_keys = [(d, v) for d, v in key if d in _TIME_DIMENSIONS]
    return sum(1 for m in period.months() if all(_in(m, d, v) for d, v in time_keys))


_TIME_DIMENSIONS = frozenset({Dimension.MONTH, Dimension.QUARTER, Dimension.YEAR})


def _in(month: Month, dim: Dimension, value: str) -> bool:
    if dim is Dimension.MONTH:
        return str(month) == value
    if dim is Dimension.QUARTER:
        return month.quarter() == value
    return f"{month.year:04d}" == value


def _ordered_names(spec: MetricSpec, names: Iterable[str]) -> list[str]:
    declared = [s.name for s in spec.statistics]
    present = set(names)
    return [n for n in declared if n in present]


def _figures(
    spec: MetricSpec,
    stats: Mapping[str, StatValue],
    incomplete: set[str],
    months: int,
) -> tuple[FigureValue, ...]:
    inputs: dict[str, object] = {n: s.value for n, s in stats.items() if s.value is not None}
    inputs[MONTHS_IN_CELL] = months
    out = []
    for fig in spec.figures:
        needed = [n for n in fig.inputs if n != MONTHS_IN_CELL]
        if any(n not in inputs for n in needed):
            out.append(FigureValue(fig.name, math.nan, False))
            continue
        value = float(fig.formula(inputs))
        out.append(FigureValue(fig.name, value, not incomplete.intersection(needed)))
    return tuple(out)


def _combine(scope: str, tables: Mapping[str, QueryTable], period: Period) -> ScopedTable:
    metric, version, group_by = _check_tables(tables)
    spec = catalogue.get_metric(metric, version)
    kinds = {s.name: s.kind for s in spec.statistics}

    by_key: dict[CellKey, list[tuple[dict[str, StatValue], int]]] = {}
    undeclared = 0
    for carrier_id in sorted(tables):
        seen_keys: set[CellKey] = set()
        noise = _count_noise(tables[carrier_id].disclosure)
        for cell in tables[carrier_id].cells:
            key = _normal_key(cell.key, group_by, carrier_id)
            if key in seen_keys:
                raise InvalidRequestError("a carrier's table has two cells with one key")
            seen_keys.add(key)
            stats: dict[str, StatValue] = {}
            for stat in cell.stats:
                if stat.name not in kinds:
                    undeclared += 1
                elif stat.name in stats:
                    raise InvalidRequestError("a cell carries one statistic twice")
                else:
                    stats[stat.name] = stat
            by_key.setdefault(key, []).append((stats, noise))
    if undeclared:
        logger.warning(
            "%d statistics not declared by %s@%d were left out", undeclared, metric, version
        )
    cells = tuple(_combine_cell(spec, key, by_key[key], period) for key in sorted(by_key))
    return ScopedTable(scope, metric, version, group_by, cells)


def _count_noise(summary: DisclosureSummary) -> int:
    """How far a carrier's released counts may be from the truth (its table's noise bound)."""
    return summary.perturbation.count_max_noise if summary.perturbation is not None else 0


def _withheld_bound(
    spec: MetricSpec, name: str, stats: Mapping[str, StatValue], noise: int
) -> int | None:
    """At most how much a carrier's withheld value is: what its node said, or for a part
    withheld because its rest is small, its whole as released (plus the count noise)."""
    stat = stats.get(name)
    if stat is not None and stat.missing is not None and stat.missing.at_most is not None:
        return stat.missing.at_most
    whole_name = spec.statistic(name).part_of
    whole = stats.get(whole_name) if whole_name is not None else None
    if (
        whole is not None
        and isinstance(whole.value, int)
        and whole.missing is None
        and spec.statistic(name).kind is StatKind.MEMBERS
    ):
        return max(0, whole.value + noise)
    return None


def _combine_cell(
    spec: MetricSpec,
    key: CellKey,
    carrier_cells: list[tuple[dict[str, StatValue], int]],
    period: Period,
) -> CombinedCell:
    kinds = {s.name: s.kind for s in spec.statistics}
    names = _ordered_names(spec, (n for c, _ in carrier_cells for n in c))
    stats: dict[str, StatValue] = {}
    for name in names:
        acc = _Accumulator()
        for cell, noise in carrier_cells:
            if name in cell:
                acc.add(cell[name], kinds[name], _withheld_bound(spec, name, cell, noise))
            else:  # this carrier has the cell but not the statistic: its part is unknown
                acc.leave_out(None, None)
        stats[name] = acc.result(name)
    incomplete = {n for n, s in stats.items() if s.missing is not None}
    return CombinedCell(
        key=key,
        stats=tuple(stats.values()),
        figures=_figures(spec, stats, incomplete, months_in_cell(key, period)),
        status=worst_status(s.status for s in stats.values()),
    )
