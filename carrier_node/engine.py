"""Evaluate a query where the data lives and hand back raw (unprotected) cells.

Raw cells never leave this process: :mod:`carrier_node.protect` turns them into the only
thing that is ever sent.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from carrier_node import metrics, sql
from fedoversight.catalogue import StatKind, get_metric
from fedoversight.dimensions import Dimension, accepts
from fedoversight.domain import CellKey, QuerySpec
from fedoversight.errors import DataSourceError
from fedoversight.histogram import N_BINS, Histogram
from fedoversight.periods import Period

log = logging.getLogger(__name__)


class DataSource(Protocol):
    """Where a carrier's tables live: an embedded DuckDB over files, or a SQL warehouse."""

    @property
    def dialect(self) -> str:
        """sqlglot dialect the source executes."""
        ...

    def execute_arrow(self, sql: str) -> pa.Table: ...

    def snapshot(self) -> str: ...


RawValue = int | Histogram


@dataclass(frozen=True)
class RawCell:
    key: CellKey
    values: tuple[tuple[str, RawValue], ...]
    #: For dollar statistics whose metric reports them: (total, largest, second largest)
    #: member contribution, for the dominance rule. Never leaves the node.
    contributions: tuple[tuple[str, tuple[int, int, int]], ...] = ()

    def value(self, name: str) -> int:
        """An integer statistic (counts, members, cents)."""
        value = dict(self.values)[name]
        if not isinstance(value, int):
            raise TypeError(f"statistic {name} is not an integer")
        return value

    def histogram(self, name: str) -> Histogram:
        value = dict(self.values)[name]
        if not isinstance(value, Histogram):
            raise TypeError(f"statistic {name} is not a histogram")
        return value


@dataclass(frozen=True)
class RawTable:
    query: QuerySpec
    cells: tuple[RawCell, ...]


def _as_int(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise DataSourceError("engine returned a boolean statistic")
    if isinstance(value, int):
        return value
    if isinstance(value, decimal.Decimal | float):
        if value != int(value):
            raise DataSourceError("engine returned a fractional count or cent total")
        return int(value)
    raise DataSourceError("engine returned a statistic of an unexpected type")


#: Stands in for the carrier id inside cached SQL; the real id replaces it in the result.
_ANY_CARRIER = "carrier"


@functools.lru_cache(maxsize=512)
def _render(
    dialect: str, tables: frozenset[str] | None, schema: str | None, period: Period,
    query: QuerySpec,
) -> str:
    context = metrics.BuildContext(_ANY_CARRIER, period, query, tables=tables)
    expression = sql.qualify_tables(metrics.build(context), schema)
    return expression.sql(dialect=dialect)


class Engine:
    def __init__(self, source: DataSource, carrier_id: str, schema: str | None = None) -> None:
        self.source = source
        self.carrier_id = carrier_id
        self.schema = schema

    def render(self, period: Period, query: QuerySpec) -> str:
        """The SQL text for ``query`` in the source's dialect (stays inside the node).

        Rendering a large expression costs tenths of a second of pure Python, so the text is
        cached per (dialect, tables, schema, period, query). The carrier's own id is not part
        of it: the carrier key is a constant filled in after the query (see :meth:`evaluate`).
        """
        tables: frozenset[str] | None = getattr(self.source, "tables", None)
        return _render(self.source.dialect, tables, self.schema, period, query)

    def evaluate(self, period: Period, query: QuerySpec) -> RawTable:
        filters = dict(query.filters)
        if Dimension.CARRIER in filters:
            if self.carrier_id not in filters[Dimension.CARRIER]:
                return RawTable(query=query, cells=())  # this carrier is filtered out
            query = dataclasses.replace(
                query, filters=tuple((d, v) for d, v in query.filters if d is not Dimension.CARRIER)
            )
        spec = get_metric(query.metric, query.version)
        stat_names = [s.name for s in spec.statistics if s.kind is not StatKind.HISTOGRAM]
        histograms = [s.name for s in spec.statistics if s.kind is StatKind.HISTOGRAM]
        started = time.perf_counter()
        table = self.source.execute_arrow(self.render(period, query))
        dims = [d.value for d in query.group_by]
        hist_columns = [c for h in histograms for c in metrics.histogram_columns(h)]
        contributed = metrics.contributed_statistics(spec)
        top_columns = [c for s in contributed for c in metrics.contribution_columns(s)]
        wanted = (*dims, *stat_names, *hist_columns, *top_columns)
        if any(c not in table.column_names for c in wanted):
            raise DataSourceError("engine result lacks declared columns")
        columns = {name: table.column(name).to_pylist() for name in wanted}
        # One row per cell, or (with a histogram) one per cell and bin: rows of a cell are
        # merged, its integer statistics repeat on each of them.
        by_key: dict[CellKey, dict[str, int]] = {}
        bins: dict[CellKey, dict[str, tuple[list[int], list[int]]]] = {}
        for i in range(table.num_rows):
            key = tuple(
                (Dimension(d), self.carrier_id if d == "carrier" else str(columns[d][i]))
                for d in dims
            )
            values = {n: _as_int(columns[n][i]) for n in (*stat_names, *top_columns)}
            if key in by_key and not histograms:
                raise DataSourceError("engine returned a cell twice")
            if by_key.setdefault(key, values) != values:
                raise DataSourceError("engine returned inconsistent rows of a cell")
            for h in histograms:
                bin_col, count_col, cents_col = metrics.histogram_columns(h)
                counts, sums = bins.setdefault(key, {}).setdefault(
                    h, ([0] * N_BINS, [0] * N_BINS)
                )
                index = _as_int(columns[bin_col][i])
                if not 0 <= index < N_BINS:
                    raise DataSourceError("engine returned a histogram bin out of range")
                counts[index] += _as_int(columns[count_col][i])
                sums[index] += _as_int(columns[cents_col][i])
        cells = []
        for key, values in by_key.items():
            for dim, value in key:
                if not accepts(dim, value):
                    raise DataSourceError(f"engine produced a {dim} key not of its form")
            stats: list[tuple[str, RawValue]] = []
            for s in spec.statistics:
                if s.kind is StatKind.HISTOGRAM:
                    counts, sums = bins[key][s.name]
                    stats.append((s.name, Histogram(tuple(counts), tuple(sums))))
                else:
                    stats.append((s.name, values[s.name]))
            contributions = []
            for name in contributed:
                top1, top2 = (values[c] for c in metrics.contribution_columns(name))
                contributions.append((name, (values[name], top1, top2)))
            cells.append(
                RawCell(key=key, values=tuple(stats), contributions=tuple(contributions))
            )
        cells.sort(key=lambda c: c.key)
        log.info(
            "evaluated %s over %s: %d cells in %.3fs",
            spec.key, period, len(cells), time.perf_counter() - started,
        )
        return RawTable(query=query, cells=tuple(cells))
