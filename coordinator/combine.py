"""Combination of carriers' statistics into program-wide figures.

Carriers return additive sufficient statistics per cell, so the program figure is exact: each
statistic is summed over the carriers that have the cell (integers exactly, histograms bin by
bin) and the catalogue's figure formulas are applied to the sums. A statistic some carrier
suppressed cannot be summed: it is left out, and the combined statistic and cell are marked
incomplete, as is every figure resting on it. A carrier without a cell of some key simply has
nothing there (zero), which leaves the sum complete.
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
    QueryTable,
    Status,
    StatValue,
    StatValueType,
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
    #: True when a carrier's statistic of this cell was suppressed, so a sum leaves it out.
    incomplete: bool
    #: Names of the statistics whose sums leave out a suppressed carrier value.
    incomplete_stats: tuple[str, ...] = ()

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
    """One carrier's cells as they came, with the figures computed from them."""
    return dataclasses.replace(
        _combine(carrier_id, {carrier_id: table}, period), disclosure=table.disclosure
    )


def combine(tables: Mapping[str, QueryTable], period: Period) -> ScopedTable:
    """The program-wide table of one query from each carrier's table (carrier id -> table)."""
    return _combine(PROGRAM_SCOPE, tables, period)


# --- internals --------------------------------------------------------------------------------


@dataclass
class _Accumulator:
    """The running sum of one statistic of one cell over carriers."""

    value: StatValueType | None = None
    released: bool = False
    perturbed: bool = False
    #: The worst suppression seen, if any carrier's value was left out.
    suppressed: Status | None = None

    def add(self, stat: StatValue, kind: StatKind | None) -> None:
        value = stat.value
        if stat.status.suppressed or value is None:
            self._left_out(stat.status)
            return
        _check_type(stat.name, value, kind)
        self.released = True
        self.perturbed = self.perturbed or stat.status is Status.PERTURBED
        self.value = value if self.value is None else _add(self.value, value, stat.name)

    def leave_out_missing(self) -> None:
        """A carrier has the cell but not this statistic: its part is unknown."""
        self._left_out(Status.SUPPRESSED_PRIMARY)

    def _left_out(self, status: Status) -> None:
        if not status.suppressed:  # released but without a value: nothing to add
            status = Status.SUPPRESSED_PRIMARY
        if self.suppressed is None or status is Status.SUPPRESSED_PRIMARY:
            self.suppressed = status

    @property
    def incomplete(self) -> bool:
        return self.suppressed is not None

    def result(self, name: str) -> StatValue:
        if not self.released:
            return StatValue(name, self.suppressed or Status.SUPPRESSED_PRIMARY, None)
        return StatValue(name, Status.PERTURBED if self.perturbed else Status.RELEASED, self.value)


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


def _worst(statuses: Iterable[Status]) -> Status:
    seen = set(statuses)
    for worst in (Status.SUPPRESSED_PRIMARY, Status.SUPPRESSED_COMPLEMENTARY, Status.PERTURBED):
        if worst in seen:
            return worst
    return Status.RELEASED


def _combine(scope: str, tables: Mapping[str, QueryTable], period: Period) -> ScopedTable:
    metric, version, group_by = _check_tables(tables)
    spec = catalogue.get_metric(metric, version)
    kinds = {s.name: s.kind for s in spec.statistics}

    by_key: dict[CellKey, list[dict[str, StatValue]]] = {}
    undeclared = 0
    for carrier_id in sorted(tables):
        seen_keys: set[CellKey] = set()
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
            by_key.setdefault(key, []).append(stats)
    if undeclared:
        logger.warning(
            "%d statistics not declared by %s@%d were left out", undeclared, metric, version
        )
    cells = tuple(_combine_cell(spec, key, by_key[key], period) for key in sorted(by_key))
    return ScopedTable(scope, metric, version, group_by, cells)


def _combine_cell(
    spec: MetricSpec, key: CellKey, carrier_cells: list[dict[str, StatValue]], period: Period
) -> CombinedCell:
    kinds = {s.name: s.kind for s in spec.statistics}
    names = _ordered_names(spec, (n for c in carrier_cells for n in c))
    stats: dict[str, StatValue] = {}
    incomplete: list[str] = []
    for name in names:
        acc = _Accumulator()
        for cell in carrier_cells:
            if name in cell:
                acc.add(cell[name], kinds[name])
            else:  # this carrier has the cell but not the statistic: its part is unknown
                acc.leave_out_missing()
        stats[name] = acc.result(name)
        if acc.incomplete:
            incomplete.append(name)
    return CombinedCell(
        key=key,
        stats=tuple(stats.values()),
        figures=_figures(spec, stats, set(incomplete), months_in_cell(key, period)),
        status=_worst(s.status for s in stats.values()),
        incomplete=bool(incomplete),
        incomplete_stats=tuple(incomplete),
    )
