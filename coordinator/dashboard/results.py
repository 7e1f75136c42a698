"""A round's results as the round page shows them: one section per query, each with the typed
tidy frame of its tables (:mod:`coordinator.frames`) and a table of its program and carrier
cells, every value marked as the frame marks it: withheld, incomplete, unreliable (too small
for a stable rate, NCHS data presentation standards), perturbed (with its documented noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from coordinator import frames
from coordinator.combine import PROGRAM_SCOPE, ScopedTable
from coordinator.export import RoundInfo
from fedoversight import catalogue
from fedoversight.dimensions import Dimension
from fedoversight.errors import UnknownMetricError


@dataclass(frozen=True)
class Value:
    """One shown value and its markers."""

    text: str
    withheld: bool = False
    incomplete: bool = False
    unreliable: bool = False
    perturbed: bool = False
    #: Why a value is marked (what it leaves out, why it is unreliable, its noise).
    note: str = ""


@dataclass(frozen=True)
class Row:
    scope: str
    key: tuple[str, ...]
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Section:
    """One query of the round: its frame and its table, program rows first."""

    index: int
    metric: str
    version: int
    title: str
    group_by: tuple[Dimension, ...]
    #: Figures first, then statistics (histograms left out).
    columns: tuple[str, ...]
    figures: tuple[str, ...]
    rows: tuple[Row, ...]
    frame: pd.DataFrame

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


def sections(tables: Sequence[ScopedTable], info: RoundInfo | None = None) -> list[Section]:
    return [section(i, group, info) for i, group in enumerate(split_queries(tables))]


def section(index: int, tables: Sequence[ScopedTable], info: RoundInfo | None = None) -> Section:
    first = tables[0]
    frame = frames.frame_of(tables, info)
    try:
        spec = catalogue.get_metric(first.metric, first.version)
        title = spec.title
    except UnknownMetricError:
        title = first.metric
    dims = [str(d) for d in first.group_by]
    is_figure = frame["kind"] == frames.FIGURE
    figures = tuple(dict.fromkeys(str(s) for s in frame.loc[is_figure, "statistic"]))
    stats = tuple(dict.fromkeys(str(s) for s in frame.loc[~is_figure, "statistic"]))
    columns = (*figures, *stats)
    cells: dict[tuple[str, tuple[str, ...]], dict[str, Value]] = {}
    for record in frame.to_dict("records"):
        key = tuple(_key_text(record.get(d)) for d in dims)
        cells.setdefault((str(record["scope"]), key), {})[str(record["statistic"])] = _value(record)
    rows = tuple(
        Row(scope, key, tuple(values.get(c, Value("")) for c in columns))
        for (scope, key), values in cells.items()
    )
    return Section(
        index=index,
        metric=first.metric,
        version=first.version,
        title=title,
        group_by=tuple(first.group_by),
        columns=columns,
        figures=figures,
        rows=rows,
        frame=frame,
    )


def _flag(value: object) -> bool:
    return bool(value) if value is not None and value is not pd.NA else False


def _key_text(value: object) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, pd.Timestamp):
        return str(value.strftime("%Y-%m"))
    return str(value)


def _value(record: dict[str, object]) -> Value:
    kind = str(record["kind"])
    notes = []
    missing = record.get("missing_carriers")
    if _present(missing):
        text = f"leaves out {missing} carrier value(s)"
        members = record.get("missing_members_at_most")
        if _present(members):
            text += f", on at most {members:,} members"
        notes.append(text)
    # No value because it or what it rests on was withheld (a carrier's rate of withheld
    # statistics is flagged incomplete in the frame): shown withheld, as the charts draw it.
    nothing = not _present(record.get("value")) and not _present(record.get("value_int"))
    if _flag(record.get("withheld")) or (nothing and _flag(record.get("incomplete"))):
        return Value("withheld", withheld=True, note="; ".join(notes))
    if _flag(record.get("unreliable")):
        reason = record.get("unreliable_reason")
        notes.append(f"unreliable: {reason}" if _present(reason) else "unreliable")
    sd = record.get("noise_sd")
    perturbed = str(record.get("status")) == frames.PERTURBED
    if perturbed and _present(sd) and float(sd) > 0:  # type: ignore[arg-type]
        notes.append(f"noise sd {_number(float(sd), kind)}")  # type: ignore[arg-type]
    return Value(
        _text(record, kind),
        incomplete=_flag(record.get("incomplete")),
        unreliable=_flag(record.get("unreliable")),
        perturbed=perturbed,
        note="; ".join(notes),
    )


def _present(value: object) -> bool:
    if value is None or value is pd.NA:
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _text(record: dict[str, object], kind: str) -> str:
    exact = record.get("value_int")
    if _present(exact) and kind != frames.FIGURE:
        number = int(exact)  # type: ignore[call-overload]
        if kind == "cents":
            return f"${number / 100:,.2f}"
        return f"{number:,}"
    value = record.get("value")
    if not _present(value):
        return "—"
    return _number(float(value), kind)  # type: ignore[arg-type]


def _number(value: float, kind: str) -> str:
    if not math.isfinite(value):
        return "—"
    if kind == "cents":
        return f"${value / 100:,.2f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.4f}"
