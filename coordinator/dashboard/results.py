"""A round's tables as the results page shows them: one section per query, each with its
program table and every carrier's, every value marked withheld, incomplete or unreliable.

**Unreliable** follows the NCHS data presentation standards: a rate resting on fewer than
:data:`UNRELIABLE_BELOW` cases has a relative standard error of about 30% or more and is too
small for a stable rate. The cases of a figure are its first input when that counts people or
events (stays, visits, screened members), otherwise the members that input rests on (the
claimants behind dollars). It is a flag on a released value, separate from withheld (not
released at all) and incomplete (a sum that leaves out some carrier's value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.combine import PROGRAM_SCOPE, CombinedCell, ScopedTable
from fedoversight import catalogue
from fedoversight.catalogue import MetricSpec, StatKind
from fedoversight.dimensions import Dimension
from fedoversight.errors import UnknownMetricError
from fedoversight.histogram import Histogram

#: Fewer cases than this make a rate unreliable (NCHS: a relative standard error of 30%).
UNRELIABLE_BELOW = 20


@dataclass(frozen=True)
class Value:
    """One shown value and its markers."""

    text: str
    withheld: bool = False
    incomplete: bool = False
    unreliable: bool = False
    perturbed: bool = False
    #: What an incomplete or withheld value leaves out (a short phrase).
    note: str = ""


@dataclass(frozen=True)
class Row:
    scope: str
    key: tuple[str, ...]
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Section:
    """One query of the round: its tables, program first."""

    index: int
    metric: str
    version: int
    title: str
    group_by: tuple[Dimension, ...]
    #: Figures first, then statistics (histograms left out).
    columns: tuple[str, ...]
    figures: tuple[str, ...]
    rows: tuple[Row, ...]
    tables: tuple[ScopedTable, ...]

    @property
    def counts(self) -> dict[str, int]:
        flat = [v for r in self.rows for v in r.values]
        return {
            "withheld": sum(v.withheld for v in flat),
            "incomplete": sum(v.incomplete for v in flat),
            "unreliable": sum(v.unreliable for v in flat),
        }


def split_queries(tables: Sequence[ScopedTable]) -> list[list[ScopedTable]]:
    """The round's tables by query: each query's program table starts its group."""
    groups: list[list[ScopedTable]] = []
    for table in tables:
        if table.scope == PROGRAM_SCOPE or not groups:
            groups.append([])
        groups[-1].append(table)
    return groups


def _spec(table: ScopedTable) -> MetricSpec | None:
    try:
        return catalogue.get_metric(table.metric, table.version)
    except UnknownMetricError:
        return None


def case_statistic(spec: MetricSpec, figure: str) -> str | None:
    """The statistic counting the cases a figure rests on (see the module docstring)."""
    stats = {s.name: s for s in spec.statistics}
    fig = next((f for f in spec.figures if f.name == figure), None)
    if fig is None or not fig.inputs:
        return None
    first = stats.get(fig.inputs[0])
    if first is None:
        return None
    if first.kind in (StatKind.MEMBERS, StatKind.COUNT):
        return first.name
    return first.rests_on or None


def unreliable(spec: MetricSpec | None, cell: CombinedCell, figure: str) -> bool:
    """Whether a figure of ``cell`` rests on too few cases for a stable rate."""
    if spec is None:
        return False
    name = case_statistic(spec, figure)
    if name is None:
        return False
    try:
        stat = cell.stat(name)
    except KeyError:
        return False
    value = stat.value
    if value is None or isinstance(value, Histogram) or stat.status.withheld:
        return False
    return float(value) < UNRELIABLE_BELOW


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.4f}"


def _stat_text(kind: StatKind | None, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, int):
        if kind is StatKind.CENTS:
            return f"${value / 100:,.2f}"
        return f"{value:,}"
    return str(value)


def section(index: int, tables: Sequence[ScopedTable]) -> Section:
    first = tables[0]
    spec = _spec(first)
    kinds = {s.name: s.kind for s in spec.statistics} if spec else {}
    figures = tuple(f.name for f in spec.figures) if spec else ()
    stats = tuple(
        s.name for s in (spec.statistics if spec else ()) if s.kind is not StatKind.HISTOGRAM
    )
    if spec is None and first.cells:
        figures = tuple(f.name for f in first.cells[0].figures)
        stats = tuple(s.name for s in first.cells[0].stats)
    rows: list[Row] = []
    for table in tables:
        for cell in table.cells:
            values: list[Value] = []
            for name in figures:
                try:
                    fig = cell.figure(name)
                except KeyError:
                    values.append(Value(""))
                    continue
                missing = [cell.stat(s).missing for s in cell.incomplete_stats]
                most = max((m.carriers for m in missing if m is not None), default=0)
                if not math.isfinite(fig.value) and not fig.complete:
                    values.append(
                        Value("withheld", withheld=True, note="rests on a withheld value")
                    )
                    continue
                values.append(
                    Value(
                        _number(fig.value),
                        incomplete=not fig.complete,
                        unreliable=unreliable(spec, cell, name),
                        note=f"leaves out {most} carrier value(s)" if not fig.complete else "",
                    )
                )
            for name in stats:
                try:
                    stat = cell.stat(name)
                except KeyError:
                    values.append(Value(""))
                    continue
                if stat.status.withheld or stat.value is None:
                    values.append(Value("withheld", withheld=True, note=_missing(stat.missing)))
                    continue
                values.append(
                    Value(
                        _stat_text(kinds.get(name), stat.value),
                        incomplete=stat.missing is not None,
                        perturbed=str(stat.status) == "perturbed",
                        note=_missing(stat.missing),
                    )
                )
            rows.append(Row(table.scope, tuple(v for _, v in cell.key), tuple(values)))
    return Section(
        index=index,
        metric=first.metric,
        version=first.version,
        title=spec.title if spec else first.metric,
        group_by=tuple(first.group_by),
        columns=(*figures, *stats),
        figures=figures,
        rows=tuple(rows),
        tables=tuple(tables),
    )


def _missing(missing: object) -> str:
    if missing is None:
        return ""
    carriers = getattr(missing, "carriers", 0)
    members = getattr(missing, "members_at_most", None)
    text = f"leaves out {carriers} carrier value(s)"
    if members:
        text += f", on at most {members:,} members"
    return text


def sections(tables: Sequence[ScopedTable]) -> list[Section]:
    return [section(i, group) for i, group in enumerate(split_queries(tables))]
