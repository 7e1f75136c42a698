"""Evaluate a request's queries where the data lives and hand back raw (unprotected) cells.

The engine renders each query (:mod:`carrier_node.query.render`), runs a request's queries as
one batch on a session of the data source (:mod:`carrier_node.query.batch`), and decodes the
Arrow results into raw cells (:mod:`carrier_node.query.decode`). Raw cells never leave the node:
:mod:`carrier_node.disclosure` turns them into the only thing that is ever sent.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from carrier_node.budget import Budget
from carrier_node.cells import RawTable
from carrier_node.data.control_totals import ControlTotals
from carrier_node.data.source import DataSource
from carrier_node.query import render
from carrier_node.query.decode import decode_cells
from carrier_node.query.render import Keying, RenderedBatch
from fedoversight.dimensions import Dimension
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period

log = logging.getLogger(__name__)


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
        self,
        source: DataSource,
        carrier_id: str,
        schema: str | None = None,
        *,
        record_secret: str | None = None,
        clamped: bool = False,
        control_totals: ControlTotals | None = None,
    ) -> None:
        """``record_secret``: the node's secret for record keys (a fresh random one, for this
        engine only, when None: tools that need no consistency across processes); ``clamped``:
        statistics come with clamped sums too (differential privacy); ``control_totals``: the
        carrier's declared monthly totals (ops.data_quality compares the data with them)."""
        self.source = source
        self.carrier_id = carrier_id
        self.schema = schema
        self.keying = Keying(
            record_secret if record_secret is not None else secrets.token_hex(16),
            clamped=clamped,
            control_totals=control_totals or ControlTotals(),
        )
        if not self.keying.record_secret:
            raise ValueError("record keys need a secret")
        self.last_batch = BatchTiming()

    def _tables(self) -> frozenset[str] | None:
        return getattr(self.source, "tables", None)

    def _keying(self, int64_sums: bool | None = None) -> Keying:
        """The keying of the SQL for the source's data: with 64-bit sums where the source
        (or the session, ``int64_sums``, for the files it reads) knows they fit. DuckDB only:
        the function is DuckDB's."""
        if int64_sums is None:
            int64_sums = bool(getattr(self.source, "money_sums_fit_int64", False))
        int64_sums = int64_sums and self.source.dialect == "duckdb"
        if int64_sums == self.keying.int64_sums:
            return self.keying
        return dataclasses.replace(self.keying, int64_sums=int64_sums)

    def render(self, period: Period, query: QuerySpec, *, int64_sums: bool | None = None) -> str:
        """The SQL text for ``query`` in the source's dialect (stays inside the node).

        Cached (see :mod:`carrier_node.query.render`).
        """
        return render.render(
            self.source.dialect,
            self._tables(),
            self.schema,
            period,
            query,
            self._keying(int64_sums),
        )

    def _min_uses(self) -> int:
        """Readers a block needs to become a table: two for DuckDB (which streams a block
        one query reads), one where the source plans better over tables it has statistics
        of (PostgreSQL misjudges the size of a member-months block inlined in a query, and
        picked nested loops that ran for hours)."""
        return int(getattr(self.source, "block_min_uses", 2))

    def render_batch(
        self,
        period: Period,
        queries: tuple[QuerySpec, ...],
        *,
        int64_sums: bool | None = None,
    ) -> RenderedBatch:
        """The SQL of ``queries`` evaluated together (see :mod:`carrier_node.query.batch`)."""
        return render.render_batch(
            self.source.dialect,
            self._tables(),
            self.schema,
            period,
            queries,
            self._keying(int64_sums),
            self._min_uses(),
        )

    def evaluate(self, period: Period, query: QuerySpec) -> RawTable:
        return self.evaluate_many(period, [query])[0]

    def evaluate_many(
        self, period: Period, queries: Sequence[QuerySpec], budget: Budget | None = None
    ) -> list[RawTable]:
        """Evaluate the queries of one request, in order.

        Blocks that several of them compute (member months, final-action fills, stays, ...) are
        computed once into temporary tables of one session of the source and read by each
        query that needs them; a table is made just before its first reader and dropped after
        its last, so only the blocks in use take memory.

        ``budget``: checked before each statement; cancelling it interrupts the statement
        running (where the source can: DuckDB's interrupt, PostgreSQL's cancel), and the
        budget's error is raised instead of the source's.
        """
        local = [self._local_query(q) for q in queries]
        active = tuple(q for q in local if q is not None)
        results = iter(self._run(period, active, budget or Budget.unlimited()))
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
        self, period: Period, queries: tuple[QuerySpec, ...], budget: Budget
    ) -> list[tuple[pa.Table, float]]:
        """Each query's result table and the seconds its own SQL took."""
        out = []
        shared_seconds = 0.0
        with self.source.session() as session, budget.interruptible(_interrupt_of(session)):
            # Rendered for the data this session reads (whether its sums fit 64 bits is known
            # for the files as validated when it opened).
            int64_sums = bool(getattr(session, "money_sums_fit_int64", False))
            shared: tuple[tuple[str, str, int, int], ...] = ()
            if len(queries) < self._min_uses():
                texts = tuple(self.render(period, q, int64_sums=int64_sums) for q in queries)
            else:
                rendered = self.render_batch(period, queries, int64_sums=int64_sums)
                shared, texts = tuple(rendered.shared), tuple(rendered.queries)
            limit: Callable[[float], None] | None = getattr(session, "time_limit", None)
            if limit is not None and math.isfinite(budget.remaining()):
                limit(budget.remaining())  # the source's own guard, should an interrupt be lost
            try:
                for index, text in enumerate(texts):
                    # A shared table is made just before the first query that needs it and
                    # dropped after the last, so only the tables in use take memory (in
                    # creation order: a table made from another comes after it).
                    started = time.perf_counter()
                    for name, statement, first_use, _ in shared:
                        if first_use == index:
                            budget.check("the engine")
                            session.create_table(name, statement)
                    shared_seconds += time.perf_counter() - started
                    budget.check("the engine")
                    out.append(self._timed(session.execute_arrow, text))
                    for name, _, _, last_use in shared:
                        if last_use == index:
                            session.drop_table(name)
                if shared:
                    log.info(
                        "computed %d blocks shared by the batch's %d queries in %.3fs",
                        len(shared),
                        len(queries),
                        shared_seconds,
                    )
            except Exception:
                budget.check("the engine")  # interrupted: the budget's error, not the source's
                raise
        self.last_batch = BatchTiming(shared_seconds, len(shared), tuple(t for _, t in out))
        return out

    @staticmethod
    def _timed(run: Callable[[str], pa.Table], text: str) -> tuple[pa.Table, float]:
        started = time.perf_counter()
        table = run(text)
        return table, time.perf_counter() - started

    def _cells(self, query: QuerySpec, result: tuple[pa.Table, float]) -> RawTable:
        table, seconds = result
        raw = decode_cells(query, table, self.carrier_id, clamped=self.keying.clamped)
        log.info(
            "evaluated %s@%d: %d cells in %.3fs",
            query.metric,
            query.version,
            len(raw.cells),
            seconds,
        )
        return raw


def _interrupt_of(session: object) -> Callable[[], None]:
    """How to stop the statement a session is running (nothing, for a source that cannot)."""
    interrupt: Callable[[], None] | None = getattr(session, "interrupt", None)
    return interrupt if interrupt is not None else _no_interrupt


def _no_interrupt() -> None:
    return None
