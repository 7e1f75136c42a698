"""Evaluation of the plausibility rules (:mod:`fedoversight.plausibility`) on a data source.

The rules run on a *scan* of each table: a query giving the table's columns in their canonical
types (the rows validation excludes left out), the row's source (:data:`FILE`) and its position
there (:data:`fedoversight.plausibility.ROW`). For files the position is the 1-based row number
within the file; for a warehouse table, what the table offers (PostgreSQL: the row's ``ctid``).

Each table takes two queries, both built as expressions and rendered for the source's dialect:
one counts the rows each rule flags per file (one ``COUNT(*) FILTER (WHERE …)`` per rule), the
other lists the first few flagged positions of the rules that flagged any. Nothing read is a
data value: counts and row positions only.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlglot import exp

from carrier_node.data.validation import FILE_COLUMN, ROW_COLUMN
from fedoversight.plausibility import AS_OF, MEMBER_BIRTH_DATE, ROW, RULES, Rule
from fedoversight.schema import TABLES

#: The scan column naming the row's source (a file's path within the data directory, or the
#: warehouse table); the scan's position column is the same as validation's.
FILE = FILE_COLUMN
if ROW != ROW_COLUMN:  # pragma: no cover - the two declarations must agree
    raise RuntimeError("the plausibility rules and the file scans name the row differently")
#: How many flagged row positions a finding lists.
FIRST_ROWS = 5

#: Runs one query and returns its rows.
Runner = Callable[[str], Sequence[tuple[object, ...]]]


@dataclass(frozen=True)
class RuleFinding:
    """Rows of one source that one rule flags."""

    rule: Rule
    #: The file (or warehouse table) the rows are in.
    file: str
    rows: int
    #: The first flagged rows' positions, in source order (at most :data:`FIRST_ROWS`).
    first_rows: tuple[int | str, ...]


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _bind_as_of(expression: exp.Expr, as_of: datetime.date) -> exp.Expr:
    date = exp.cast(exp.Literal.string(as_of.isoformat()), exp.DataType.build("DATE"))

    def replace(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder) and node.name == AS_OF.name:
            return date.copy()
        return node

    return expression.copy().transform(replace)


def _in_source_order(window: exp.Expr) -> exp.Expr:
    """The window with ``ORDER BY … ROW`` made ``ORDER BY … FILE, ROW``: positions restart in
    each file of a table, and "an earlier row" is one of an earlier file or earlier in its file."""
    window = window.copy()
    for order in window.find_all(exp.Order):
        ordered: list[exp.Expr] = []
        for item in order.expressions:
            if isinstance(item.this, exp.Column) and item.this.name == ROW:
                ordered.append(exp.Ordered(this=_col(FILE)))
            ordered.append(item)
        order.set("expressions", ordered)
    return window


def _uses_birth_date(rules: Sequence[Rule]) -> bool:
    return any(c.name == MEMBER_BIRTH_DATE for r in rules for c in r.flags.find_all(exp.Column))


def flag_alias(index: int) -> str:
    return f"__flag_{index}"


def _flags_query(
    table: str,
    rules: Sequence[Rule],
    scans: Mapping[str, exp.Query],
    as_of: datetime.date,
) -> exp.Select:
    """``SELECT FILE, ROW, flag_0, … FROM …``: one boolean per rule and row."""
    windows: list[exp.Expr] = []
    seen: set[str] = set()
    for rule in rules:
        for name, window in rule.derived:
            if name not in seen:
                seen.add(name)
                windows.append(exp.alias_(_in_source_order(window), name, quoted=True))
    source = scans[table].copy().subquery(_ident("scan"))
    everything = exp.Column(this=exp.Star(), table=_ident("scan"))
    derived = exp.select(everything, *windows).from_(source)
    if _uses_birth_date(rules):
        if "eligibility" in scans:
            births = (
                exp.select(
                    exp.alias_(_col("member_id"), "__birth_member", quoted=True),
                    exp.alias_(exp.Min(this=_col("birth_date")), MEMBER_BIRTH_DATE, quoted=True),
                )
                .from_(scans["eligibility"].copy().subquery(_ident("elig")))
                .group_by(_col("member_id"))
            )
            derived = derived.select(_col(MEMBER_BIRTH_DATE, "births")).join(
                births.subquery(_ident("births")),
                on=exp.EQ(
                    this=_col("member_id", "scan"), expression=_col("__birth_member", "births")
                ),
                join_type="left",
            )
        else:  # no eligibility to compare with: the rules using it flag nothing
            null_date = exp.cast(exp.null(), exp.DataType.build("DATE"))
            derived = derived.select(exp.alias_(null_date, MEMBER_BIRTH_DATE, quoted=True))
    flags = [
        exp.alias_(
            exp.func("coalesce", exp.Paren(this=_bind_as_of(rule.flags, as_of)), exp.false()),
            flag_alias(i),
            quoted=True,
        )
        for i, rule in enumerate(rules)
    ]
    return exp.select(_col(FILE), _col(ROW), *flags).from_(derived.subquery(_ident("derived")))


def _counts_query(flags: exp.Select, count: int) -> exp.Select:
    # Every output column named: a source may key its result by column name.
    counts = [
        exp.alias_(
            exp.Filter(
                this=exp.Count(this=exp.Star()), expression=exp.Where(this=_col(flag_alias(i)))
            ),
            f"__count_{i}",
            quoted=True,
        )
        for i in range(count)
    ]
    return (
        exp.select(_col(FILE), *counts).from_(flags.subquery(_ident("flags"))).group_by(_col(FILE))
    )


def _first_rows_query(
    flags: exp.Select, fired: Sequence[int], row_as_text: bool, first: int, counted: bool = False
) -> exp.Query:
    """Each fired flag's first positions per file; ``counted`` adds the rows it flags in the
    file (``__n``) to each."""
    parts: list[exp.Select] = []
    for index in fired:
        rank = exp.Window(
            this=exp.RowNumber(),
            partition_by=[_col(FILE)],
            order=exp.Order(expressions=[exp.Ordered(this=_col(ROW))]),
        )
        ranked = (
            exp.select(_col(FILE), _col(ROW), exp.alias_(rank, "__rank", quoted=True))
            .from_(exp.Table(this=_ident("flags")))
            .where(_col(flag_alias(index)))
        )
        per_file = exp.Window(this=exp.Count(this=exp.Star()), partition_by=[_col(FILE)])
        if counted:
            ranked = ranked.select(exp.alias_(per_file, "__n", quoted=True))
        row: exp.Expr = _col(ROW)
        if row_as_text:
            row = exp.cast(row, exp.DataType.build("TEXT"))
        parts.append(
            exp.select(
                exp.alias_(exp.Literal.number(index), "__rule", quoted=True),
                _col(FILE),
                exp.alias_(row, ROW, quoted=True),
                *([_col("__n")] if counted else []),
            )
            .from_(ranked.subquery(_ident("ranked")))
            .where(exp.LTE(this=_col("__rank"), expression=exp.Literal.number(first)))
        )
    query: exp.Query = parts[0]
    for part in parts[1:]:
        query = exp.union(query, part, distinct=False)
    # The flags once, as a common table: each rule's part reads it.
    return query.with_(_ident("flags"), as_=flags, copy=False)


def locate_flags(
    flags: exp.Select,
    count: int,
    run: Runner,
    dialect: str,
    *,
    row_as_text: bool = False,
    first: int = FIRST_ROWS,
    all_true: bool = False,
) -> dict[tuple[int, str], tuple[int, tuple[int | str, ...]]]:
    """Where the flags of a ``SELECT FILE, ROW, __flag_0, … __flag_{count-1}`` are true:
    ``(flag index, file) -> (rows flagged, the first few positions in source order)``.

    Two queries: the count of each flag per file, then (only when some flag is true) the first
    positions of the flags that are. One when the caller knows each flag is true in some row
    (``all_true``): the positions, each with its count.
    """
    if all_true:
        query = _first_rows_query(flags, range(count), row_as_text, first, counted=True)
        found: dict[tuple[int, str], tuple[int, list[int | str]]] = {}
        for flag_index, flag_file, position, n in run(query.sql(dialect=dialect)):
            key = (_number(flag_index), str(flag_file))
            at: int | str = str(position) if row_as_text else _number(position)
            found.setdefault(key, (_number(n), []))[1].append(at)
        return {key: (n, tuple(sorted(at, key=_position_order))) for key, (n, at) in found.items()}
    counts = run(_counts_query(flags, count).sql(dialect=dialect))
    per_file: dict[tuple[int, str], int] = {}
    for row in counts:
        file = str(row[0])
        for index, n in enumerate(row[1:]):
            if n:
                per_file[(index, file)] = _number(n)
    if not per_file:
        return {}
    fired = sorted({index for index, _ in per_file})
    positions: dict[tuple[int, str], list[int | str]] = {}
    listed = run(_first_rows_query(flags, fired, row_as_text, first).sql(dialect=dialect))
    for flag_index, flag_file, position in listed:
        value: int | str = str(position) if row_as_text else _number(position)
        positions.setdefault((_number(flag_index), str(flag_file)), []).append(value)
    return {
        key: (n, tuple(sorted(positions.get(key, []), key=_position_order)))
        for key, n in per_file.items()
    }


def evaluate(
    scans: Mapping[str, exp.Query],
    run: Runner,
    dialect: str,
    as_of: datetime.date,
    *,
    row_as_text: bool = False,
    first: int = FIRST_ROWS,
) -> list[RuleFinding]:
    """Every rule of every scanned table: the rows flagged per source, with the first few.

    Args:
        scans: table name -> its scan (canonical columns, :data:`FILE` and ``ROW``); tables
            without a scan are not checked.
        run: runs one query of ``dialect`` and returns its rows.
        as_of: the date the extract is checked against.
        row_as_text: give positions as text (a warehouse's row identity), not numbers.
    """
    findings: list[RuleFinding] = []
    for table in TABLES:
        rules = [r for r in RULES if r.table == table.name]
        if table.name not in scans or not rules:
            continue
        flags = _flags_query(table.name, rules, scans, as_of)
        located = locate_flags(
            flags, len(rules), run, dialect, row_as_text=row_as_text, first=first
        )
        for (index, file), (count, rows_at) in sorted(located.items()):
            findings.append(RuleFinding(rules[index], file, count, rows_at))
    return findings


def _number(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {type(value).__name__}")
    return value


def _position_order(position: int | str) -> tuple[int, ...]:
    """Numbers in order; a ``ctid`` such as ``(12,3)`` by block, then item."""
    if isinstance(position, int):
        return (position,)
    return tuple(int(p) for p in position.strip("()").split(",") if p.strip().isdigit())
