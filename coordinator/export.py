"""Tidy exports of combined tables: a long CSV for analysis, a JSON document with everything.

The CSV has one row per scope, cell and statistic, and one per figure. A withheld statistic
has an empty value and its status; a sum that leaves out a withheld carrier value has status
``incomplete``, as has a figure resting on one, and says what it leaves out: from how many
carriers (``missing_carriers``), at most how much in its own unit (``missing_at_most``, empty
when unknown, as for dollars) and on how many members at most (``missing_members_at_most``).
Histograms do not fit a row: they are left out of the CSV and given in full in the JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from coordinator.combine import CombinedCell, FigureValue, ScopedTable
from fedoversight import catalogue
from fedoversight.catalogue import StatKind
from fedoversight.dimensions import Dimension
from fedoversight.domain import Missing, StatValue, StatValueType
from fedoversight.errors import UnknownMetricError
from fedoversight.histogram import Histogram

TIDY_COLUMNS_FIXED = ("metric", "scope")
TIDY_COLUMNS_TAIL = (
    "statistic", "value", "status", "missing_carriers", "missing_at_most",
    "missing_members_at_most",
)
#: Status of a sum leaving out a suppressed value, and of a figure resting on one.
INCOMPLETE = "incomplete"
RELEASED = "released"

_Scalar = int | float | None


def tidy_columns(tables: Sequence[ScopedTable]) -> tuple[str, ...]:
    """Fixed columns, then every group-by dimension of the tables in catalogue order."""
    used = {d for t in tables for d in t.group_by}
    dims = tuple(str(d) for d in Dimension if d in used)
    return (*TIDY_COLUMNS_FIXED, *dims, *TIDY_COLUMNS_TAIL)


def tidy_rows(tables: Sequence[ScopedTable]) -> pd.DataFrame:
    """One row per scope, cell and (non-histogram) statistic, and one per figure."""
    columns = tidy_columns(tables)
    rows: list[dict[str, object]] = []
    for table in tables:
        histograms = _histogram_statistics(table)
        for cell in table.cells:
            base: dict[str, object] = {"metric": table.metric, "scope": table.scope}
            base.update({str(d): v for d, v in cell.key})
            for stat in cell.stats:
                if stat.name in histograms or isinstance(stat.value, Histogram):
                    continue
                rows.append(
                    {
                        **base,
                        "statistic": stat.name,
                        "value": _scalar(stat.value),
                        "status": _stat_status(cell, stat),
                        **_missing_columns(stat.missing),
                    }
                )
            for fig in cell.figures:
                rows.append(
                    {
                        **base,
                        "statistic": fig.name,
                        "value": _finite(fig.value),
                        "status": RELEASED if fig.complete else INCOMPLETE,
                    }
                )
    data = {c: [r.get(c) for r in rows] for c in columns}
    # Values stay Python objects: integer cents beyond 2**53 must not pass through float64.
    frame = pd.DataFrame({c: pd.Series(data[c], dtype=object) for c in columns})
    return frame[list(columns)]


def write_csv(tables: Sequence[ScopedTable], path: Path) -> None:
    tidy_rows(tables).to_csv(path, index=False, lineterminator="\n")


def write_json(tables: Sequence[ScopedTable], path: Path) -> None:
    """A list of tables with their cells: keys, statistics (histograms as lists), figures."""
    document = [_table_json(t) for t in tables]
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


# --- helpers ----------------------------------------------------------------------------------


def _histogram_statistics(table: ScopedTable) -> frozenset[str]:
    try:
        spec = catalogue.get_metric(table.metric, table.version)
    except UnknownMetricError:
        return frozenset()
    return frozenset(s.name for s in spec.statistics if s.kind is StatKind.HISTOGRAM)


def _stat_status(cell: CombinedCell, stat: StatValue) -> str:
    if stat.value is not None and stat.missing is not None:
        return INCOMPLETE
    return str(stat.status)


def _missing_columns(missing: Missing | None) -> dict[str, object]:
    if missing is None:
        return {}
    return {
        "missing_carriers": missing.carriers,
        "missing_at_most": missing.at_most,
        "missing_members_at_most": missing.members_at_most,
    }


def _missing_json(missing: Missing | None) -> dict[str, object] | None:
    if missing is None:
        return None
    return {
        "carriers": missing.carriers,
        "at_most": missing.at_most,
        "members_at_most": missing.members_at_most,
        **({"reason": str(missing.reason)} if missing.reason is not None else {}),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _scalar(value: StatValueType | None) -> _Scalar:
    if value is None or isinstance(value, Histogram):
        return None
    if isinstance(value, float):
        return _finite(value)
    return int(value)


def _value_json(value: StatValueType | None) -> object:
    if isinstance(value, Histogram):
        return {"counts": list(value.counts), "sums_cents": list(value.sums_cents),
                "withheld_bins": list(value.withheld_bins)}
    return _scalar(value)


def _figure_json(fig: FigureValue) -> dict[str, object]:
    return {"name": fig.name, "value": _finite(fig.value), "complete": fig.complete}


def _cell_json(cell: CombinedCell) -> dict[str, object]:
    return {
        "key": {str(d): v for d, v in cell.key},
        "status": str(cell.status),
        "incomplete": cell.incomplete,
        "statistics": [
            {
                "name": s.name,
                "status": str(s.status),
                "incomplete": s.missing is not None,
                "missing": _missing_json(s.missing),
                "value": _value_json(s.value),
            }
            for s in cell.stats
        ],
        "figures": [_figure_json(f) for f in cell.figures],
    }


def _table_json(table: ScopedTable) -> dict[str, object]:
    return {
        "scope": table.scope,
        "metric": table.metric,
        "version": table.version,
        "group_by": [str(d) for d in table.group_by],
        "cells": [_cell_json(c) for c in table.cells],
    }
