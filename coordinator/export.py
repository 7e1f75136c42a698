"""Exports of a round's tables: tidy CSV and Parquet for analysis, a JSON document with
everything. :func:`write_export` picks the format by the file's extension (``.csv``,
``.parquet``, ``.json``) and refuses any other.

The tidy rows (CSV and Parquet) are one per scope, cell and statistic, and one per figure,
each with the round's id and period, the metric and its version, the carriers the round
asked and that answered, and the round's declared purpose, requesting office and the time
until which the coordinator keeps its results (``retain_until``, empty: indefinitely). A
withheld statistic has an empty value and its status; a sum that
leaves out a withheld (or unanswered) carrier value has status ``incomplete``, as has a figure
resting on one, and says what it leaves out: from how many carriers (``missing_carriers``), at
most how much in its own unit (``missing_at_most``, empty when unknown, as for dollars) and on
how many members at most (``missing_members_at_most``). Parquet types its columns (integer
statistics exact in ``value_int``, figures in ``value``) and keeps the round's description in
the file's key-value metadata (``fedoversight.round``, JSON). Histograms do not fit a row: they
are left out of the tidy rows and given in full in the JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coordinator.combine import CombinedCell, FigureValue, ScopedTable
from fedoversight import catalogue
from fedoversight.catalogue import StatKind
from fedoversight.dimensions import Dimension
from fedoversight.domain import Missing, Purpose, StatValue, StatValueType
from fedoversight.errors import InvalidRequestError, UnknownMetricError
from fedoversight.histogram import Histogram

TIDY_COLUMNS_FIXED = ("round_id", "period", "metric", "metric_version", "scope")
TIDY_COLUMNS_TAIL = (
    "statistic",
    "value",
    "status",
    "missing_carriers",
    "missing_at_most",
    "missing_members_at_most",
    "carriers_asked",
    "carriers_answered",
    "purpose",
    "office",
    "retain_until",
)
#: The formats :func:`write_export` writes, by file extension.
FORMATS = (".csv", ".json", ".parquet")


@dataclass(frozen=True)
class RoundInfo:
    """What every export says of the round its tables come from."""

    round_id: str = ""
    period: str = ""
    state: str = ""
    carriers_asked: int = 0
    carriers_answered: int = 0
    #: Each carrier asked: its state in the round, and why when it did not answer.
    carriers: tuple[tuple[str, str, str], ...] = ()
    #: Why the round was asked (None for rounds created before purposes).
    purpose: Purpose | None = None
    #: Until when the coordinator keeps its results (None: indefinitely), and when it
    #: deleted them.
    retain_until: dt.datetime | None = None
    results_deleted_at: dt.datetime | None = None

    def json(self) -> dict[str, object]:
        return {
            "round_id": self.round_id,
            "period": self.period,
            "state": self.state,
            "carriers_asked": self.carriers_asked,
            "carriers_answered": self.carriers_answered,
            "carriers": [{"carrier_id": c, "state": s, "message": m} for c, s, m in self.carriers],
            "purpose": self.purpose.describe() if self.purpose is not None else None,
            "retain_until": _iso(self.retain_until),
            "results_deleted_at": _iso(self.results_deleted_at),
        }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


#: Status of a sum leaving out a suppressed value, and of a figure resting on one.
INCOMPLETE = "incomplete"
RELEASED = "released"

_Scalar = int | float | None


def tidy_columns(tables: Sequence[ScopedTable]) -> tuple[str, ...]:
    """Fixed columns, then every group-by dimension of the tables in catalogue order."""
    used = {d for t in tables for d in t.group_by}
    dims = tuple(str(d) for d in Dimension if d in used)
    return (*TIDY_COLUMNS_FIXED, *dims, *TIDY_COLUMNS_TAIL)


def tidy_rows(tables: Sequence[ScopedTable], info: RoundInfo | None = None) -> pd.DataFrame:
    """One row per scope, cell and (non-histogram) statistic, and one per figure."""
    info = info or RoundInfo()
    columns = tidy_columns(tables)
    rows: list[dict[str, object]] = []
    for table in tables:
        histograms = _histogram_statistics(table)
        inputs = _figure_inputs(table)
        for cell in table.cells:
            base: dict[str, object] = {
                "round_id": info.round_id,
                "period": info.period,
                "metric": table.metric,
                "metric_version": table.version,
                "scope": table.scope,
                "carriers_asked": info.carriers_asked,
                "carriers_answered": info.carriers_answered,
                "purpose": info.purpose.code if info.purpose is not None else None,
                "office": info.purpose.office if info.purpose is not None else None,
                "retain_until": _iso(info.retain_until),
            }
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
                        **_figure_missing(cell, inputs.get(fig.name)),
                    }
                )
    data = {c: [r.get(c) for r in rows] for c in columns}
    # Values stay Python objects: integer cents beyond 2**53 must not pass through float64.
    frame = pd.DataFrame({c: pd.Series(data[c], dtype=object) for c in columns})
    return frame[list(columns)]


def write_export(tables: Sequence[ScopedTable], path: Path, info: RoundInfo | None = None) -> None:
    """Write ``tables`` in the format of ``path``'s extension (see :data:`FORMATS`)."""
    writers = {".csv": write_csv, ".json": write_json, ".parquet": write_parquet}
    writer = writers.get(path.suffix.lower())
    if writer is None:
        raise InvalidRequestError(
            f"cannot export to {path.suffix or 'a file without an extension'}: use"
            f" {', '.join(FORMATS)}"
        )
    writer(tables, path, info)


def write_csv(tables: Sequence[ScopedTable], path: Path, info: RoundInfo | None = None) -> None:
    tidy_rows(tables, info).to_csv(path, index=False, lineterminator="\n")


def write_parquet(tables: Sequence[ScopedTable], path: Path, info: RoundInfo | None = None) -> None:
    """The tidy rows as typed Parquet columns; the round's description in the metadata."""
    frame = tidy_rows(tables, info)
    integers = [v if isinstance(v, int) else None for v in frame["value"]]
    reals = [float(v) if isinstance(v, int | float) else None for v in frame["value"]]
    columns: dict[str, pa.Array] = {}
    for name in frame.columns:
        if name == "value":
            columns["value"] = pa.array(reals, type=pa.float64())
            columns["value_int"] = pa.array(integers, type=pa.int64())
        elif name in (
            "metric_version",
            "missing_carriers",
            "missing_at_most",
            "missing_members_at_most",
            "carriers_asked",
            "carriers_answered",
        ):
            columns[name] = pa.array(
                [None if v is None or v == "" else int(v) for v in frame[name]], type=pa.int64()
            )
        else:
            columns[name] = pa.array(
                [None if v is None else str(v) for v in frame[name]], type=pa.string()
            )
    table = pa.table(columns)
    metadata = {b"fedoversight.round": json.dumps((info or RoundInfo()).json()).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)


def write_json(tables: Sequence[ScopedTable], path: Path, info: RoundInfo | None = None) -> None:
    """The round and its tables with their cells: keys, statistics (histograms as lists),
    figures, and what each value leaves out."""
    document = {
        "round": (info or RoundInfo()).json(),
        "tables": [_table_json(t) for t in tables],
    }
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


# --- helpers ----------------------------------------------------------------------------------


def _histogram_statistics(table: ScopedTable) -> frozenset[str]:
    try:
        spec = catalogue.get_metric(table.metric, table.version)
    except UnknownMetricError:
        return frozenset()
    return frozenset(s.name for s in spec.statistics if s.kind is StatKind.HISTOGRAM)


def _figure_inputs(table: ScopedTable) -> dict[str, frozenset[str]]:
    try:
        spec = catalogue.get_metric(table.metric, table.version)
    except UnknownMetricError:
        return {}
    return {f.name: frozenset(f.inputs) for f in spec.figures}


def _figure_missing(cell: CombinedCell, inputs: frozenset[str] | None) -> dict[str, object]:
    """A figure leaves out what its inputs leave out: the most carriers any of them misses."""
    carriers = [
        s.missing.carriers
        for s in cell.stats
        if s.missing is not None and (inputs is None or s.name in inputs)
    ]
    return {"missing_carriers": max(carriers)} if carriers else {}


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
        return {
            "counts": list(value.counts),
            "sums_cents": list(value.sums_cents),
            "withheld_bins": list(value.withheld_bins),
        }
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
