"""Validation of the carrier's data files against the data schema (:mod:`fedoversight.schema`).

A data directory holds each table as one file (``NAME.parquet``, ``NAME.csv``, ``NAME.csv.gz``,
``NAME.csv.zst``) or as a directory ``NAME/`` of such files at any depth (partitions, flat or in
Hive-style ``year=2026/month=01/`` folders), read as one table by column name. CSV text is
decoded as declared (``csv_encoding``) or as detected. Each table is checked in one aggregate
pass over its files: every count (values that do not parse, empty required values, codes
outside a closed set, end dates before start dates) is a ``count(*) FILTER (WHERE …)`` of the
same query; a Parquet column read as stored takes its count of empty values from the files'
footers when every row group records one (a required column without any is then not read).
The outcome is a list of located :class:`Problem` values and, for each usable
table, the ``SELECT`` that reads the files into the canonical types with the bad rows left out;
:mod:`carrier_node.data.files` turns those into views. The ``SELECT`` filters by the conditions
some row of the checked files fails, only: a clean table's view is a plain projection, so a
query reads just the columns it uses (the data source validates the files again when one
changes, before reading them). :func:`raw_scan` and :attr:`TableCheck.located` give each row
with its file and row number, to locate rows.

Rules:

- A missing, empty or unreadable file, text not in its encoding, a missing required column (in
  any of a table's files), a directory mixing Parquet and CSV or holding no data file, or a
  column where no value is usable (no value parses, every value is outside its code set, every
  value is empty) is an *error*: the table is unusable. A data directory that does not exist is
  one error.
- A row with an empty required value, a value that does not parse (in any column: a value
  that is present but unreadable is not the same as an absent one), a code outside its closed
  set, or an enrollment span that ends before it starts is *excluded* and counted (a warning).
- Repeated medical claim keys ``(claim_id, claim_line, claim_version)`` are counted, not
  excluded: by ``carrier-node check``, and by the node when its data figures are asked for (a
  node does not count them when it opens its files: they change nothing it reads).
- An empty file among a table's files is skipped, and an optional column some of them lack
  reads as empty in their rows (warnings naming the file).

Nothing here reads a data value into Python: problems carry table, file, column and row counts
only, and DuckDB's own error text (which can quote a row) is never kept.
"""

from __future__ import annotations

import decimal
import logging
import typing
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import duckdb
from sqlglot import exp

from fedoversight.schema import TABLES, TABLES_BY_NAME, Column, ColumnType, Table

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning"]
FileFormat = Literal["parquet", "csv"]
#: How CSV text is decoded: ``auto`` detects it (see :func:`check_table`).
CsvEncoding = Literal["auto", "utf-8", "latin-1", "utf-16"]

#: What the encodings are called in messages.
ENCODING_NAMES: dict[str, str] = {"utf-8": "UTF-8", "latin-1": "Latin-1", "utf-16": "UTF-16"}

#: The names a table's data may end in, with their format, in order of preference.
DATA_SUFFIXES: tuple[tuple[str, FileFormat], ...] = (
    (".parquet", "parquet"),
    (".csv", "csv"),
    (".csv.gz", "csv"),
    (".csv.zst", "csv"),
)

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
    #: "unreadable" | "duplicate_key" | "bad_range" | "ambiguous_file" | "missing_directory" |
    #: "empty_directory" | "mixed_formats" | "empty_file" | "wrong_encoding" | "no_columns" |
    #: "partial_column"
    kind: str
    #: Rows affected (0 for file- and column-level problems).
    rows: int
    #: "error": the table is unusable; "warning": rows excluded (or, for duplicate keys, kept)
    #: and counted, or a file or column left out.
    severity: Severity
    #: For "wrong_encoding": the encoding the file was read with, and the one its header reads
    #: as (None when none does).
    encoding: str | None = None
    reads_as: str | None = None

    def describe(self) -> str:
        """One line for the carrier's engineer: table, file, column and counts only."""
        where = f"{self.table}: {self.file}"
        col = f"column {self.column!r}"
        text = _describe(self, where, col)
        if self.severity == "error" and self.kind != "missing_directory":
            return f"{text} — table unusable"
        return text


def _describe(p: Problem, where: str, col: str) -> str:
    column = _schema_column(p.table, p.column)
    expected = _expected(column) if column is not None else "a valid value"
    if p.kind == "missing_file":
        names = ", ".join(f"{p.table}{suffix}" for suffix, _ in DATA_SUFFIXES)
        return f"{p.table}: none of {names} or a directory {p.table}/ is in the data directory"
    if p.kind == "missing_directory":
        return f"data directory {p.file!r} does not exist"
    if p.kind == "unreadable":
        return f"{where} could not be read"
    if p.kind == "ambiguous_file":
        return f"{p.table}: more than one file or directory holds the table; reading {p.file}"
    if p.kind == "empty_directory":
        kinds = ", ".join(suffix for suffix, _ in DATA_SUFFIXES)
        return f"{where} holds no data file (one ending {kinds})"
    if p.kind == "mixed_formats":
        return f"{where} holds both Parquet and CSV files; give one format per table"
    if p.kind == "empty_file":
        if p.severity == "warning":
            return f"{where} is empty (not even a header row); skipped"
        return f"{where} is empty (not even a header row)"
    if p.kind == "wrong_encoding":
        tried = ENCODING_NAMES.get(p.encoding or "", p.encoding or "")
        text = f"{where} is not " + (
            f"{tried} text" if p.encoding == "latin-1" else f"valid {tried}"
        )
        if p.reads_as is not None:
            return (
                f"{text}; it reads as {ENCODING_NAMES.get(p.reads_as, p.reads_as)}: set"
                f' csv_encoding = "{p.reads_as}" in node.toml (or "auto")'
            )
        choices = ", ".join(f'"{e}"' for e in typing.get_args(CsvEncoding))
        return f"{text}; set csv_encoding in node.toml to its encoding ({choices})"
    if p.kind == "no_columns":
        return f"{where} has none of the table's columns (is its first row the header?)"
    if p.kind == "partial_column":
        return f"{where} has no {col}, which other files of the table have; empty in its rows"
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
    """What a table is read from: one file, or the data files of the table's directory."""

    table: Table
    #: The file, or the table's directory.
    path: Path
    format: FileFormat
    #: The data directory (names are given relative to it).
    root: Path
    #: The data files read, in order: ``(path,)`` for a single file.
    files: tuple[Path, ...]
    #: How CSV text is decoded (see :data:`ENCODING_NAMES`).
    encoding: str = "utf-8"
    #: Whether the files' columns are matched by name: needed only when they do not all
    #: have the same columns in the same order (matching costs a look at every file).
    by_name: bool = True
    #: CSV: the dialect every file was found in (``read_csv`` options as SQL literals) and
    #: their columns, so a query reads them without sniffing each file again at every bind;
    #: empty: sniffed by each query.
    dialect: tuple[tuple[str, str], ...] = ()
    columns: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The file's name, or the directory's with a trailing ``/``."""
        return f"{self.path.name}/" if self.is_directory else self.path.name

    @property
    def is_directory(self) -> bool:
        return self.files != (self.path,)

    def file_name(self, path: Path) -> str:
        """How problems name one of the files: its path relative to the data directory."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:  # pragma: no cover - every file is under the data directory
            return path.name

    def source(self, files: Sequence[Path] | None = None, *, row_number: bool = False) -> exp.Expr:
        """The table function that reads the files (paths are string literals): by column name
        across files when :attr:`by_name` (a column missing from one reads as empty in its
        rows), the partition folders' names not read as columns. ``row_number`` adds each
        row's 0-based position in its file as ``file_row_number`` (Parquet only)."""
        chosen = tuple(self.files if files is None else files)
        paths = [exp.Literal.string(str(p.resolve())) for p in chosen]
        target: exp.Expr = paths[0] if len(paths) == 1 else exp.Array(expressions=paths)
        options: list[exp.Expr] = []
        if len(paths) > 1 and self.by_name:
            options.append(_option("union_by_name", exp.true()))
        if self.is_directory:
            options.append(_option("hive_partitioning", exp.false()))
        if self.format == "parquet":
            if row_number:
                options.append(_option("file_row_number", exp.true()))
            return exp.func("read_parquet", target, *options)
        # Every CSV column is read as text so codes keep their leading zeros.
        options = [_option("all_varchar", exp.true()), _option("header", exp.true()), *options]
        if self.encoding != "utf-8":
            options.append(_option("encoding", exp.Literal.string(self.encoding)))
        if self.dialect:
            options.append(_option("auto_detect", exp.false()))
            options += [_option(k, exp.Literal.string(v)) for k, v in self.dialect]
            types = exp.Struct(
                expressions=[
                    exp.PropertyEQ(
                        this=exp.Literal.string(name), expression=exp.Literal.string("VARCHAR")
                    )
                    for name in self.columns
                ]
            )
            options.append(_option("columns", types))
        return exp.func("read_csv", target, *options)


def _option(name: str, value: exp.Expr) -> exp.Expr:
    return exp.EQ(this=exp.var(name), expression=value)


#: The provenance columns of :func:`raw_scan`.
FILE_COLUMN, ROW_COLUMN = "__file", "__row"


def raw_scan(data_file: DataFile) -> exp.Query:
    """Every row of a table's files as stored, with where it is: ``__file``, the file's path
    relative to the data directory (as :attr:`Problem.file` names it), and ``__row``, its
    1-based position among that file's rows (in a CSV file the header is not counted: row 1
    is the line after it, unless a quoted value spans lines).

    One ``SELECT`` per file, put together by column name. It reads whole files: it is for
    locating rows (e.g. ``SELECT __file, __row FROM (raw_scan) WHERE ...``), not for
    answering queries, which read :attr:`TableCheck.view`. See also
    :attr:`TableCheck.located`: the view's typed rows with the same two columns.
    """
    selects: list[exp.Select] = []
    for path in data_file.files:
        name = exp.alias_(exp.Literal.string(data_file.file_name(path)), FILE_COLUMN, quoted=True)
        if data_file.format == "parquet":
            position = exp.column("file_row_number")
            table: exp.Expr = exp.Table(this=data_file.source((path,), row_number=True))
        else:
            position = exp.column("ordinality")
            table = exp.Table(this=data_file.source((path,)), ordinality=True)
        row = exp.alias_(
            exp.Add(this=position.copy(), expression=exp.Literal.number(1))
            if data_file.format == "parquet"
            else position.copy(),
            ROW_COLUMN,
            quoted=True,
        )
        star = exp.Star(**{"except": [position.copy()]})
        selects.append(exp.select(star, name, row).from_(table))
    query: exp.Query = selects[0]
    for select in selects[1:]:
        query = exp.Union(this=query, expression=select, distinct=False, by_name=True)
    return query


@dataclass(frozen=True)
class RowCondition:
    """The rows of one row-level problem: a condition over :func:`raw_scan`'s columns (true,
    false or NULL for a row it does not flag)."""

    column: str | None
    kind: str
    flags: exp.Expr


@dataclass(frozen=True)
class TableCheck:
    """The outcome of checking one table."""

    table: Table
    #: The files read, or None when there are none.
    file: DataFile | None
    problems: tuple[Problem, ...]
    #: The SELECT reading the files into canonical types without the excluded rows (filtered
    #: by the conditions that exclude a row of the files as checked, only); None when the
    #: table is absent or unusable.
    view: exp.Select | None
    #: Rows in the files, and rows left out of the view.
    rows: int = 0
    excluded: int = 0
    #: The view's rows with where each is: its columns and ``__file``, ``__row`` (see
    #: :func:`raw_scan`); reads whole files, for locating rows. None when :attr:`view` is.
    located: exp.Select | None = None
    #: What flags the rows of each row-level problem (``(column, kind)`` of a problem with
    #: rows: a value that does not parse or is outside its set, an empty required value, a
    #: span ending before it starts, a repeated key), over the columns of :func:`raw_scan`.
    row_conditions: tuple[RowCondition, ...] = ()
    #: Where repeated keys were not counted (``count_repeats=False``): the two queries of
    #: :func:`count_repeats`, which counts them when asked; None when they were counted or
    #: the table has no key whose repeats are counted.
    repeats: tuple[exp.Query, exp.Query] | None = None
    #: The largest magnitude of any amount of the table's money columns, in cents, over all
    #: its rows (those left out of the view too); None when the table has no money column.
    #: With :attr:`rows` it bounds every sum of the table's cents (see
    #: :func:`money_sums_fit_int64`).
    money_bound_cents: int | None = None

    @property
    def usable(self) -> bool:
        return self.view is not None


def _data_format(path: Path) -> FileFormat | None:
    name = path.name.lower()
    for suffix, fmt in DATA_SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None


def _ignored(name: str) -> bool:
    """Names an exporter leaves beside its data (``_SUCCESS``, ``.part-0.crc``)."""
    return name.startswith((".", "_"))


def _directory_files(directory: Path) -> list[tuple[Path, FileFormat]]:
    """The data files under a table's directory, at any depth, in path order."""
    found: list[tuple[Path, FileFormat]] = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).parts
        if any(_ignored(part) for part in relative) or not path.is_file():
            continue
        fmt = _data_format(path)
        if fmt is not None:
            found.append((path, fmt))
    return found


def candidate_files(directory: Path, table: Table) -> list[DataFile]:
    """What is present for a table, in order of preference: ``NAME.parquet``, ``NAME.csv``,
    ``NAME.csv.gz``, ``NAME.csv.zst``, then a directory ``NAME/`` of such files (a directory
    mixing Parquet and CSV is given as CSV; :func:`locate` refuses it)."""
    found: list[DataFile] = []
    for suffix, fmt in DATA_SUFFIXES:
        path = directory / f"{table.name}{suffix}"
        if path.is_file():
            found.append(DataFile(table, path, fmt, directory, (path,)))
    folder = directory / table.name
    if folder.is_dir():
        files = _directory_files(folder)
        fmt = "parquet" if files and all(f == "parquet" for _, f in files) else "csv"
        found.append(DataFile(table, folder, fmt, directory, tuple(p for p, _ in files)))
    return found


def directory_problem(directory: Path) -> Problem | None:
    """The problem of a data directory that does not exist (or is not a directory)."""
    if Path(directory).is_dir():
        return None
    return Problem("*", Path(directory).name, None, "missing_directory", 0, "error")


def locate(directory: Path, table: Table) -> tuple[DataFile | None, list[Problem]]:
    """What to read for a table (the first of :func:`candidate_files`), with any problem
    finding it."""
    found = candidate_files(directory, table)
    if not found:
        if not table.required:
            return None, []
        missing = Problem(
            table.name, f"{table.name}.{{parquet,csv}}", None, "missing_file", 0, "error"
        )
        return None, [missing]
    chosen = found[0]
    problems: list[Problem] = []
    if len(found) > 1:
        problems.append(Problem(table.name, chosen.name, None, "ambiguous_file", 0, "warning"))
    if chosen.is_directory:
        formats = {_data_format(p) for p in chosen.files}
        if not chosen.files:
            problems.append(Problem(table.name, chosen.name, None, "empty_directory", 0, "error"))
            return None, problems
        if len(formats) > 1:
            problems.append(Problem(table.name, chosen.name, None, "mixed_formats", 0, "error"))
            return None, problems
    return chosen, problems


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


def _keep_conditions(
    plans: Sequence[_ColumnPlan], table: Table, no_nulls: frozenset[str] = frozenset()
) -> list[exp.Expr]:
    """The conditions a row must meet to appear in the view; a required column of
    ``no_nulls`` (read as stored and holding no NULL, see :func:`_parquet_footers`) needs none."""
    conditions: list[exp.Expr] = []
    for plan in plans:
        if plan.raw is None:
            continue
        column = plan.column
        if not column.nullable and column.name not in no_nulls:
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


def _as_stored(plan: _ColumnPlan) -> bool:
    """Whether the column is read as it is stored (no text to parse, no cast): its NULLs are
    then the file's own."""
    return isinstance(plan.raw, exp.Column) and not plan.can_fail


def _span(plans: Sequence[_ColumnPlan], table: Table) -> tuple[exp.Expr, exp.Expr] | None:
    names = RANGE_CHECKS.get(table.name)
    if names is None:
        return None
    by_name = {p.column.name: p for p in plans}
    start, end = by_name[names[0]], by_name[names[1]]
    if start.raw is None or end.raw is None:
        return None
    return start.typed, end.typed


class _Unreadable(Exception):
    """DuckDB could not read the files; ``encoding`` when it said the text is not in the
    encoding it was read with (its message, which can quote a row, is not kept)."""

    def __init__(self, error: duckdb.Error) -> None:
        super().__init__(type(error).__name__)
        text = str(error).lower()
        self.kind = type(error).__name__
        self.encoding = "not utf-8 encoded" in text or "not utf-16 encoded" in text


def _run(con: duckdb.DuckDBPyConnection, query: exp.Expr) -> list[tuple[object, ...]]:
    try:
        return con.execute(query.sql(dialect="duckdb")).fetchall()
    except duckdb.Error as exc:
        raise _Unreadable(exc) from None


def _describe_source(
    con: duckdb.DuckDBPyConnection, data_file: DataFile, files: Sequence[Path] | None = None
) -> dict[str, str]:
    """Column name (lower case) -> stored type name; raises :class:`_Unreadable`."""
    query = exp.Describe(this=exp.select(exp.Star()).from_(data_file.source(files)))
    return {str(row[0]).lower(): str(row[1]).upper() for row in _run(con, query)}


def _parquet_footers(
    con: duckdb.DuckDBPyConnection, data_file: DataFile
) -> tuple[dict[str, int], dict[str, int]]:
    """What the Parquet files' footers record of their columns (none for CSV), in one read of
    them: column name (lower case) -> its NULL values, for the columns whose count every row
    group of every file records; and column name -> the largest magnitude of its values in
    cents, for the columns whose least and greatest value every row group records as a
    decimal number (or records it holds only NULLs). The checks take these from the footers
    rather than from a pass over the values: a required column without NULLs, or a money
    column stored as the canonical DECIMAL, is then not read at all."""
    if data_file.format != "parquet":
        return {}, {}
    paths = [exp.Literal.string(str(p.resolve())) for p in data_file.files]
    metadata = exp.func("parquet_metadata", exp.Array(expressions=paths))
    name = exp.Lower(this=exp.column("path_in_schema"))
    nulls = exp.column("stats_null_count")

    def number(column: str) -> exp.Expr:
        return exp.TryCast(this=exp.column(column), to=exp.DataType.build("DECIMAL(38,2)"))

    bounded = exp.or_(
        nulls.copy().eq(exp.column("num_values")),
        exp.and_(_not_null(number("stats_min_value")), _not_null(number("stats_max_value"))),
    )
    query = (
        exp.select(
            name.as_("name"),
            exp.Count(this=exp.Distinct(expressions=[exp.column("file_name")])),
            exp.Sum(this=nulls.copy()),
            exp.Count(this=exp.Star()) - exp.Count(this=nulls.copy()),
            exp.Count(this=exp.Star()) - _count(bounded),
            exp.Max(this=exp.Abs(this=number("stats_min_value"))),
            exp.Max(this=exp.Abs(this=number("stats_max_value"))),
        )
        .from_(metadata)
        .group_by(name.copy())
    )
    known: dict[str, int] = {}
    magnitudes: dict[str, int] = {}
    for column, files, count, unrecorded, unbounded, low, high in _run(con, query):
        if files != len(data_file.files):
            continue
        if unrecorded == 0 and count is not None:
            known[str(column)] = int(count)  # type: ignore[call-overload]
        if unbounded == 0:
            largest = [decimal.Decimal(str(v)) for v in (low, high) if v is not None]
            magnitudes[str(column)] = int(max(largest, default=decimal.Decimal(0)) * 100)
    return known, magnitudes


def _is_empty(con: duckdb.DuckDBPyConnection, data_file: DataFile, path: Path) -> bool:
    """Whether a file holds nothing at all, not even a header (a compressed one is read)."""
    try:
        if path.stat().st_size == 0:
            return True
    except OSError:
        return False
    if data_file.format != "csv" or _data_format(path) is None or path.suffix == ".csv":
        return False
    try:  # DuckDB reads an empty CSV as one column named column0 and no row
        if list(_describe_source(con, data_file, [path])) != ["column0"]:
            return False
        return _run(con, exp.select("count(*)").from_(data_file.source([path]))) == [(0,)]
    except _Unreadable:
        return False


_SNIFFED = ("Delimiter", "Quote", "Escape", "NewLineDelimiter", "Comment")
_DIALECT = ("delim", "quote", "escape", "new_line", "comment")


def _sniffed_dialect(con: duckdb.DuckDBPyConnection, data_file: DataFile) -> DataFile:
    """The files with the dialect DuckDB finds in each of them, when it is the same for all
    (with the same columns in the same order); else as they were (each query sniffs)."""
    found: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for path in data_file.files:
        sniff = exp.func(
            "sniff_csv",
            exp.Literal.string(str(path.resolve())),
            _option("all_varchar", exp.true()),
            _option("header", exp.true()),
            *(
                [_option("encoding", exp.Literal.string(data_file.encoding))]
                if data_file.encoding != "utf-8"
                else []
            ),
        )
        query = exp.select(*_SNIFFED, "SkipRows", "HasHeader", "Columns").from_(sniff)
        try:
            (row,) = _run(con, query)
        except _Unreadable:
            return data_file
        *dialect, skip, header, columns = row
        if skip != 0 or header is not True or not isinstance(columns, list):
            return data_file
        names = tuple(str(c["name"]) for c in columns)
        found.add((tuple("" if v == "(empty)" else str(v) for v in dialect), names))
    if len(found) != 1:
        return data_file
    ((dialect_found, names_found),) = found
    options = tuple(zip(_DIALECT, dialect_found, strict=True))
    return replace(data_file, dialect=options, columns=names_found)


def _header_matches(con: duckdb.DuckDBPyConnection, data_file: DataFile) -> bool:
    """Whether the first file's header names a column of the table when read so."""
    try:
        names = _describe_source(con, data_file, data_file.files[:1])
    except _Unreadable:
        return False
    return any(c.name in names for c in data_file.table.columns)


def _decodes(con: duckdb.DuckDBPyConnection, data_file: DataFile, path: Path) -> bool:
    """Whether every value of a CSV file decodes in the file's encoding (a whole pass: a
    column is decoded only when it is read)."""
    every = exp.func("count", exp.func("COLUMNS", exp.Star()))
    try:
        _run(con, exp.select(every).from_(data_file.source([path])))
    except _Unreadable as error:
        return not error.encoding
    return True


def _reads_as(
    con: duckdb.DuckDBPyConnection, data_file: DataFile, exclude: str | None = None
) -> str | None:
    """The encoding a CSV table's text is in, judged by its first file: UTF-16 when its header
    reads so, UTF-8 when the whole file decodes so, else Latin-1 (which decodes any bytes)
    when its header reads so."""
    for encoding in ("utf-16", "utf-8", "latin-1"):
        if encoding == exclude:
            continue
        candidate = replace(data_file, encoding=encoding)
        if not _header_matches(con, candidate):
            continue
        if encoding != "utf-8" or _decodes(con, candidate, data_file.files[0]):
            return encoding
    return None


def _first_undecodable(con: duckdb.DuckDBPyConnection, data_file: DataFile) -> str:
    """How to name the file that does not decode: the first such of a directory's files."""
    if data_file.is_directory:
        for path in data_file.files:
            if not _decodes(con, data_file, path):
                return data_file.file_name(path)
    return data_file.name


def check_table(
    con: duckdb.DuckDBPyConnection,
    directory: Path,
    table: Table,
    csv_encoding: CsvEncoding = "auto",
    *,
    count_repeats: bool = True,
) -> TableCheck:
    """Check one table's files in one aggregate pass (plus one pass for repeated keys).

    CSV text is decoded as ``csv_encoding`` says; ``auto`` reads UTF-8 and, when DuckDB finds
    the text is not UTF-8 or cannot read it at all, reads it as UTF-16 when its header reads
    so, else (only when DuckDB said it is not UTF-8) as Latin-1.
    """
    data_file, problems = locate(directory, table)
    if data_file is None:
        return TableCheck(table, None, tuple(problems), None)

    empty = [p for p in data_file.files if _is_empty(con, data_file, p)]
    if empty:
        if len(empty) == len(data_file.files):
            problems.append(Problem(table.name, data_file.name, None, "empty_file", 0, "error"))
            return TableCheck(table, data_file, tuple(problems), None)
        for path in empty:
            name = data_file.file_name(path)
            problems.append(Problem(table.name, name, None, "empty_file", 0, "warning"))
        data_file = replace(data_file, files=tuple(p for p in data_file.files if p not in empty))

    if data_file.format == "parquet":
        return _check_files(con, data_file, problems, count_repeats)
    declared = csv_encoding != "auto"
    data_file = replace(data_file, encoding=csv_encoding if declared else "utf-8")
    if declared and not _header_matches(con, data_file):
        # The header names no column when read as declared: it is in another encoding.
        actual = _reads_as(con, data_file, exclude=data_file.encoding)
        if actual is not None:
            first = data_file.file_name(data_file.files[0]) if data_file.is_directory else None
            return _wrong_encoding(data_file, problems, actual, first)
    check = _check_files(con, data_file, list(problems), count_repeats)
    if not check.encoding_failed and not (check.unreadable and not declared):
        return check
    if not declared:
        # Read as UTF-8, UTF-16 text fails as not UTF-8 or as no CSV dialect at all.
        actual = _reads_as(con, data_file, exclude="utf-8")
        if actual == "latin-1" and not check.encoding_failed:
            actual = None  # a Latin-1 header reads as any ASCII header does: no evidence
        if actual is None and not check.encoding_failed:
            return check
        actual = actual or "latin-1"
        logger.info("%s: %s is not UTF-8; read as %s", table.name, data_file.name, actual)
        data_file = replace(data_file, encoding=actual)
        check = _check_files(con, data_file, list(problems), count_repeats)
        if not check.encoding_failed:
            return check
    name = _first_undecodable(con, data_file)
    return _wrong_encoding(data_file, problems, _reads_as(con, data_file, data_file.encoding), name)


def _wrong_encoding(
    data_file: DataFile, problems: list[Problem], actual: str | None, name: str | None = None
) -> TableCheck:
    problem = Problem(
        data_file.table.name,
        name or data_file.name,
        None,
        "wrong_encoding",
        0,
        "error",
        encoding=data_file.encoding,
        reads_as=actual,
    )
    return TableCheck(data_file.table, data_file, (*problems, problem), None)


def _column_agreement(
    con: duckdb.DuckDBPyConnection, data_file: DataFile
) -> tuple[list[Problem], bool]:
    """Columns of the table some files have and others lack: a required one is an error for
    each file lacking it (named with the file), an optional one a warning (it reads as empty
    in that file's rows). Also whether every file has the same columns in the same order."""
    table = data_file.table
    problems: list[Problem] = []
    listed = {path: list(_describe_source(con, data_file, [path])) for path in data_file.files}
    same = len({tuple(names) for names in listed.values()}) == 1
    columns = {path: set(names) for path, names in listed.items()}
    union = set().union(*columns.values())
    for column in table.columns:
        if column.name not in union:
            continue
        for path, names in columns.items():
            if column.name in names:
                continue
            name = data_file.file_name(path)
            if column.required:
                problems.append(
                    Problem(table.name, name, column.name, "missing_column", 0, "error")
                )
            else:
                problems.append(
                    Problem(table.name, name, column.name, "partial_column", 0, "warning")
                )
    return problems, same


@dataclass(frozen=True)
class _Outcome(TableCheck):
    #: The files could not be read in their encoding.
    encoding_failed: bool = False

    @property
    def unreadable(self) -> bool:
        return any(p.kind == "unreadable" for p in self.problems)


def _check_files(
    con: duckdb.DuckDBPyConnection,
    data_file: DataFile,
    problems: list[Problem],
    count_repeats: bool = True,
) -> _Outcome:
    table = data_file.table
    file_name = data_file.name

    def problem(column: str | None, kind: str, rows: int, severity: Severity) -> Problem:
        return Problem(table.name, file_name, column, kind, rows, severity)

    def unreadable(error: _Unreadable, total: int = 0) -> _Outcome:
        logger.warning("cannot read %s (%s)", file_name, error.kind)
        if error.encoding:
            return _Outcome(table, data_file, tuple(problems), None, encoding_failed=True)
        return _Outcome(
            table, data_file, (*problems, problem(None, "unreadable", 0, "error")), None, total
        )

    try:
        stored_types = _describe_source(con, data_file)
        agreement: list[Problem] = []
        if len(data_file.files) > 1:
            agreement, same = _column_agreement(con, data_file)
            data_file = replace(data_file, by_name=not same)
        single = len(data_file.files) == 1
        if data_file.format == "csv" and (single or not data_file.by_name):
            # The dialect found once, so queries need not sniff every file at every bind.
            data_file = _sniffed_dialect(con, data_file)
    except _Unreadable as error:
        return unreadable(error)

    if not any(c.name in stored_types for c in table.columns):
        # Not one column of the table: no header row, or another table's file.
        problems.append(problem(None, "no_columns", 0, "error"))
        return _Outcome(table, data_file, tuple(problems), None)
    problems.extend(agreement)

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

    # NULLs a Parquet footer records are not counted again, nor the largest amount of a money
    # column read as stored looked for again (see _parquet_footers).
    footer_nulls: dict[str, int] = {}
    footer_money: dict[str, int] = {}
    if any(_as_stored(plan) for plan in plans):
        try:
            recorded, magnitudes = _parquet_footers(con, data_file)
        except _Unreadable as error:
            return unreadable(error)
        footer_nulls = {
            p.column.name: recorded[p.column.name]
            for p in plans
            if _as_stored(p) and p.column.name in recorded
        }
        footer_money = {
            p.column.name: magnitudes[p.column.name]
            for p in plans
            if _as_stored(p) and p.column.type is ColumnType.MONEY and p.column.name in magnitudes
        }

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
        counted = name not in footer_nulls  # else stat() derives them from the footer
        # A CSV column is decoded only when read: every one is, so text that is not in the
        # file's encoding is found here rather than by a query.
        if counted and (plan.can_fail or column.values is not None or data_file.format == "csv"):
            add(name, "nonnull", exp.Count(this=plan.raw.copy()))
        if plan.can_fail:
            add(name, "fail", _count(exp.and_(_not_null(plan.raw), _is_null(plan.typed))))
        if not column.nullable and counted:
            add(name, "null", _count(_is_null(plan.raw)))
        if column.values is not None:
            add(name, "code", _count(exp.Not(this=plan.typed.copy().isin(*sorted(column.values)))))
        if column.type is ColumnType.MONEY and name not in footer_money:
            # Widened first: the largest DECIMAL(18,2) times 100 leaves DECIMAL(18,2).
            largest = exp.cast(exp.Max(this=exp.Abs(this=plan.typed.copy())), "DECIMAL(38,2)")
            add(name, "cents", exp.cast(largest * exp.Literal.number(100), "BIGINT"))
    span = _span(plans, table)
    if span is not None:
        add(
            RANGE_CHECKS[table.name][1],
            "bad_range",
            _count(exp.LT(this=span[1].copy(), expression=span[0].copy())),
        )
    no_nulls = frozenset(name for name, count in footer_nulls.items() if count == 0)
    keep = _keep_conditions(plans, table, no_nulls)
    kept_slot = len(selects)
    selects.append(_count(exp.and_(*keep)) if keep else exp.Count(this=exp.Star()))
    # The rows each condition keeps on its own: one that keeps every row leaves nothing out of
    # these files, and the view goes without it (see the view below).
    condition_slots = range(len(selects), len(selects) + len(keep))
    selects.extend(_count(c.copy()) for c in keep)

    aggregate = exp.select(*selects).from_(data_file.source())
    try:
        rows = _run(con, aggregate)
    except _Unreadable as error:
        return unreadable(error)
    if not rows:  # pragma: no cover - an aggregate always returns one row
        raise RuntimeError("aggregate returned no row")
    values = [int(v or 0) for v in rows[0]]  # type: ignore[call-overload]
    total: int = values[0]

    required = {p.column.name for p in plans if not p.column.nullable}

    def stat(column: str, name: str) -> int:
        # Counts not taken by the pass because the footers give them (see above).
        if column in footer_nulls and name == "nonnull":
            return total - footer_nulls[column]
        if column in footer_nulls and name == "null" and column in required:
            return footer_nulls[column]
        slot = slots.get((column, name))
        return 0 if slot is None else values[slot]

    # The largest amount of each money column, in cents (from the pass or the footers).
    largest_cents = {column: values[slot] for (column, s), slot in slots.items() if s == "cents"}
    largest_cents.update(footer_money)
    # Amounts the engine cannot turn into cents are rare enough to be counted by a pass of
    # their own, only for a table that has one (see MONEY_LIMIT_CENTS).
    too_large = [p for p in plans if largest_cents.get(p.column.name, 0) >= MONEY_LIMIT_CENTS]
    oversized: dict[str, int] = {}
    if too_large:
        try:
            oversized, kept_below, below = _count_oversized(con, data_file, too_large, keep)
        except _Unreadable as error:
            return unreadable(error)
        largest_cents.update(below)

    conditions: list[RowCondition] = []
    for plan in plans:
        if plan.raw is None:
            continue
        name = plan.column.name
        nonnull = stat(name, "nonnull")
        fail, code, null = stat(name, "fail"), stat(name, "code"), stat(name, "null")
        large = oversized.get(name, 0)
        unparsed = exp.and_(_not_null(plan.raw), _is_null(plan.typed))
        if fail and fail == nonnull:
            problems.append(problem(name, "wrong_type", fail, "error"))
            conditions.append(RowCondition(name, "wrong_type", unparsed))
        elif fail + code + large:
            invalid = fail + code + large
            severity: Severity = "error" if (code or large) and invalid == nonnull else "warning"
            problems.append(problem(name, "invalid_value", invalid, severity))
            flagged: list[exp.Expr] = [unparsed] if plan.can_fail else []
            if plan.column.values is not None:
                outside = exp.Not(this=plan.typed.copy().isin(*sorted(plan.column.values)))
                flagged.append(exp.and_(_not_null(plan.typed), outside))
            if large:
                flagged.append(_oversized(plan))
            conditions.append(RowCondition(name, "invalid_value", exp.or_(*flagged)))
        if null:
            problems.append(
                problem(name, "null_required", null, "error" if null == total else "warning")
            )
            conditions.append(RowCondition(name, "null_required", _is_null(plan.raw)))
    if span is not None and (bad := stat(RANGE_CHECKS[table.name][1], "bad_range")):
        problems.append(problem(RANGE_CHECKS[table.name][1], "bad_range", bad, "warning"))
        before = exp.LT(this=span[1].copy(), expression=span[0].copy())
        conditions.append(RowCondition(RANGE_CHECKS[table.name][1], "bad_range", before))

    if any(p.severity == "error" for p in problems):
        return _Outcome(
            table, data_file, tuple(problems), None, total, total, row_conditions=tuple(conditions)
        )

    typed = [exp.alias_(p.typed.copy(), p.column.name, quoted=True) for p in plans]
    view = exp.select(*typed).from_(data_file.source())
    located = exp.select(
        *(t.copy() for t in typed),
        exp.column(FILE_COLUMN, quoted=True),
        exp.column(ROW_COLUMN, quoted=True),
    ).from_(raw_scan(data_file).subquery("scan"))
    # Only the conditions that leave a row of these files out: a condition every row meets
    # would make each query read (and parse) its column for nothing, whichever columns it
    # uses. The view is valid for the files as checked; the data source checks again when a
    # file changes.
    needed = [c for c, slot in zip(keep, condition_slots, strict=True) if values[slot] < total]
    needed += [_within_money_limit(p) for p in too_large if oversized.get(p.column.name)]
    if needed:
        view = view.where(exp.and_(*(c.copy() for c in needed)))
        located = located.where(exp.and_(*(c.copy() for c in needed)))
    excluded = total - (kept_below if too_large else values[kept_slot])

    key = DUPLICATE_KEYS.get(table.name)
    deferred: tuple[exp.Query, exp.Query] | None = None
    if key is not None:
        key_plans = [p for p in plans if p.column.name in key]
        queries = _repeat_queries(data_file, key_plans)
        if not count_repeats:
            deferred = queries
        else:
            try:
                repeated = _run_repeat_count(con, queries)
            except _Unreadable as error:
                return unreadable(error, total)
            if repeated:
                problems.append(problem(None, "duplicate_key", repeated, "warning"))
                conditions.append(RowCondition(None, "duplicate_key", _repeats_earlier(key_plans)))
    logger.info("%s: %s holds %d rows, %d excluded", table.name, file_name, total, excluded)
    money = list(largest_cents.values())
    return _Outcome(
        table,
        data_file,
        tuple(problems),
        view,
        total,
        excluded,
        located,
        tuple(conditions),
        repeats=deferred,
        money_bound_cents=max(money, default=None),
    )


#: Amounts of this many cents (10^14 dollars) or more are not amounts the engine can use: it
#: turns an amount into cents in the schema's DECIMAL(18,2), which holds a hundred times less
#: than the type's own range. Such a value (no claim comes near it) counts as an invalid value
#: and its row is left out, as a value that does not parse is, rather than making every query
#: over the table fail.
MONEY_LIMIT_CENTS = 10**16


def _oversized(plan: _ColumnPlan) -> exp.Expr:
    """The rows whose amount in ``plan``'s money column is at or past the limit."""
    limit = exp.Literal.number(MONEY_LIMIT_CENTS // 100)
    return exp.GTE(this=exp.Abs(this=plan.typed.copy()), expression=limit)


def _within_money_limit(plan: _ColumnPlan) -> exp.Expr:
    """The rows the view keeps of ``plan``'s money column: no amount or one within the limit."""
    return exp.Paren(this=exp.or_(_is_null(plan.typed), exp.Not(this=_oversized(plan))))


def _count_oversized(
    con: duckdb.DuckDBPyConnection,
    data_file: DataFile,
    plans: Sequence[_ColumnPlan],
    keep: Sequence[exp.Expr],
) -> tuple[dict[str, int], int, dict[str, int]]:
    """For money columns whose largest amount is past the limit, in one pass: the rows past it
    in each, the rows the view keeps once they are left out too, and each column's largest
    amount in cents among the rest."""
    within = [_within_money_limit(p) for p in plans]
    selects: list[exp.Expr] = [_count(_oversized(p)) for p in plans]
    selects.append(_count(exp.and_(*(c.copy() for c in [*keep, *within]))))
    for plan, kept in zip(plans, within, strict=True):
        largest = exp.Filter(
            this=exp.Max(this=exp.Abs(this=plan.typed.copy())), expression=exp.Where(this=kept)
        )
        cents = exp.cast(largest, "DECIMAL(38,2)") * exp.Literal.number(100)
        selects.append(exp.cast(cents, "BIGINT"))
    row = _run(con, exp.select(*selects).from_(data_file.source()))[0]
    counts = [int(v or 0) for v in row]  # type: ignore[call-overload]
    names = [p.column.name for p in plans]
    n = len(plans)
    return (
        dict(zip(names, counts[:n], strict=True)),
        counts[n],
        dict(zip(names, counts[n + 1 :], strict=True)),
    )


#: What every sum of one table's cents must stay within for a 64-bit sum of them to be
#: exact: a quarter of BIGINT's range, so that a sum over the rows of the two claims tables
#: together, or a medical sum and a pharmacy sum added, fits too.
INT64_SUM_LIMIT = 2**61


def money_sums_fit_int64(checks: Sequence[TableCheck]) -> bool:
    """Whether no sum of the cents of any rows of one usable table can leave
    :data:`INT64_SUM_LIMIT`: its rows times its largest amount stay within it. Then summing
    cents in a 64-bit integer without overflow checks (DuckDB's ``sum_no_overflow``, faster
    than its 128-bit ``SUM``) is exact; see :func:`carrier_node.query.sql.int64_sums`."""
    return all(
        check.money_bound_cents is None or check.rows * check.money_bound_cents <= INT64_SUM_LIMIT
        for check in checks
        if check.usable
    )


def _repeats_earlier(key: Sequence[_ColumnPlan]) -> exp.Expr:
    """A row repeating the key of an earlier row (of an earlier file, or earlier in its file),
    as :func:`_count_repeated` counts them: rows with a required part of the key empty are
    not repeats."""
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[p.typed.copy() for p in key],
        order=exp.Order(
            expressions=[
                exp.Ordered(this=exp.column(FILE_COLUMN, quoted=True)),
                exp.Ordered(this=exp.column(ROW_COLUMN, quoted=True)),
            ]
        ),
    )
    later = exp.GT(this=rank, expression=exp.Literal.number(1))
    present = [_not_null(p.typed) for p in key if not p.column.nullable]
    return exp.and_(later, *present)


def _repeat_queries(data_file: DataFile, key: Sequence[_ColumnPlan]) -> tuple[exp.Query, exp.Query]:
    """Two queries each giving the rows of the files that repeat an earlier key: grouping
    the keys' hashes, then the keys themselves (see :func:`_run_repeat_count`).

    Counted over the files rather than the view: the view's filter would make this pass parse
    and cast every column a second time, and rows excluded for a bad value are counted already.
    """
    present = [p.typed.copy() for p in key if not p.column.nullable]

    def surplus(group_by: Sequence[exp.Expr]) -> exp.Query:
        groups = (
            exp.select(exp.alias_(exp.Count(this=exp.Star()), "n"))
            .from_(data_file.source())
            .group_by(*group_by)
            .having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1)))
        )
        if present:
            groups = groups.where(exp.and_(*(_not_null(e.copy()) for e in present)))
        extra = exp.Sub(this=exp.column("n"), expression=exp.Literal.number(1))
        return exp.select(exp.Sum(this=extra)).from_(groups.subquery("g"))

    return (
        surplus([exp.func("HASH", *(p.typed.copy() for p in key))]),
        surplus([p.typed.copy() for p in key]),
    )


def _run_repeat_count(con: duckdb.DuckDBPyConnection, queries: tuple[exp.Query, exp.Query]) -> int:
    """Rows repeating an earlier key; raises :class:`_Unreadable`.

    Rows with the same key have the same hash: when no hash repeats, no key does (exactly),
    and grouping one 64-bit hash is cheaper than grouping the key (2M members' medical
    claims: 0.90 -> 0.62 s). Only when a hash repeats (a repeated key, or two keys sharing
    a hash) are the keys themselves counted."""
    for query in queries:
        rows = _run(con, query)
        count = int(rows[0][0] or 0) if rows else 0  # type: ignore[call-overload]
        if count == 0:
            return 0
    return count


def count_repeats(con: duckdb.DuckDBPyConnection, check: TableCheck) -> int | None:
    """The rows repeating an earlier key of a table checked with ``count_repeats=False``
    (0 for one without :attr:`TableCheck.repeats`); None when the files cannot be read now
    (logged with the error's class only)."""
    if check.repeats is None:
        return 0
    try:
        return _run_repeat_count(con, check.repeats)
    except _Unreadable as error:
        logger.warning("cannot count repeated keys of %s (%s)", check.table.name, error.kind)
        return None


def check_tables(
    con: duckdb.DuckDBPyConnection,
    directory: Path,
    csv_encoding: CsvEncoding = "auto",
    *,
    count_repeats: bool = True,
) -> tuple[TableCheck, ...]:
    """Check every table of the schema in a data directory (which exists: see
    :func:`directory_problem`); ``count_repeats=False`` leaves repeated keys uncounted (see
    :attr:`TableCheck.repeats`)."""
    return tuple(
        check_table(con, directory, table, csv_encoding, count_repeats=count_repeats)
        for table in TABLES
    )


def check_directory(directory: Path, csv_encoding: CsvEncoding = "auto") -> list[Problem]:
    """The whole validation of a data directory (``carrier-node check --data DIR``)."""
    missing = directory_problem(Path(directory))
    if missing is not None:
        return [missing]
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    try:
        checks = check_tables(con, Path(directory), csv_encoding)
        return [p for check in checks for p in check.problems]
    finally:
        con.close()
