"""A query's SQL text in the source's dialect, built from the metric's expression and cached.

Rendering a large expression costs tenths of a second of Python, so the text is cached per
(dialect, tables, schema, period, query, keying). The carrier's own id is not part of it: the
carrier key is a constant the decoder fills in (see :mod:`carrier_node.query.decode`).

The project installs sqlglot's compiled build (its ``c`` extra, sqlglotc): the same text,
built and rendered 1.6x faster (:func:`compiled_sqlglot` tells which build is in use).

Building a batch makes a few hundred thousand short-lived Python objects; Python's cyclic
garbage collector would stop several times during it to walk every object of the process.
:func:`collector_paused` holds it off while a text is built (see there).
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlglot import exp

from carrier_node.data.control_totals import ControlTotals
from carrier_node.query import batch, metrics, sql
from carrier_node.query.aggregate import BuildContext
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period


def compiled_sqlglot() -> bool:
    """Whether sqlglot's compiled modules (sqlglotc), not its pure-Python ones, are in use."""
    import sqlglot.generator

    return not str(sqlglot.generator.__file__).endswith(".py")


class _CollectorPause:
    """Python's cyclic garbage collector off while any holder holds it (several threads may
    render at once), back as it was when the last one lets go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._was_enabled:
                    gc.enable()


#: Holds off the cyclic garbage collector while a query's or a batch's text is built. The
#: collector's full passes walk every object of the process (the node's libraries make about
#: a million), and building the monthly suite's batch allocated enough to set off three of
#: them: 0.58-0.76 s a cold render with it running, 0.35-0.47 s without (2-core AMD EPYC,
#: alternating). The trees built and dropped meanwhile (parent and child refer to each other)
#: are freed by the collector's first young-generation pass after it, which walks only them.
collector_paused = _CollectorPause()


#: Stands in for the carrier id inside cached SQL; the real id replaces it in the result.
ANY_CARRIER = "carrier"


@dataclass(frozen=True)
class Keying:
    """What a node's queries are built with besides the query: the secret of its record keys,
    whether statistics come with clamped sums, and the carrier's control totals."""

    record_secret: str
    #: Whether statistics also come with clamped sums (differential privacy).
    clamped: bool = False
    #: The carrier's declared monthly totals (see :mod:`carrier_node.data.control_totals`).
    control_totals: ControlTotals = field(default_factory=ControlTotals)
    #: Whether every sum of one table's cents is known to fit a 64-bit integer, so that the
    #: blocks marked for it sum in 64 bits (DuckDB only; see :func:`sql.int64_sums`).
    int64_sums: bool = False


def expression(
    tables: frozenset[str] | None,
    schema: str | None,
    period: Period,
    query: QuerySpec,
    keying: Keying,
) -> exp.Query:
    context = BuildContext(
        ANY_CARRIER,
        period,
        query,
        tables=tables,
        record_secret=keying.record_secret,
        clamped=keying.clamped,
        control_totals=keying.control_totals,
    )
    return sql.qualify_tables(metrics.build(context), schema)


@functools.lru_cache(maxsize=512)
def render(
    dialect: str,
    tables: frozenset[str] | None,
    schema: str | None,
    period: Period,
    query: QuerySpec,
    keying: Keying,
) -> str:
    with collector_paused():
        # The tree is built for this call alone: the generator may work on it without a copy.
        tree = sql.prune_unused_columns(expression(tables, schema, period, query, keying))
        if keying.int64_sums:
            sql.int64_sums(tree)  # once pruned (see there)
        tree = sql.for_dialect(tree, dialect)
        return tree.sql(dialect=dialect, copy=False)


@dataclass(frozen=True)
class RenderedBatch:
    """SQL text of a batch: shared tables (name, CREATE statement, indexes of the first and
    the last query reading it) in creation order, then the queries."""

    shared: tuple[tuple[str, str, int, int], ...]
    queries: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def render_batch(
    dialect: str,
    tables: frozenset[str] | None,
    schema: str | None,
    period: Period,
    queries: tuple[QuerySpec, ...],
    keying: Keying,
    min_uses: int = 2,
) -> RenderedBatch:
    with collector_paused():
        planned = batch.plan(
            [expression(tables, schema, period, q, keying) for q in queries],
            min_uses=min_uses,
            owned=True,  # built for this call alone
        )
        if keying.int64_sums:  # once pruned (see sql.int64_sums)
            for tree in [*(t.body for t in planned.shared), *planned.queries]:
                sql.int64_sums(tree)
        return RenderedBatch(
            shared=tuple(
                (t.name, t.create_statement(dialect, copy=False), t.first_use, t.last_use)
                for t in planned.shared
            ),
            # The plan is this call's alone: the generator may work on it without a copy.
            queries=tuple(
                sql.for_dialect(q, dialect).sql(dialect=dialect, copy=False)
                for q in planned.queries
            ),
        )
