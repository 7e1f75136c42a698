"""Generate docs/data-dictionary.md from the code that declares and checks the carrier's data
(``--check`` fails on drift).

The tables, columns, types, presence, allowed values, descriptions and code lists come from
``fedoversight/schema.py`` and ``fedoversight/codelists/``; what validation accepts and does
with a bad value comes from ``carrier_node/data/validation.py`` (its constants, its rules and
the messages of :meth:`Problem.describe`); the grouping forms from ``fedoversight/dimensions.py``
(for the dimensions ``carrier_node/query/sql.py`` checks in the engine); the warehouse types
from ``carrier_node/data/warehouse.py``. A change there changes the document: run this script
and commit both.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import typing
from pathlib import Path

from carrier_node.data import validation
from carrier_node.data.validation import (
    _FALSE_WORDS,
    _ISO_DATE,
    _TRUE_WORDS,
    _TYPE_WORDS,
    _WHOLE_NUMBER,
    CANONICAL_TYPES,
    DATA_SUFFIXES,
    DUPLICATE_KEYS,
    ENCODING_NAMES,
    MONEY_LIMIT_CENTS,
    RANGE_CHECKS,
    CsvEncoding,
    Problem,
    _compatible,
)
from carrier_node.data.warehouse import PG_TYPES
from carrier_node.query.sql import CHECKED_DIMENSIONS
from fedoversight import codelists, dimensions, plausibility
from fedoversight.catalogue import get_metric
from fedoversight.dimensions import AGE_BANDS, UNKNOWN, Dimension
from fedoversight.plausibility import RULES, rules_of
from fedoversight.schema import MEDICAL_CLAIMS, SCHEMA_VERSION, TABLES, Column, ColumnType, Table

ROOT = Path(__file__).resolve().parent.parent

#: Dimensions taken from the data as text: a value not of its form groups as ``unknown``.
GROUPING_FORMS = {d: f"^{dimensions.pattern(d)}$" for d in CHECKED_DIMENSIONS}
OUT = ROOT / "docs" / "data-dictionary.md"
CODELISTS = ROOT / "fedoversight" / "codelists"
SOURCES = (
    "fedoversight/schema.py, fedoversight/codelists/, fedoversight/plausibility.py and"
    " carrier_node/data/validation.py"
)

#: Parquet storage types tried against each schema type, as (label, DuckDB type name).
STORAGE_KINDS: tuple[tuple[str, str], ...] = (
    ("text", "VARCHAR"),
    ("integer", "BIGINT"),
    ("float", "DOUBLE"),
    ("decimal", "DECIMAL(18,2)"),
    ("boolean", "BOOLEAN"),
    ("date", "DATE"),
    ("timestamp", "TIMESTAMP"),
)

#: How CSV text (and Parquet text of a non-text type) is read, per schema type.
CSV_TEXT: dict[ColumnType, str] = {
    ColumnType.CODE: "any text, kept as written (leading zeros too), spaces around it trimmed",
    ColumnType.DATE: f"`YYYY-MM-DD`: matches `{_ISO_DATE}` and is a real date",
    ColumnType.MONEY: (
        "a plain decimal number (`-12.50`; no currency sign, no thousands separator), kept to"
        f" cents; in files of any type, 10^{len(str(MONEY_LIMIT_CENTS)) - 3} or more in"
        " magnitude is not an amount (its cents would not fit the type)"
    ),
    ColumnType.BOOL: (
        "true: "
        + ", ".join(f"`{w}`" for w in _TRUE_WORDS)
        + "; false: "
        + ", ".join(f"`{w}`" for w in _FALSE_WORDS)
        + " (any case)"
    ),
    ColumnType.INT: f"a whole number, matching `{_WHOLE_NUMBER}` (a trailing `.0` is accepted)",
    ColumnType.NUMBER: "a plain decimal number",
}

#: One example of each problem `carrier-node check` reports: (table, file, column, kind, rows,
#: severity). The message column of the document is what the node prints for it.
EXAMPLES: tuple[tuple[str, str, str | None, str, int, validation.Severity], ...] = (
    ("medical_claims", "medical_claims.{parquet,csv}", None, "missing_file", 0, "error"),
    ("eligibility", "eligibility.csv", None, "unreadable", 0, "error"),
    ("eligibility", "eligibility.parquet", None, "ambiguous_file", 0, "warning"),
    ("eligibility", "eligibility.csv", "plan_code", "missing_column", 0, "error"),
    ("medical_claims", "medical_claims.parquet", "claim_start_date", "wrong_type", 0, "error"),
    ("medical_claims", "medical_claims.parquet", "revenue_code", "wrong_type", 0, "warning"),
    ("eligibility", "eligibility.csv", "birth_date", "wrong_type", 1200, "error"),
    ("eligibility", "eligibility.csv", "sex", "invalid_value", 1200, "error"),
    ("eligibility", "eligibility.csv", "sex", "invalid_value", 3, "warning"),
    ("pharmacy_claims", "pharmacy_claims.csv", "days_supply", "invalid_value", 2, "warning"),
    ("pharmacy_claims", "pharmacy_claims.csv", "ndc", "null_required", 5000, "error"),
    ("pharmacy_claims", "pharmacy_claims.csv", "ndc", "null_required", 4, "warning"),
    ("eligibility", "eligibility.csv", "enrollment_end_date", "bad_range", 2, "warning"),
    ("medical_claims", "medical_claims.csv", None, "duplicate_key", 7, "warning"),
)

_PART = "medical_claims/year=2026/month=02/part-0.parquet"

#: Problems of reading a table's files (layouts, encodings, empty files), as the node reports
#: them.
READING_EXAMPLES: tuple[Problem, ...] = (
    Problem("*", "carrier-data", None, "missing_directory", 0, "error"),
    Problem("eligibility", "eligibility.csv", None, "empty_file", 0, "error"),
    Problem(
        "medical_claims", "medical_claims/month=03/part-0.csv.gz", None, "empty_file", 0, "warning"
    ),
    Problem("eligibility", "eligibility.csv", None, "no_columns", 0, "error"),
    Problem(
        "eligibility",
        "eligibility.csv",
        None,
        "wrong_encoding",
        0,
        "error",
        encoding="utf-8",
        reads_as="latin-1",
    ),
    Problem("medical_claims", _PART, "allowed_amount", "missing_column", 0, "error"),
    Problem("medical_claims", _PART, "copay_amount", "partial_column", 0, "warning"),
    Problem("medical_claims", "medical_claims/", None, "mixed_formats", 0, "error"),
    Problem("pharmacy_claims", "pharmacy_claims/", None, "empty_directory", 0, "error"),
)


def cell(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    return f"`{text}`"


def rst_to_md(text: str) -> str:
    """Docstring markup to Markdown: ``x`` to `x`, :class:`X` to `X`."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def docstring_section(doc: str, start: str, end: str) -> str:
    """The text of a docstring between a line equal to ``start`` and one beginning ``end``."""
    body = doc.split(f"\n{start}\n", 1)[1]
    return body.split(f"\n{end}", 1)[0].strip()


def file_names(table: Table) -> str:
    files = [code(f"{table.name}{suffix}") for suffix, _ in DATA_SUFFIXES]
    return ", ".join(files) + f" or a directory {code(table.name + '/')} of such files"


def presence(column: Column) -> str:
    if column.required:
        return "required, may be empty" if column.nullable else "required"
    return "optional" if column.nullable else "optional; never empty when present"


def codelist_rows(name: str) -> list[dict[str, str]]:
    text = (CODELISTS / name).read_text(encoding="utf-8-sig")
    return list(csv.DictReader(text.splitlines()))


def grouping(column: Column) -> str | None:
    """How the column's values become a dimension's values, or None."""
    dim = column.dimension
    if dim is None:
        return None
    head = f"groups by {code(dim)}"
    if dim in GROUPING_FORMS:
        return (
            f"{head}; a value not matching {code(GROUPING_FORMS[dim])} (or empty) groups as"
            f" {code(UNKNOWN)}"
        )
    if dim is Dimension.AGE_BAND:
        return f"{head}: " + ", ".join(code(label) for label, _, _ in AGE_BANDS)
    if dim is Dimension.MEDICARE_PRIMARY:
        return f"{head}: `Y` when true, `N` when false"
    return f"{head}; empty groups as {code(UNKNOWN)}" if column.nullable else head


def allowed(column: Column) -> str:
    parts = []
    if column.values is not None:
        parts.append("one of " + ", ".join(code(v) for v in sorted(column.values)))
    else:
        parts.append(_TYPE_WORDS[column.type])
    if column.code_list is not None:
        n = len(codelist_rows(column.code_list))
        parts.append(
            f"codes of [{column.code_list}](../fedoversight/codelists/{column.code_list})"
            f" ({n} codes)"
        )
    group = grouping(column)
    if group is not None:
        parts.append(group)
    return "; ".join(parts)


def when_bad(table: Table, column: Column) -> str:
    outcomes = []
    if not column.nullable:
        outcomes.append("empty: row excluded")
    if column.type is not ColumnType.CODE:
        outcomes.append(f"not {_TYPE_WORDS[column.type]}: row excluded")
    if column.values is not None:
        outcomes.append("another value: row excluded")
    span = RANGE_CHECKS.get(table.name)
    if span is not None and column.name == span[1]:
        outcomes.append(f"before {code(span[0])}: row excluded")
    if column.code_list is not None:
        outcomes.append("a code outside the list: kept")
    if not outcomes:
        return "any value is kept"
    return "; ".join(outcomes)


def table_index() -> list[str]:
    lines = ["| table | delivery | one row is | file |", "|---|---|---|---|"]
    for t in TABLES:
        first = t.description.split(". ")[0].rstrip(".") + "."
        need = "required" if t.required else "optional"
        lines.append(f"| [{t.name}](#{t.name}) | {need} | {cell(first)} | {file_names(t)} |")
    return lines


def types_table() -> list[str]:
    lines = [
        "| type | a value is | in CSV | Parquet storage accepted | engine type | PostgreSQL type |",
        "|---|---|---|---|---|---|",
    ]
    for ctype in ColumnType:
        stored = [label for label, name in STORAGE_KINDS if _compatible(name, ctype)]
        lines.append(
            f"| {code(ctype)} | {cell(_TYPE_WORDS[ctype])} | {cell(CSV_TEXT[ctype])} |"
            f" {', '.join(stored)} | {code(CANONICAL_TYPES[ctype])} | {code(PG_TYPES[ctype])} |"
        )
    return lines


def examples_table() -> list[str]:
    lines = ["| problem | severity | what `carrier-node check` says |", "|---|---|---|"]
    problems = [Problem(*example) for example in EXAMPLES] + list(READING_EXAMPLES)
    for p in problems:
        lines.append(f"| {code(p.kind)} | {p.severity} | {cell(p.describe())} |")
    return lines


def encodings() -> str:
    names = [code(e) for e in typing.get_args(CsvEncoding) if e != "auto"]
    return ", ".join(f"{n} ({ENCODING_NAMES[n.strip('`')]})" for n in names)


def table_section(table: Table) -> list[str]:
    lines = [f"## {table.name}", "", table.description, ""]
    need = (
        "Required: without it the node answers nothing."
        if table.required
        else "Optional: without it the table is absent, which is not a problem."
    )
    lines += [f"File: {file_names(table)}. {need}", ""]
    span = RANGE_CHECKS.get(table.name)
    if span is not None:
        lines += [
            f"A row whose {code(span[1])} is before its {code(span[0])} is excluded (a span"
            " covers no day).",
            "",
        ]
    key = DUPLICATE_KEYS.get(table.name)
    if key is not None:
        lines += [
            "Rows repeating an earlier (" + ", ".join(code(k) for k in key) + ") are counted"
            " (a warning) and kept.",
            "",
        ]
    lines += [
        "| column | type | presence | meaning | values | example | when a value is bad |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in table.columns:
        lines.append(
            f"| {code(c.name)} | {c.type} | {presence(c)} | {cell(c.description)} |"
            f" {cell(allowed(c))} | {code(c.example)} | {cell(when_bad(table, c))} |"
        )
    return [*lines, ""]


def codelists_section() -> list[str]:
    used: dict[str, list[str]] = {}
    for t in TABLES:
        for c in t.columns:
            if c.code_list is not None:
                used.setdefault(c.code_list, []).append(f"{t.name}.{c.name}")
    quality = get_metric("ops.data_quality")
    lines = [
        "## Code lists",
        "",
        "Public code lists ship with the catalogue in `fedoversight/codelists/`"
        " ([NOTICE](../fedoversight/codelists/NOTICE) gives their origin). Validation does not"
        " check codes against them: a code outside a list is kept, and `ops.data_quality` counts"
        " it. That metric's definition: " + rst_to_md(quality.definition),
        "",
        rst_to_md(codelists.__doc__ or "").split("\n\n", 1)[1].strip(),
        "",
        "| file | rows | columns | schema columns |",
        "|---|---|---|---|",
    ]
    medical = {c.name for c in MEDICAL_CLAIMS.columns}
    for path in sorted(CODELISTS.glob("*.csv")):
        rows = codelist_rows(path.name)
        header = list(rows[0]) if rows else []
        where = ""
        if path.name in used:
            where = "values expected in it: " + ", ".join(code(w) for w in used[path.name])
        conditions = [h for h in header if h.removesuffix("_prefix") in medical]
        if conditions:
            where = "rules on " + ", ".join(
                code(f"{MEDICAL_CLAIMS.name}.{h.removesuffix('_prefix')}") for h in conditions
            )
        lines.append(
            f"| [{path.name}](../fedoversight/codelists/{path.name}) | {len(rows)} |"
            f" {', '.join(code(h) for h in header)} | {where} |"
        )
    return [*lines, ""]


def plausibility_section() -> list[str]:
    """The rules of fedoversight/plausibility.py, per table, with the rows they flag."""
    intro = rst_to_md(
        docstring_section(
            plausibility.__doc__ or "",
            "What an expression may use besides the table's columns:",
            "Severities",
        )
    )
    lines = [
        "## Plausibility rules",
        "",
        f"Schema version {SCHEMA_VERSION}: {len(RULES)} rules. After validation,"
        " `carrier-node check` runs these on the rows validation keeps, on files or pushed down"
        " into the warehouse. A rule never excludes a row: each finding names table, file,"
        " column, rule, the rows flagged and the first five of them (1-based row numbers within"
        " the file; a warehouse row's `ctid`), never a value. *error*: the value cannot be"
        " right; *warning*: possible, but unusual enough to look at. The rows a rule flags are"
        " those where its condition (a sqlglot expression, shown here as DuckDB SQL) is true.",
        "",
        "What a condition may use besides the table's columns:",
        "",
        intro,
        "",
    ]
    for table in TABLES:
        rules = rules_of(table.name)
        if not rules:
            continue
        lines += [
            f"### {table.name}",
            "",
            "| rule | column | severity | meaning | flags a row when |",
            "|---|---|---|---|---|",
        ]
        for r in rules:
            condition = code(r.flags.sql(dialect="duckdb"))
            for name, window in r.derived:
                condition += f", where {code(name)} is {code(window.sql(dialect='duckdb'))}"
            lines.append(
                f"| `{r.name}` | `{r.column}` | {r.severity} | {cell(r.description)} |"
                f" {cell(condition)} |"
            )
        lines.append("")
    return lines


def render() -> str:
    rules = rst_to_md(docstring_section(validation.__doc__ or "", "Rules:", "Nothing here"))
    lines = [
        "# Data dictionary",
        "",
        f"<!-- Generated by scripts/gen_docs.py from {SOURCES}: edit those and run"
        " `python scripts/gen_docs.py`; tests/unit/test_docs.py fails when this file is"
        " stale. -->",
        "",
        "What a carrier delivers to its node daemon: five tables, three of them required. They"
        " stay at the carrier; the node computes over them and only disclosure-controlled"
        " aggregates leave ([disclosure.md](disclosure.md)). The node reads them from a"
        " directory (`data_dir` in `node.toml`) or from a PostgreSQL schema (`[warehouse]`);"
        " [operations.md](operations.md) covers running it.",
        "",
        "Each column's *example* is a value as a CSV file would hold it, valid for the column"
        " (a test checks each as the node checks a value). The examples are made up: no real"
        " member, claim or provider.",
        "",
        *table_index(),
        "",
        "## Files",
        "",
        "- Each table in the data directory, named after the table: one file ("
        + ", ".join(code(f"NAME{suffix}") for suffix, _ in DATA_SUFFIXES)
        + ") or a directory `NAME/` of such files at any depth, one format in a directory"
        " (CSV files may mix compressions). Partitions are read as one table: flat"
        " (`medical_claims/2026-01.csv.gz`) or Hive-style folders"
        " (`medical_claims/year=2026/month=01/part-0.parquet`); folder names are not read as"
        " columns, so every column is in the files. Names starting with `.` or `_` (an"
        " exporter's `_SUCCESS`, `.crc` files) are skipped. When more than one of these"
        " exists for a table, the first in that order is read and a warning says so.",
        "- The files of a table are matched by column name: they may list their columns in"
        " any order. A required column missing from one of them makes the table unusable (the"
        " problem names that file); an optional column some files lack reads as empty in their"
        " rows (a warning names each such file).",
        "- An empty file (not even a header row) is reported as empty: an error for a table"
        " of one file, a warning for one file of a directory, which is skipped. A header row"
        " without rows is an empty table, not a problem. A data directory that does not exist"
        " is one error.",
        "- CSV: a header row naming the columns; comma, semicolon, pipe or tab separated; CRLF"
        " or LF line ends; gzip (`.csv.gz`) or zstd (`.csv.zst`) compressed or not. Every"
        " column is read as text, so codes keep their leading zeros; spaces around a value are"
        " trimmed and a blank value is empty.",
        "- CSV text is decoded as `csv_encoding` in `node.toml` says (`carrier-node check"
        " --csv-encoding`): "
        + encodings()
        + ", or `auto` (the default): UTF-8 (with or without a byte-order mark), else UTF-16"
        " when the header reads so, else Latin-1. A declared encoding is every CSV file's;"
        " `auto` decides table by table (the files of a table share one). A file not in the"
        " declared encoding is reported as such, with the encoding it reads as.",
        "- Parquet: a column stored in its engine type (below) is read as it is: empty means"
        " null, and a text code is not trimmed. A column stored as text for another type is"
        " trimmed and read as CSV text is; other accepted storage types are converted. A code"
        " stored as a number is read, with a warning: its leading zeros may be lost.",
        "- Column names are matched whatever their case, in any order. Columns not named here"
        " are never read.",
        "- `carrier-node check --data DIR` (or `--config node.toml`) reports every problem of a"
        " directory, then the [plausibility rules](#plausibility-rules); its output and exit"
        " statuses are in [operations.md](operations.md#checking-the-data). The node runs the"
        " validation when it starts and again before a request reads a file that has changed.",
        "- A PostgreSQL warehouse (`[warehouse]` in `node.toml`) holds the same tables and"
        " columns in `schema_name`. The node checks that the required tables and their"
        " required columns exist, reads a missing optional column as empty, and casts every"
        " column to its PostgreSQL type below; when answering, rows are not checked or excluded"
        " there, and a value that does not cast fails the request. `carrier-node check --config`"
        " pushes the checks into the warehouse: empty required values, codes outside their set"
        " and spans ending before they start are counted (and left out of the plausibility"
        " rules, as from files), then the rules run there.",
        "",
        "## Column types",
        "",
        *types_table(),
        "",
        "## What validation does with bad data",
        "",
        rules,
        "",
        "A problem names its table, file, column and row counts, never a data value. Each kind,"
        " with the message the node prints for it (the counts are examples):",
        "",
        *examples_table(),
        "",
        "## Reading the column tables",
        "",
        "- presence: a *required* column must be in the file (a missing one makes the table"
        " unusable); *required, may be empty* means the column must be there but a row may"
        " leave it empty; an *optional* column may be left out, and then reads as empty in"
        " every row.",
        "- values: the allowed values of a closed set, else the form of the type; for a column"
        " a query can group by, how its values become the dimension's values.",
        "- when a value is bad: what validation does with a row holding one. When no row of a"
        " column is usable the table is unusable instead (an error, see above).",
        "",
    ]
    lines += plausibility_section()
    for table in TABLES:
        lines += table_section(table)
    lines += codelists_section()
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args()
    new = render()
    if args.check:
        old = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if new != old:
            print("docs/data-dictionary.md drifted: run python scripts/gen_docs.py")
            return 1
        return 0
    OUT.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
