"""Validation of the carrier's data files against the data schema (:mod:`fedoversight.schema`).

A data directory holds one file per table, ``NAME.parquet`` or ``NAME.csv``. Each table is
checked in one aggregate pass over its file: every count (values that do not parse, empty
required values, codes outside a closed set, end dates before start dates) is a
``count(*) FILTER (WHERE …)`` of the same query. The outcome is a list of located
:class:`Problem` values and, for each usable table, the ``SELECT`` that reads the file into the
canonical types with the bad rows left out; :mod:`carrier_node.data.files` turns those into
views. The ``SELECT`` filters by the conditions some row of the checked file fails, only: a
clean file's view is a plain projection, so a query reads just the columns it uses (the data
source validates a file again when it changes, before reading it).

Rules:

- A missing or unreadable file, a missing required column, or a column where no value is usable
  (no value parses, every value is outside its code set, every value is empty) is an *error*:
  the table is unusable.
- A row with an empty required value, a value that does not parse (in any column: a value
  that is present but unreadable is not the same as an absent one), a code outside its closed
  set, or an enrollment span that ends before it starts is *excluded* and counted (a warning).
- Repeated medical claim keys ``(claim_id, claim_line, claim_version)`` are counted, not
  excluded.

Nothing here reads a data value into Python: problems carry table, file, column and row counts
only, and DuckDB's own error text (which can quote a row) is never kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
from sqlglot import exp

from fedoversight.schema import TABLES, TABLES_BY_NAME, Column, ColumnType, Table

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning"]
FileFormat = Literal["parquet", "csv"]

#: The canonical engine type of each schema type.
CANONICAL_TYPES: dict[ColumnType, str] = {
    ColumnType.CODE: "VARCHAR",
    ColumnType.DATE: "DATE",
    ColumnType.MONEY: "DECIMAL(18,2)",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.INT: "BIGINT",
    ColumnType.NUMBER: "DOUBLE",
}

#: Spans checked for an end before their start: table -> (start column, end column).
RANGE_CHECKS: dict[str, tuple[str, str]] = {
    "eligibility": ("enrollment_start_date", "enrollment_end_date"),
}

#: Keys whose repetition is counted (not excluded): table -> key columns.
DUPLICATE_KEYS: dict[str, tuple[str, ...]] = {
    "medical_claims": ("claim_id", "claim_line", "claim_version"),
}

_TYPE_WORDS: dict[ColumnType, str] = {
    ColumnType.CODE: "a text code",
    ColumnType.DATE: "an ISO date (YYYY-MM-DD)",
    ColumnType.MONEY: "a decimal amount",
    ColumnType.BOOL: "a boolean (true/false, t/f, 1/0, yes/no, y/n)",
    ColumnType.INT: "a whole number",
    ColumnType.NUMBER: "a number",
}

_ISO_DATE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
# Whole numbers; a trailing ".0" is accepted because exporters write nullable integers so.
_WHOLE_NUMBER = "[+-]?[0-9]+([.]0*)?"
_TRUE_WORDS = ("true", "t", "1", "yes", "y")
_FALSE_WORDS = ("false", "f", "0", "no", "n")

_INTEGER_TYPES = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
    }
)
_FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE"})


@dataclass(frozen=True)
class Problem:
    """One located data problem. Never holds a data value."""

    table: str
    #: The file name only (never the full path).
    file: str
    column: str | None
    #: "missing_file" | "missing_column" | "wrong_type" | "invalid_value" | "null_required" |
    #: "unreadable" | "duplicate_key" | "bad_range" | "ambiguous_file"
    kind: str
    #: Rows affected (0 for file- and column-level problems).
    rows: int
    #: "error": the table is unusable; "warning": rows excluded (or, for duplicate keys, kept)
    #: and counted.
    severity: Severity

    def describe(self) -> str:
        """One line for the carrier's engineer: table, file, column and counts only."""
        where = f"{self.table}: {self.file}"
        col = f"column {self.column!r}"
        text = _describe(self, where, col)
        if self.severity == "error":
            return f"{text} — table unusable"
        return text


def _describe(p: Problem, where: str, col: str) -> str:
    column = _schema_column(p.table, p.column)
    expected = _expected(column) if column is not None else "a valid value"
    if p.kind == "missing_file":
        return f"{where} not found in the data directory"
    if p.kind == "unreadable":
        return f"{where} could not be read"
    if p.kind == "ambiguous_file":
        return f"{p.table}: both {p.table}.parquet and {p.table}.csv exist; reading {p.file}"
    if p.kind == "missing_column":
        return f"{where} has no required {col}"
    if p.kind == "wrong_type":
        if p.severity == "warning":
            return (
                f"{where} {col} is stored as a number; codes may have lost leading zeros "
                "(store codes as text)"
            )
        if p.rows == 0:
            return f"{where} {col} is stored in a type that cannot hold {expected}"
        return f"{where} {col}: no value is {expected} ({_rows(p.rows)})"
    if p.kind == "invalid_value":
        if p.severity == "error":
            return f"{where} {col}: no value is {expected} ({_rows(p.rows)})"
        return f"{where} {col}: {_rows(p.rows)} with a value that is not {expected}; excluded"
    if p.kind == "null_required":
        if p.severity == "error":
            return f"{where} required {col} is empty in every row ({_rows(p.rows)})"
        return f"{where} required {col} is empty in {_rows(p.rows)}; excluded"
    if p.kind == "bad_range":
        start, _ = RANGE_CHECKS.get(p.table, ("the start date", ""))
        return f"{where} {col} is before {start} in {_rows(p.rows)}; excluded"
    if p.kind == "duplicate_key":
        key = ", ".join(DUPLICATE_KEYS.get(p.table, ()))
        return f"{where} {_rows(p.rows)} repeat an earlier ({key}); kept, counted"
    return f"{where} {p.kind} ({_rows(p.rows)})"


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _schema_column(table: str, name: str | None) -> Column | None:
    t = TABLES_BY_NAME.get(table)
    if t is None or name is None:
        return None
    try:
        return t.column(name)
    except KeyError:
        return None


def _expected(column: Column) -> str:
    if column.values is not None:
        return "one of " + ", ".join(sorted(column.values))
    return _TYPE_WORDS[column.type]


@dataclass(frozen=True)
class DataFile:
    """The file a table is read from."""

    table: Table
    path: Path
    format: FileFormat

    @property
    def name(self) -> str:
        return self.path.name

    def source(self) -> exp.Expr:
        """The table function that reads the file (the path is a string literal)."""
        path = exp.Literal.string(str(self.path.resolve()))
        if self.format == "parquet":
            return exp.func("read_parquet", path)
        # Every CSV column is read as text so codes keep their leading zeros.
        return exp.func(
            "read_csv",
            path,
            exp.EQ(this=exp.var("all_varchar"), expression=exp.true()),
            exp.EQ(this=exp.var("header"), expression=exp.true()),
        )


@dataclass(frozen=True)
class TableCheck:
    """The outcome of checking one table."""

    table: Table
    #: The file read, or None when there is none.
    file: DataFile | None
    problems: tuple[Problem, ...]
    #: The SELECT reading the file into canonical types without the excluded rows (filtered
    #: by the conditions that exclude a row of the file as checked, only); None when the table
    #: is absent or unusable.
    view: exp.Select | None
    #: Rows in the file, and rows left out of the view.
    rows: int = 0
    excluded: int = 0

    @property
    def usable(self) -> bool:
        return self.view is not None


def candidate_files(directory: Path, table: Table) -> list[DataFile]:
    """The files present for a table, Parquet first."""
    found: list[DataFile] = []
    for fmt in ("parquet", "csv"):
        path = directory / f"{table.name}.{fmt}"
        if path.is_file():
            found.append(DataFile(table, path, fmt))
    return found


def locate(directory: Path, table: Table) -> tuple[DataFile | None, list[Problem]]:
    """The file to read for a table (Parquet when both exist), with any problem finding it."""
    found = candidate_files(directory, table)
    if not found:
        if not table.required:
            return None, []
        missing = Problem(
            table.name, f"{table.name}.{{parquet,csv}}", None, "missing_file", 0, "error"
        )
        return None, [missing]
    chosen = found[0]
    if len(found) > 1:
        return chosen, [Problem(table.name, chosen.name, None, "ambiguous_file", 0, "warning")]
    return chosen, []


@dataclass(frozen=True)
class _ColumnPlan:
    column: Column
    #: The value as stored (blank text read as NULL); None when the column is absent.
    raw: exp.Expr | None
    #: The value in its canonical type; NULL where the stored value does not parse.
    typed: exp.Expr
    #: Whether a stored value can fail to parse.
    can_fail: bool


def _text_parse(raw: exp.Expr, ctype: ColumnType) -> tuple[exp.Expr, bool]:
    """The canonical value of a text value (copies of `raw`: a node has one place in a tree)."""
    target = exp.DataType.build(CANONICAL_TYPES[ctype], dialect="duckdb")
    if ctype is ColumnType.CODE:
        return raw.copy(), False
    if ctype is ColumnType.DATE:
        iso = exp.func("regexp_full_match", raw.copy(), exp.Literal.string(_ISO_DATE))
        return exp.Case().when(iso, exp.TryCast(this=raw.copy(), to=target)), True
    if ctype is ColumnType.INT:
        whole = exp.func("regexp_full_match", raw.copy(), exp.Literal.string(_WHOLE_NUMBER))
        return exp.Case().when(whole, exp.TryCast(this=raw.copy(), to=target)), True
    if ctype is ColumnType.BOOL:
        word = exp.Lower(this=raw.copy())
        return (
            exp.Case()
            .when(word.isin(*_TRUE_WORDS), exp.true())
            .when(word.copy().isin(*_FALSE_WORDS), exp.false()),
            True,
        )
    return exp.TryCast(this=raw.copy(), to=target), True


def _compatible(stored: str, ctype: ColumnType) -> bool:
    """Whether a Parquet storage type can hold values of a schema type at all."""
    if "[" in stored or stored.startswith(("STRUCT", "MAP", "UNION")):
        return False
    text = stored == "VARCHAR"
    numeric = stored in _INTEGER_TYPES or stored in _FLOAT_TYPES or stored.startswith("DECIMAL")
    if ctype is ColumnType.CODE:
        return True
    if ctype is ColumnType.DATE:
        return text or stored == "DATE" or stored.startswith("TIMESTAMP")
    if ctype is ColumnType.BOOL:
        return text or stored == "BOOLEAN" or stored in _INTEGER_TYPES
    return text or numeric


def _plan_column(column: Column, stored: str | None, fmt: FileFormat) -> tuple[_ColumnPlan, bool]:
    """How one column is read, and whether it is a code stored as a number (zeros at risk)."""
    canonical = CANONICAL_TYPES[column.type]
    if stored is None:
        typed_null = exp.cast(exp.null(), exp.DataType.build(canonical, dialect="duckdb"))
        return _ColumnPlan(column, None, typed_null, False), False
    ref = exp.column(column.name, quoted=True)
    if fmt == "csv":
        raw: exp.Expr = exp.Nullif(this=exp.Trim(this=ref), expression=exp.Literal.string(""))
        typed, can_fail = _text_parse(raw, column.type)
        return _ColumnPlan(column, raw, typed, can_fail), False
    if stored == canonical:
        # Same type: read the column as it is, so filters reach the Parquet reader.
        return _ColumnPlan(column, ref, ref.copy(), False), False
    if stored == "VARCHAR":
        raw = exp.Nullif(this=exp.Trim(this=ref), expression=exp.Literal.string(""))
        typed, can_fail = _text_parse(raw, column.type)
        return _ColumnPlan(column, raw, typed, can_fail), False
    target = exp.DataType.build(canonical, dialect="duckdb")
    plan = _ColumnPlan(column, ref, exp.TryCast(this=ref.copy(), to=target), True)
    numeric = stored in _INTEGER_TYPES or stored in _FLOAT_TYPES or stored.startswith("DECIMAL")
    return plan, column.type is ColumnType.CODE and numeric


def _count(where: exp.Expr) -> exp.Expr:
    return exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=where))


def _is_null(e: exp.Expr) -> exp.Expr:
    return exp.Is(this=e.copy(), expression=exp.null())


def _not_null(e: exp.Expr) -> exp.Expr:
    return exp.Not(this=_is_null(e))


def _keep_conditions(plans: Sequence[_ColumnPlan], table: Table) -> list[exp.Expr]:
    """The conditions a row must meet to appear in the view."""
    conditions: list[exp.Expr] = []
    for plan in plans:
        if plan.raw is None:
            continue
        column = plan.column
        if not column.nullable:
            conditions.append(_not_null(plan.typed))
        elif plan.can_fail:
            conditions.append(exp.Paren(this=exp.or_(_is_null(plan.raw), _not_null(plan.typed))))
        if column.values is not None:
            allowed: exp.Expr = plan.typed.copy().isin(*sorted(column.values))
            if column.nullable:
                allowed = exp.Paren(this=exp.or_(_is_null(plan.typed), allowed))
            conditions.append(allowed)
    span = _span(plans, table)
    if span is not None:
        start, end = span
        conditions.append(
            exp.Paren(
                this=exp.or_(
                    _is_null(start),
                    _is_null(end),
                    exp.GTE(this=end.copy(), expression=start.copy()),
                )
            )
        )
    return conditions


def _span(plans: Sequence[_ColumnPlan], table: Table) -> tuple[exp.Expr, exp.Expr] | None:
    names = RANGE_CHECKS.get(table.name)
    if names is None:
        return None
    by_name = {p.column.name: p for p in plans}
    start, end = by_name[names[0]], by_name[names[1]]
    if start.raw is None or end.raw is None:
        return None
    return start.typed, end.typed


def _describe_source(con: duckdb.DuckDBPyConnection, data_file: DataFile) -> dict[str, str] | None:
    """Column name (lower case) -> stored type name; None when the file cannot be read."""
    query = exp.Describe(this=exp.select(exp.Star()).from_(data_file.source()))
    try:
        rows = con.execute(query.sql(dialect="duckdb")).fetchall()
    except duckdb.Error as exc:
        logger.warning("cannot read %s (%s)", data_file.name, type(exc).__name__)
        return None
    return {str(row[0]).lower(): str(row[1]).upper() for row in rows}


def check_table(con: duckdb.DuckDBPyConnection, directory: Path, table: Table) -> TableCheck:
    """Check one table's file in one aggregate pass (plus one pass for repeated keys)."""
    data_file, problems = locate(directory, table)
    if data_file is None:
        return TableCheck(table, None, tuple(problems), None)
    file_name = data_file.name

    def problem(column: str | None, kind: str, rows: int, severity: Severity) -> Problem:
        return Problem(table.name, file_name, column, kind, rows, severity)

    stored_types = _describe_source(con, data_file)
    if stored_types is None:
        problems.append(problem(None, "unreadable", 0, "error"))
        return TableCheck(table, data_file, tuple(problems), None)

    plans: list[_ColumnPlan] = []
    for column in table.columns:
        stored = stored_types.get(column.name)
        if stored is None and column.required:
            problems.append(problem(column.name, "missing_column", 0, "error"))
        if (
            stored is not None
            and data_file.format == "parquet"
            and not _compatible(stored, column.type)
        ):
            problems.append(problem(column.name, "wrong_type", 0, "error"))
            stored = None
        plan, numeric_code = _plan_column(column, stored, data_file.format)
        if numeric_code:
            problems.append(problem(column.name, "wrong_type", 0, "warning"))
        plans.append(plan)

    # One pass: the positions of the counts are recorded as the select list is built.
    selects: list[exp.Expr] = [exp.Count(this=exp.Star())]
    slots: dict[tuple[str, str], int] = {}

    def add(column: str, stat: str, expression: exp.Expr) -> None:
        slots[(column, stat)] = len(selects)
        selects.append(expression)

    for plan in plans:
        if plan.raw is None:
            continue
        name, column = plan.column.name, plan.column
        if plan.can_fail or column.values is not None:
            add(name, "nonnull", exp.Count(this=plan.raw.copy()))
        if plan.can_fail:
            add(name, "fail", _count(exp.and_(_not_null(plan.raw), _is_null(plan.typed))))
        if not column.nullable:
            add(name, "null", _count(_is_null(plan.raw)))
        if column.values is not None:
            add(name, "code", _count(exp.Not(this=plan.typed.copy().isin(*sorted(column.values)))))
    span = _span(plans, table)
    if span is not None:
        add(
            RANGE_CHECKS[table.name][1],
            "bad_range",
            _count(exp.LT(this=span[1].copy(), expression=span[0].copy())),
        )
    keep = _keep_conditions(plans, table)
    kept_slot = len(selects)
    selects.append(_count(exp.and_(*keep)) if keep else exp.Count(this=exp.Star()))
    # The rows each condition keeps on its own: one that keeps every row leaves nothing out of
    # this file, and the view goes without it (see the view below).
    condition_slots = range(len(selects), len(selects) + len(keep))
    selects.extend(_count(c.copy()) for c in keep)

    aggregate = exp.select(*selects).from_(data_file.source())
    try:
        counts = con.execute(aggregate.sql(dialect="duckdb")).fetchone()
    except duckdb.Error as exc:
        logger.warning("cannot scan %s (%s)", file_name, type(exc).__name__)
        problems.append(problem(None, "unreadable", 0, "error"))
        return TableCheck(table, data_file, tuple(problems), None)
    if counts is None:  # pragma: no cover - an aggregate always returns one row
        raise RuntimeError("aggregate returned no row")
    values = [int(v or 0) for v in counts]
    total = values[0]

    def stat(column: str, name: str) -> int:
        slot = slots.get((column, name))
        return 0 if slot is None else values[slot]

    for plan in plans:
        if plan.raw is None:
            continue
        name = plan.column.name
        nonnull = stat(name, "nonnull")
        fail, code, null = stat(name, "fail"), stat(name, "code"), stat(name, "null")
        if fail and fail == nonnull:
            problems.append(problem(name, "wrong_type", fail, "error"))
        elif code and fail + code == nonnull:
            problems.append(problem(name, "invalid_value", nonnull, "error"))
        elif fail + code:
            problems.append(problem(name, "invalid_value", fail + code, "warning"))
        if null and null == total:
            problems.append(problem(name, "null_required", null, "error"))
        elif null:
            problems.append(problem(name, "null_required", null, "warning"))
    if span is not None and (bad := stat(RANGE_CHECKS[table.name][1], "bad_range")):
        problems.append(problem(RANGE_CHECKS[table.name][1], "bad_range", bad, "warning"))

    if any(p.severity == "error" for p in problems):
        return TableCheck(table, data_file, tuple(problems), None, total, total)

    view = exp.select(*(exp.alias_(p.typed.copy(), p.column.name, quoted=True) for p in plans))
    view = view.from_(data_file.source())
    # Only the conditions that leave a row of this file out: a condition every row meets would
    # make each query read (and parse) its column for nothing, whichever columns it uses. The
    # view is valid for the file as checked; the data source checks again when a file changes.
    needed = [c for c, slot in zip(keep, condition_slots, strict=True) if values[slot] < total]
    if needed:
        view = view.where(exp.and_(*(c.copy() for c in needed)))
    excluded = total - values[kept_slot]

    key = DUPLICATE_KEYS.get(table.name)
    if key is not None:
        repeated = _count_repeated(con, data_file, [p for p in plans if p.column.name in key])
        if repeated is None:
            problems.append(problem(None, "unreadable", 0, "error"))
            return TableCheck(table, data_file, tuple(problems), None, total, total)
        if repeated:
            problems.append(problem(None, "duplicate_key", repeated, "warning"))
    logger.info("%s: %s holds %d rows, %d excluded", table.name, file_name, total, excluded)
    return TableCheck(table, data_file, tuple(problems), view, total, excluded)


def _count_repeated(
    con: duckdb.DuckDBPyConnection, data_file: DataFile, key: Sequence[_ColumnPlan]
) -> int | None:
    """Rows of the file repeating an earlier key; None when unreadable.

    Counted over the file rather than the view: the view's filter would make this pass parse
    and cast every column a second time, and rows excluded for a bad value are counted already.
    """
    present = [p.typed.copy() for p in key if not p.column.nullable]
    groups = (
        exp.select(exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(data_file.source())
        .group_by(*(p.typed.copy() for p in key))
        .having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1)))
    )
    if present:
        groups = groups.where(exp.and_(*(_not_null(e) for e in present)))
    surplus = exp.Sub(this=exp.column("n"), expression=exp.Literal.number(1))
    query = exp.select(exp.Sum(this=surplus)).from_(groups.subquery("g"))
    try:
        row = con.execute(query.sql(dialect="duckdb")).fetchone()
    except duckdb.Error as exc:
        logger.warning("cannot scan for repeated keys (%s)", type(exc).__name__)
        return None
    return int(row[0] or 0) if row is not None else 0


def check_tables(con: duckdb.DuckDBPyConnection, directory: Path) -> tuple[TableCheck, ...]:
    """Check every table of the schema in a data directory."""
    return tuple(check_table(con, directory, table) for table in TABLES)


def check_directory(directory: Path) -> list[Problem]:
    """The whole validation of a data directory (``carrier-node check --data DIR``)."""
    con = duckdb.connect(":memory:")
    try:
        return [p for check in check_tables(con, Path(directory)) for p in check.problems]
    finally:
        con.close()
