"""Arrow tables from the data source into raw cells: every declared column present, every
value of its declared type, every key of its dimension's form, each cell once — or a
data-source error (which names no value)."""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence

import pyarrow as pa

from carrier_node.cells import RawCell, RawTable, RawValue, Support
from carrier_node.query import aggregate
from fedoversight.catalogue import StatisticSpec, StatKind, get_metric
from fedoversight.dimensions import Dimension, accepts
from fedoversight.domain import CellKey, QuerySpec
from fedoversight.errors import DataSourceError
from fedoversight.histogram import N_BINS, Histogram


def decode_cells(
    query: QuerySpec, table: pa.Table, carrier_id: str, *, clamped: bool = False
) -> RawTable:
    """The raw table of ``query`` from the result of its SQL (one row per cell, or per cell
    and histogram bin); ``clamped``: the result has the clamped sums of differential privacy."""
    spec = get_metric(query.metric, query.version)
    scalars = [s for s in spec.statistics if s.kind is not StatKind.HISTOGRAM]
    histograms = [s for s in spec.statistics if s.kind is StatKind.HISTOGRAM]
    dims = [d.value for d in query.group_by]
    integer_columns = [
        c for s in scalars for c in aggregate.result_columns(s, clamped) if not _is_key(c)
    ]
    key_columns = [c for s in scalars for c in aggregate.result_columns(s, clamped) if _is_key(c)]
    bin_columns = [
        c
        for h in histograms
        for c in (*aggregate.histogram_columns(h.name), *aggregate.disclosure_columns(h))
    ]
    wanted = (*dims, *integer_columns, *key_columns, *bin_columns)
    if any(c not in table.column_names for c in wanted):
        raise DataSourceError("engine result lacks declared columns")
    columns = {name: table.column(name).to_pylist() for name in wanted}
    # One row per cell, or (with a histogram) one per cell and bin: rows of a cell are
    # merged, its other statistics repeat on each of them.
    by_key: dict[CellKey, dict[str, object]] = {}
    bins: dict[CellKey, dict[str, list[tuple[int, int, Support]]]] = {}
    for i in range(table.num_rows):
        key = tuple(
            (Dimension(d), carrier_id if d == "carrier" else str(columns[d][i])) for d in dims
        )
        values: dict[str, object] = {n: _as_int(columns[n][i]) for n in integer_columns}
        values.update({n: _as_key(columns[n][i]) for n in key_columns})
        if key in by_key and not histograms:
            raise DataSourceError("engine returned a cell twice")
        if by_key.setdefault(key, values) != values:
            raise DataSourceError("engine returned inconsistent rows of a cell")
        for h in histograms:
            bin_col, count_col, cents_col = aggregate.histogram_columns(h.name)
            low, high, top = aggregate.disclosure_columns(h)
            index = _as_int(columns[bin_col][i])
            if not 0 <= index < N_BINS:
                raise DataSourceError("engine returned a histogram bin out of range")
            count = _as_int(columns[count_col][i])
            support = Support(
                count,
                _as_key(columns[low][i]),
                _as_key(columns[high][i]),
                top=_as_int(columns[top][i]),
            )
            bins.setdefault(key, {}).setdefault(h.name, []).append(
                (index, _as_int(columns[cents_col][i]), support)
            )
    cells = []
    for key, values in by_key.items():
        for dim, value in key:
            if not accepts(dim, value):
                raise DataSourceError(f"engine produced a {dim} key not of its form")
        stats: list[tuple[str, RawValue]] = []
        supports: list[tuple[str, Support]] = []
        cell_bins: list[tuple[str, tuple[Support | None, ...]]] = []
        for s in spec.statistics:
            if s.kind is StatKind.HISTOGRAM:
                histogram, per_bin = _histogram(bins.get(key, {}).get(s.name, []))
                stats.append((s.name, histogram))
                cell_bins.append((s.name, per_bin))
                continue
            number = values[s.name]
            assert isinstance(number, int)
            stats.append((s.name, number))
            supports.append((s.name, _support(s, values)))
        cells.append(
            RawCell(key=key, values=tuple(stats), supports=tuple(supports), bins=tuple(cell_bins))
        )
    cells.sort(key=lambda c: c.key)
    return RawTable(query=query, cells=tuple(cells))


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


def _is_key(column: str) -> bool:
    return column.endswith((aggregate.KEY_LOW, aggregate.KEY_HIGH))


def _as_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataSourceError("engine returned a record key of an unexpected type")
    return value


def _support(stat: StatisticSpec, values: Mapping[str, object]) -> Support:
    """The :class:`Support` of ``stat`` from a cell row's columns."""
    name = stat.name

    def number(suffix: str) -> int:
        column = name + suffix
        value = values.get(column, 0)
        assert isinstance(value, int)
        return value

    low, high = values.get(name + aggregate.KEY_LOW), values.get(name + aggregate.KEY_HIGH)
    assert low is None or isinstance(low, str)
    assert high is None or isinstance(high, str)
    members = number("") if stat.kind is StatKind.MEMBERS else number(aggregate.SUPPORT)
    clamped = values.get(name + aggregate.CLAMPED)
    assert clamped is None or isinstance(clamped, int)
    return Support(
        members, low, high, top=number(aggregate.TOP), rest=number(aggregate.REST), clamped=clamped
    )


def _histogram(
    rows: Sequence[tuple[int, int, Support]],
) -> tuple[Histogram, tuple[Support | None, ...]]:
    counts, sums = [0] * N_BINS, [0] * N_BINS
    supports: list[Support | None] = [None] * N_BINS
    for index, cents, support in rows:
        if supports[index] is not None:
            raise DataSourceError("engine returned a histogram bin twice")
        counts[index], sums[index], supports[index] = support.members, cents, support
    return Histogram(tuple(counts), tuple(sums)), tuple(supports)
