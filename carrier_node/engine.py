"""Evaluate a query where the data lives and hand back raw (unprotected) cells.

Raw cells never leave this process: :mod:`carrier_node.protect` turns them into the only
thing that is ever sent.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
from sqlglot import exp

from carrier_node import batch, metrics, sql
from fedoversight.catalogue import StatisticSpec, StatKind, get_metric
from fedoversight.dimensions import Dimension, accepts
from fedoversight.domain import CellKey, QuerySpec
from fedoversight.errors import DataSourceError
from fedoversight.histogram import N_BINS, Histogram
from fedoversight.periods import Period

log = logging.getLogger(__name__)


class Session(Protocol):
    """One connection of a data source, kept for the queries of a batch: temporary tables made
    on it are seen by its later queries and by nothing else."""

    def create_table(self, name: str, statement: str) -> None:
        """Run ``statement``, a ``CREATE TEMPORARY TABLE name AS SELECT ...`` built by the
        engine, and make the table ready to be read (e.g. its statistics gathered)."""
        ...

    def drop_table(self, name: str) -> None: ...

    def execute_arrow(self, sql: str) -> pa.Table: ...


class DataSource(Protocol):
    """Where a carrier's tables live: an embedded DuckDB over files, or a SQL warehouse."""

    @property
    def dialect(self) -> str:
        """sqlglot dialect the source executes."""
        ...

    def execute_arrow(self, sql: str) -> pa.Table: ...

    def session(self) -> AbstractContextManager[Session]: ...

    def snapshot(self) -> str: ...


RawValue = int | Histogram


@dataclass(frozen=True)
class Support:
    """What disclosure control needs of one statistic of one cell (or of one histogram bin),
    computed in the same pass as the statistic (see :mod:`carrier_node.metric_common`). Never
    leaves the node."""

    #: Members with a non-zero contribution (for MEMBERS: the value itself).
    members: int
    #: The least and greatest record key of those members (None when there are none, and for a
    #: total no member contributes to).
    key_low: str | None = None
    key_high: str | None = None
    #: The largest absolute contribution of one member (of one row, for a total no member
    #: contributes to); 0 where not computed (counts of people and events).
    top: int = 0
    #: For a part of another statistic: the members contributing to the rest (whole less part).
    rest: int = 0
    #: Under differential privacy: the statistic with each member's contribution clamped to
    #: its bound (None when not computed).
    clamped: int | None = None


@dataclass(frozen=True)
class RawCell:
    key: CellKey
    values: tuple[tuple[str, RawValue], ...]
    #: Per statistic (histograms excepted), what disclosure control needs of it.
    supports: tuple[tuple[str, Support], ...] = ()
    #: Per histogram statistic, the support of each bin (None for an empty bin).
    bins: tuple[tuple[str, tuple[Support | None, ...]], ...] = ()

    def support(self, name: str) -> Support:
        return self._supports[name]

    def bin_supports(self, name: str) -> tuple[Support | None, ...]:
        return dict(self.bins)[name]

    @functools.cached_property
    def _supports(self) -> dict[str, Support]:
        return dict(self.supports)

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


@dataclass(frozen=True)
class Keying:
    """What a node's queries are built with besides the query: the secret of its record keys,
    and whether statistics come with clamped sums."""

    record_secret: str
    #: Whether statistics also come with clamped sums (differential privacy).
    clamped: bool = False


def _expression(
    tables: frozenset[str] | None, schema: str | None, period: Period, query: QuerySpec,
    keying: Keying,
) -> exp.Query:
    context = metrics.BuildContext(
        _ANY_CARRIER, period, query, tables=tables, record_secret=keying.record_secret,
        clamped=keying.clamped,
    )
    return sql.qualify_tables(metrics.build(context), schema)


@functools.lru_cache(maxsize=512)
def _render(
    dialect: str, tables: frozenset[str] | None, schema: str | None, period: Period,
    query: QuerySpec, keying: Keying,
) -> str:
    # The tree is built for this call alone: the generator may work on it without a copy.
    return _expression(tables, schema, period, query, keying).sql(dialect=dialect, copy=False)


@dataclass(frozen=True)
class RenderedBatch:
    """SQL text of a batch: shared tables (name, CREATE statement, index of the last query
    reading it) in creation order, then the queries."""

    shared: tuple[tuple[str, str, int], ...]
    queries: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def _render_batch(
    dialect: str, tables: frozenset[str] | None, schema: str | None, period: Period,
    queries: tuple[QuerySpec, ...], keying: Keying, min_uses: int = 2,
) -> RenderedBatch:
    planned = batch.plan(
        [_expression(tables, schema, period, q, keying) for q in queries], min_uses=min_uses
    )
    return RenderedBatch(
        shared=tuple(
            (t.name, t.create_statement(dialect), t.last_use) for t in planned.shared
        ),
        # The plan is this call's alone: the generator may work on it without a copy.
        queries=tuple(q.sql(dialect=dialect, copy=False) for q in planned.queries),
    )


@dataclass(frozen=True)
class BatchTiming:
    """Where the last :meth:`Engine.evaluate_many` spent its time (for logs and benchmarks)."""

    #: Seconds computing the shared blocks, and how many there were.
    shared_seconds: float = 0.0
    shared_blocks: int = 0
    #: Seconds of each evaluated query's own SQL, in order (queries filtered out excluded).
    query_seconds: tuple[float, ...] = ()


class Engine:
    def __init__(
        self, source: DataSource, carrier_id: str, schema: str | None = None, *,
        record_secret: str | None = None, clamped: bool = False,
    ) -> None:
        """``record_secret``: the node's secret for record keys (a fresh random one, for this
        engine only, when None: tools that need no consistency across processes); ``clamped``:
        statistics come with clamped sums too (differential privacy)."""
        self.source = source
        self.carrier_id = carrier_id
        self.schema = schema
        self.keying = Keying(
            record_secret if record_secret is not None else secrets.token_hex(16),
            clamped=clamped,
        )
        if not self.keying.record_secret:
            raise ValueError("record keys need a secret")
        self.last_batch = BatchTiming()

    def _tables(self) -> frozenset[str] | None:
        return getattr(self.source, "tables", None)

    def render(self, period: Period, query: QuerySpec) -> str:
        """The SQL text for ``query`` in the source's dialect (stays inside the node).

        Rendering a large expression costs tenths of a second of pure Python, so the text is
        cached per (dialect, tables, schema, period, query). The carrier's own id is not part
        of it: the carrier key is a constant filled in after the query (see :meth:`evaluate`).
        """
        return _render(
            self.source.dialect, self._tables(), self.schema, period, query, self.keying
        )

    def _min_uses(self) -> int:
        """Readers a block needs to become a table: two for DuckDB (which streams a block
        one query reads), one where the source plans better over tables it has statistics
        of (PostgreSQL misjudges the size of a member-months block inlined in a query, and
        picked nested loops that ran for hours)."""
        return int(getattr(self.source, "block_min_uses", 2))

    def render_batch(self, period: Period, queries: tuple[QuerySpec, ...]) -> RenderedBatch:
        """The SQL of ``queries`` evaluated together (see :mod:`carrier_node.batch`)."""
        return _render_batch(
            self.source.dialect, self._tables(), self.schema, period, queries, self.keying,
            self._min_uses(),
        )

    def evaluate(self, period: Period, query: QuerySpec) -> RawTable:
        return self.evaluate_many(period, [query])[0]

    def evaluate_many(self, period: Period, queries: Sequence[QuerySpec]) -> list[RawTable]:
        """Evaluate the queries of one request, in order.

        Blocks that several of them compute (member months, final-action fills, stays, ...) are
        computed once into temporary tables of one session of the source and read by each
        query that needs them; the tables are dropped after their last reader.
        """
        local = [self._local_query(q) for q in queries]
        active = tuple(q for q in local if q is not None)
        results = iter(self._run(period, active))
        return [
            RawTable(query=original, cells=()) if q is None else self._cells(q, next(results))
            for original, q in zip(queries, local, strict=True)
        ]

    def _local_query(self, query: QuerySpec) -> QuerySpec | None:
        """The query as this carrier evaluates it: without a carrier filter, which either
        selects this carrier (dropped) or does not (None: no cells here)."""
        filters = dict(query.filters)
        if Dimension.CARRIER not in filters:
            return query
        if self.carrier_id not in filters[Dimension.CARRIER]:
            return None
        return dataclasses.replace(
            query, filters=tuple((d, v) for d, v in query.filters if d is not Dimension.CARRIER)
        )

    def _run(
        self, period: Period, queries: tuple[QuerySpec, ...]
    ) -> list[tuple[pa.Table, float]]:
        """Each query's result table and the seconds its own SQL took."""
        if len(queries) < self._min_uses():
            out = [self._timed(self.source.execute_arrow, self.render(period, q)) for q in queries]
            self.last_batch = BatchTiming(query_seconds=tuple(t for _, t in out))
            return out
        rendered = self.render_batch(period, queries)
        out = []
        with self.source.session() as session:
            started = time.perf_counter()
            for name, statement, _ in rendered.shared:
                session.create_table(name, statement)
            shared_seconds = time.perf_counter() - started
            if rendered.shared:
                log.info(
                    "computed %d blocks shared by the batch's %d queries in %.3fs",
                    len(rendered.shared), len(queries), shared_seconds,
                )
            for index, text in enumerate(rendered.queries):
                out.append(self._timed(session.execute_arrow, text))
                for name, _, last_use in rendered.shared:
                    if last_use == index:
                        session.drop_table(name)
        self.last_batch = BatchTiming(
            shared_seconds, len(rendered.shared), tuple(t for _, t in out)
        )
        return out

    @staticmethod
    def _timed(run: Callable[[str], pa.Table], text: str) -> tuple[pa.Table, float]:
        started = time.perf_counter()
        table = run(text)
        return table, time.perf_counter() - started

    def _cells(self, query: QuerySpec, result: tuple[pa.Table, float]) -> RawTable:
        table, seconds = result
        spec = get_metric(query.metric, query.version)
        scalars = [s for s in spec.statistics if s.kind is not StatKind.HISTOGRAM]
        histograms = [s for s in spec.statistics if s.kind is StatKind.HISTOGRAM]
        dims = [d.value for d in query.group_by]
        clamped = self.keying.clamped
        integer_columns = [
            c for s in scalars for c in metrics.result_columns(s, clamped) if not _is_key(c)
        ]
        key_columns = [
            c for s in scalars for c in metrics.result_columns(s, clamped) if _is_key(c)
        ]
        bin_columns = [
            c for h in histograms
            for c in (*metrics.histogram_columns(h.name), *metrics.disclosure_columns(h))
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
                (Dimension(d), self.carrier_id if d == "carrier" else str(columns[d][i]))
                for d in dims
            )
            values: dict[str, object] = {n: _as_int(columns[n][i]) for n in integer_columns}
            values.update({n: _as_key(columns[n][i]) for n in key_columns})
            if key in by_key and not histograms:
                raise DataSourceError("engine returned a cell twice")
            if by_key.setdefault(key, values) != values:
                raise DataSourceError("engine returned inconsistent rows of a cell")
            for h in histograms:
                bin_col, count_col, cents_col = metrics.histogram_columns(h.name)
                low, high, top = metrics.disclosure_columns(h)
                index = _as_int(columns[bin_col][i])
                if not 0 <= index < N_BINS:
                    raise DataSourceError("engine returned a histogram bin out of range")
                count = _as_int(columns[count_col][i])
                support = Support(count, _as_key(columns[low][i]), _as_key(columns[high][i]),
                                  top=_as_int(columns[top][i]))
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
            cells.append(RawCell(key=key, values=tuple(stats), supports=tuple(supports),
                                 bins=tuple(cell_bins)))
        cells.sort(key=lambda c: c.key)
        log.info("evaluated %s: %d cells in %.3fs", spec.key, len(cells), seconds)
        return RawTable(query=query, cells=tuple(cells))


def _is_key(column: str) -> bool:
    return column.endswith((metrics.KEY_LOW, metrics.KEY_HIGH))


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

    low, high = values.get(name + metrics.KEY_LOW), values.get(name + metrics.KEY_HIGH)
    assert low is None or isinstance(low, str)
    assert high is None or isinstance(high, str)
    members = number("") if stat.kind is StatKind.MEMBERS else number(metrics.SUPPORT)
    clamped = values.get(name + metrics.CLAMPED)
    assert clamped is None or isinstance(clamped, int)
    return Support(members, low, high, top=number(metrics.TOP), rest=number(metrics.REST),
                   clamped=clamped)


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
