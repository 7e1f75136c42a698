"""A query's SQL text in the source's dialect, built from the metric's expression and cached.

Rendering a large expression costs tenths of a second of Python, so the text is cached per
(dialect, tables, schema, period, query, keying). The carrier's own id is not part of it: the
carrier key is a constant the decoder fills in (see :mod:`carrier_node.query.decode`).

The project installs sqlglot's compiled build (its ``c`` extra, sqlglotc): the same text,
built and rendered 1.6x faster (:func:`compiled_sqlglot` tells which build is in use).
"""

from __future__ import annotations

import functools
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
    # The tree is built for this call alone: the generator may work on it without a copy.
    tree = expression(tables, schema, period, query, keying)
    tree = sql.for_dialect(sql.prune_unused_columns(tree), dialect)
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
    planned = batch.plan(
        [expression(tables, schema, period, q, keying) for q in queries],
        min_uses=min_uses,
        owned=True,  # built for this call alone
    )
    return RenderedBatch(
        shared=tuple(
            (t.name, t.create_statement(dialect), t.first_use, t.last_use) for t in planned.shared
        ),
        # The plan is this call's alone: the generator may work on it without a copy.
        queries=tuple(
            sql.for_dialect(q, dialect).sql(dialect=dialect, copy=False) for q in planned.queries
        ),
    )
