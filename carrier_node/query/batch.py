"""Shared work across the queries of one request.

A request usually asks several metrics over the same period, and their queries are built from
the same blocks: the period's member months, final-action fills, acute stays, per-member
totals. Each block is a common table expression (CTE) of its query, so evaluated one query at a
time the engine computes it again for every query that uses it.

:func:`plan` finds the blocks that several queries of a batch share and turns each into one
temporary table, computed once and read by every query that needs it:

1. Every CTE is renamed after its content: ``shared_<digest>``, the digest taken over the CTE's
   body with the CTEs it reads already renamed. Two CTEs have the same name exactly when they
   compute the same rows from the same tables (the carrier's data is fixed for the request).
   References keep their old name as an alias, so qualified columns still resolve.
2. A CTE used by two or more queries (``min_uses``) is shared: the queries lose it from their
   ``WITH``. Whatever a shared CTE reads is shared too (it has the same name in the same
   queries). A shared CTE read by a query or by several shared CTEs becomes a temporary table
   (``CREATE TEMPORARY TABLE ... AS``), created in dependency order just before the first
   query that reads it and dropped after the last; one read only by a single other shared CTE
   goes into that one's statement as a CTE instead.
3. A shared block computes only the output columns its readers in the batch name (see
   :func:`_prune`): a request of a few metrics reads a few of the member-month totals.

Everything stays expressions: the names are digests, the bodies the metrics' own trees.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.sql import for_dialect, with_cte

#: Prefix of a shared block's table name (the rest is a digest of its content).
PREFIX = "shared_"


@dataclass(frozen=True)
class SharedTable:
    """A block computed once for the batch."""

    name: str
    body: exp.Query
    #: How many of the batch's queries read it.
    uses: int
    #: Index of the last query that reads it (directly or through another shared table):
    #: the table can be dropped once that query has run.
    last_use: int
    #: Index of the first query that reads it (likewise): the table need not exist before.
    first_use: int = 0

    def create_statement(self, dialect: str, *, copy: bool = True) -> str:
        """The statement creating the table. ``copy`` false: the body is the caller's to
        rewrite (a plan rendered once, in one dialect), and is rewritten in place."""
        body = self.body.copy() if copy else self.body
        create = exp.Create(
            this=_table(self.name),
            kind="TABLE",
            expression=for_dialect(body, dialect),
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
        )
        return create.sql(dialect=dialect, copy=False)


@dataclass(frozen=True)
class BatchPlan:
    #: Tables to create, in dependency order.
    shared: tuple[SharedTable, ...]
    #: Each query of the batch, reading the shared tables (same order as given).
    queries: tuple[exp.Query, ...]


def _digest(body: exp.Expr) -> str:
    """The name of a block computing ``body`` (the planner's own copy: rendered in place,
    as the batch renders it later, without a copy of a large tree for each block)."""
    text = body.sql(dialect="duckdb", copy=False)
    return PREFIX + hashlib.sha256(text.encode()).hexdigest()[:20]


def _table(name: str) -> exp.Table:
    """A reference to the table ``name`` (a plain identifier: built, not parsed)."""
    return exp.Table(this=exp.to_identifier(name))


class _NestedWith(Exception):
    """A WITH below a query's top level: the planner leaves such a query as it is."""


def _rename_references(
    tree: exp.Expr, names: dict[str, str], done: list[tuple[exp.Expr, exp.Expr]]
) -> exp.Expr:
    """``tree`` (changed in place) with every unqualified table reference to a key of
    ``names`` pointing at its new name; the old name stays as the alias where the reference
    had none. Each replacement is recorded in ``done`` as (new, old). Raises
    :class:`_NestedWith` on a WITH in ``tree``, before changing anything (the planner's check
    that no name is shadowed, made in the same walk)."""
    # The tables are found by sqlglot's own walk; a Python call per node of a large tree
    # (a transform) cost about twice as much.
    found = list(tree.find_all(exp.Table, exp.With))
    if any(isinstance(node, exp.With) for node in found):
        raise _NestedWith
    for node in found:
        if (
            node.args.get("db")
            or node.args.get("catalog")
            or not isinstance(node.this, exp.Identifier)
            or node.name not in names
        ):
            continue
        renamed = _table(names[node.name])
        alias = node.args.get("alias")
        renamed.set(
            "alias",
            alias.copy() if alias else exp.TableAlias(this=exp.to_identifier(node.name)),
        )
        done.append((renamed, node))
        if node is tree:
            return renamed
        node.replace(renamed)
    return tree


def _canonical(query: exp.Query) -> tuple[list[tuple[str, exp.Query]], exp.Query] | None:
    """The query's top-level CTEs renamed after their content, and the query without them;
    None when the query's shape is not one this planner rewrites (then it runs as it was
    given, ``query`` as it was).

    The query is the planner's to rewrite: its WITH is taken off it, and its CTE bodies and
    the rest renamed in place."""
    with_ = query.args.get("with_")
    if with_ is None or with_.args.get("recursive"):
        return None
    bodies = [cte.this for cte in with_.expressions]
    if not all(isinstance(body, exp.Query) for body in bodies):
        return None
    # A WITH below the top level could shadow a name: such queries are left alone. Each part
    # is checked as it is renamed (the query's own select last); on finding one, what was
    # renamed before is put back.
    query.set("with_", None)
    names: dict[str, str] = {}
    ctes: list[tuple[str, exp.Query]] = []
    done: list[tuple[exp.Expr, exp.Expr]] = []
    try:
        for cte, body in zip(with_.expressions, bodies, strict=True):
            renamed = _rename_references(body, names, done)
            assert isinstance(renamed, exp.Query)
            name = _digest(renamed)
            names[cte.alias] = name
            if all(name != seen for seen, _ in ctes):  # the same block twice is one block
                ctes.append((name, renamed))
        main = _rename_references(query, names, done)
    except _NestedWith:
        for renamed, original in reversed(done):
            renamed.replace(original)
        query.set("with_", with_)
        return None
    assert isinstance(main, exp.Query)
    return ctes, main


def _references(tree: exp.Expr, names: set[str]) -> set[str]:
    return {t.name for t in tree.find_all(exp.Table) if not t.args.get("db") and t.name in names}


def plan(queries: Sequence[exp.Query], *, min_uses: int = 2, owned: bool = False) -> BatchPlan:
    """Share the blocks that ``min_uses`` or more of ``queries`` compute.

    A shared block whose only reader is one other shared block is not made a table of its own:
    it goes into that block's statement as a CTE, where the engine streams it and reads only
    the columns used (a table of its own would hold every column of every row, e.g. all of a
    period's claim lines, for one reader).

    ``owned``: the queries are the planner's to rewrite in place (the engine builds them for
    the plan alone); else they are copied first and stay as they were. Copying a large tree
    costs about as much as rendering it.
    """
    if not owned:
        queries = [q.copy() for q in queries]
    canonical = [_canonical(q) for q in queries]
    uses: Counter[str] = Counter()
    last_use: dict[str, int] = {}
    first_use: dict[str, int] = {}
    bodies: dict[str, exp.Query] = {}
    order: list[str] = []
    for index, entry in enumerate(canonical):
        if entry is None:
            continue
        ctes, _ = entry
        for name, body in ctes:
            if name not in bodies:
                bodies[name] = body
                order.append(name)
            last_use[name] = index
            first_use.setdefault(name, index)
        uses.update({name for name, _ in ctes})
    shared_names = {name for name in order if uses[name] >= min_uses}

    # Who reads each shared block: other shared blocks (by name), or anything else. A block
    # reads the same in every query holding it (its name is its content): looked at once.
    shared_readers: dict[str, set[str]] = {name: set() for name in shared_names}
    read_elsewhere: set[str] = set()
    reads_of: dict[str, set[str]] = {}
    for reader in order:
        reads_of[reader] = _references(bodies[reader], shared_names)
        for name in reads_of[reader]:
            if reader in shared_names:
                shared_readers[name].add(reader)
            else:
                read_elsewhere.add(name)
    for entry in canonical:
        if entry is not None:
            read_elsewhere |= _references(entry[1], shared_names)
    tables = {
        name for name in shared_names if name in read_elsewhere or len(shared_readers[name]) != 1
    }

    rewritten: list[exp.Query] = []
    for original, entry in zip(queries, canonical, strict=True):
        if entry is None:
            rewritten.append(original)
            continue
        ctes, main = entry
        for name, body in ctes:
            if name not in shared_names:
                main = with_cte(main, name, body)
        rewritten.append(main)

    # A ``*`` or ``alias.*`` read of a shared block names its columns instead, so that pruning
    # sees which of them are read: blocks first (each reading only blocks before it), then
    # the queries.
    columns: dict[str, list[str]] = {}
    for name in order:
        sql.expand_stars(bodies[name], columns)
        if name in shared_names and (named := sql.output_names(bodies[name])) is not None:
            columns[name] = named
    for query in rewritten:
        sql.expand_stars(query, columns)

    # Each shared block computes only the columns its readers in this batch use (a request of
    # a few metrics reads a few of the member-month totals, say): readers first, so a block
    # pruned narrows what it reads of its own sources.
    # (What each tree reads is looked up once: pruning a select list leaves its tables.)
    # Each query first drops what its own subqueries compute and nothing reads
    # (sql.prune_unused_columns), so it names no more of a block than it uses.
    rewritten = [sql.prune_unused_columns(q) for q in rewritten]
    # (A query pruned is gathered once: the tables it reads are among what it names.)
    query_readers = [_Reader.of(q) for q in rewritten]
    query_reads = [set(r.aliases) & shared_names for r in query_readers]
    block_reads = {n: reads_of[n] - {n} for n in shared_names}
    # A block is a reader of the blocks below it once it has been pruned itself (readers
    # first), so what it reads is gathered then, once.
    gathered: dict[int, _Reader] = {}

    def gather(tree: exp.Expr) -> _Reader:
        if id(tree) not in gathered:
            gathered[id(tree)] = _Reader.of(tree)
        return gathered[id(tree)]

    for name in reversed(order):
        if name not in shared_names:
            continue
        readers = [r for r, reads in zip(query_readers, query_reads, strict=True) if name in reads]
        readers += [gather(bodies[o]) for o, reads in block_reads.items() if name in reads]
        _prune(bodies[name], name, readers)
        # And inward: the block computes, and reads of what it reads, only what it gives.
        sql.prune_unused_columns(bodies[name])

    def statement(name: str) -> exp.Query:
        """The block's body, with the shared blocks it reads that are not tables as CTEs."""
        inlined: list[str] = []
        pending = [name]
        while pending:
            for dep in _references(bodies[pending.pop()], shared_names - tables):
                if dep not in inlined:
                    inlined.append(dep)
                    pending.append(dep)
        # No copy: a block that is not a table has one reader, so it goes into one
        # statement, and each body is the planner's own (the queries were copied or given).
        body = bodies[name]
        for dep in sorted(inlined, key=order.index):
            body = with_cte(body, dep, bodies[dep])
        return body

    shared = tuple(
        SharedTable(name, statement(name), uses[name], last_use[name], first_use[name])
        for name in order
        if name in tables
    )
    return BatchPlan(shared=shared, queries=tuple(rewritten))


@dataclass(frozen=True)
class _Reader:
    """What pruning needs of a tree reading shared blocks, gathered in one walk."""

    #: Every identifier of the tree (lower case): a column of that name may be read.
    identifiers: frozenset[str]
    #: The qualifiers of its ``alias.*`` projections ("" for a bare ``*``).
    stars: frozenset[str]
    #: The aliases under which it reads each table.
    aliases: dict[str, frozenset[str]]

    @classmethod
    def of(cls, tree: exp.Expr) -> _Reader:
        identifiers: set[str] = set()
        stars: set[str] = set()
        aliases: dict[str, set[str]] = {}
        for node in tree.walk():
            if isinstance(node, exp.Identifier):
                identifiers.add(node.name.lower())
            elif isinstance(node, exp.Table) and not node.args.get("db"):
                aliases.setdefault(node.name, set()).add(node.alias_or_name.lower())
            elif isinstance(node, exp.Select):
                for projection in node.expressions:
                    if isinstance(projection, exp.Star):
                        stars.add("")
                    elif isinstance(projection, exp.Column) and isinstance(
                        projection.this, exp.Star
                    ):
                        stars.add((projection.table or "").lower())
        return cls(
            frozenset(identifiers),
            frozenset(stars),
            {name: frozenset(found) for name, found in aliases.items()},
        )

    def takes_all_of(self, name: str) -> bool:
        """Whether it selects every column of the table ``name`` (``*`` or ``alias.*``; a
        ``*`` with no table counts for every table)."""
        return "" in self.stars or bool(self.stars & self.aliases.get(name, frozenset()))


def _prune(body: exp.Query, name: str, readers: Sequence[_Reader]) -> None:
    """Drop (in place) the output columns of the shared block ``name`` that none of its
    ``readers`` can name.

    Conservative: a column stays when its name appears as any identifier of any reader (of
    whichever table), or in the block's own clauses besides its select list; nothing is dropped
    when a reader selects the block's ``*``, or from a body whose select list decides its rows
    or their order (DISTINCT, GROUP BY ALL, positional GROUP BY or ORDER BY, set operations).
    A column dropped wrongly would make the statement fail to bind, never change a value.
    """
    if not isinstance(body, exp.Select) or body.args.get("distinct"):
        return
    if any(reader.takes_all_of(name) for reader in readers):
        return
    clauses = [body.args.get(k) for k in ("group", "order", "having", "qualify")]
    for clause in clauses:
        if clause is None:
            continue
        if isinstance(clause, exp.Group) and clause.args.get("all"):
            return
        if any(isinstance(e, exp.Literal) for e in clause.expressions):
            return
        for ordered in clause.find_all(exp.Ordered):
            if isinstance(ordered.this, exp.Literal):
                return
    used = set().union(*(reader.identifiers for reader in readers))
    used |= {i.name.lower() for c in clauses if c is not None for i in c.find_all(exp.Identifier)}
    kept = [
        e
        for e in body.expressions
        if isinstance(e, exp.Star)
        or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
        or not e.alias_or_name
        or e.alias_or_name.lower() in used
    ]
    if kept and len(kept) < len(body.expressions):
        body.set("expressions", kept)
