"""``carrier-node check``: validation and plausibility of a carrier's data, on its files or in
its warehouse, as one :class:`~carrier_node.data.report.CheckReport`.

On files, the schema checks of :mod:`carrier_node.data.validation` run first; the plausibility
rules then run on the rows they keep, with each row's 1-based number within its file. In a
PostgreSQL warehouse the same checks are pushed down: the catalog gives missing tables and
columns, one aggregate per table counts empty required values, codes outside their set and
spans ending before they start (those rows are left out, as from files), and the rules run on
the rest; a row is located by its ``ctid``. The same data gives the same findings from both,
row positions aside. A validation finding about rows lists the first few as a rule's does, from
one more pass over the table (only for a table with such rows).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import duckdb
from sqlglot import exp

from carrier_node.data.plausibility import (
    FILE,
    RuleFinding,
    Runner,
    evaluate,
    flag_alias,
    locate_flags,
)
from carrier_node.data.report import CheckReport, Finding, Severity
from carrier_node.data.validation import (
    RANGE_CHECKS,
    CsvEncoding,
    Problem,
    TableCheck,
    check_tables,
    directory_problem,
    raw_scan,
)
from carrier_node.data.warehouse import PG_TYPES, PostgresSource, WarehouseConfig
from fedoversight.errors import DataSourceError
from fedoversight.plausibility import ROW
from fedoversight.schema import TABLES, Table

logger = logging.getLogger(__name__)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def validation_finding(problem: Problem, first_rows: tuple[int | str, ...] = ()) -> Finding:
    message = problem.describe()
    if first_rows:
        where = ", ".join(str(p) for p in first_rows)
        more = ", …" if problem.rows > len(first_rows) else ""
        message = f"{message} (first at {where}{more})"
    return Finding(
        "validation",
        problem.severity,
        problem.table,
        problem.file,
        problem.column,
        problem.kind,
        problem.rows,
        message,
        first_rows,
    )


def _flags(scan: exp.Query, conditions: Sequence[exp.Expr]) -> exp.Select:
    """``SELECT FILE, ROW, __flag_0, …`` over a scan: one boolean per condition and row."""
    flags = [
        exp.alias_(
            exp.func("coalesce", exp.Paren(this=c.copy()), exp.false()), flag_alias(i), quoted=True
        )
        for i, c in enumerate(conditions)
    ]
    return exp.select(_col(FILE), _col(ROW), *flags).from_(
        scan.copy().subquery(exp.to_identifier("scan", quoted=True))
    )


def plausibility_finding(found: RuleFinding) -> Finding:
    rule = found.rule
    rows = f"{found.rows} row" if found.rows == 1 else f"{found.rows} rows"
    where = ", ".join(str(p) for p in found.first_rows)
    more = ", …" if found.rows > len(found.first_rows) else ""
    return Finding(
        "plausibility",
        rule.severity,
        rule.table,
        found.file,
        rule.column,
        rule.name,
        found.rows,
        f"{rule.table}: {found.file} column {rule.column!r}, {rule.name}: {rule.description}"
        f" ({rows}; first at {where}{more})",
        found.first_rows,
    )


# --- files ------------------------------------------------------------------------------------


def _duckdb_runner(con: duckdb.DuckDBPyConnection) -> Runner:
    def run(sql: str) -> Sequence[tuple[object, ...]]:
        try:
            return con.execute(sql).fetchall()
        except duckdb.Error as exc:  # DuckDB's text may quote a value: the class only
            raise DataSourceError(f"plausibility query failed ({type(exc).__name__})") from None

    return run


def _located_findings(check: TableCheck, run: Runner) -> list[Finding]:
    """A table's validation findings, each row-level one with its first rows: one query over
    the table's files for all of its row-level problems (none when it has none). A problem of
    a table of several files becomes one finding per file holding such rows, as a plausibility
    rule's does, its rows numbered within that file."""
    if check.file is None or not check.row_conditions:
        return [validation_finding(p) for p in check.problems]
    data_file = check.file
    conditions = check.row_conditions
    flags = _flags(raw_scan(data_file), [c.flags for c in conditions])
    # Each condition flags some row (it is recorded for a problem with rows): one query.
    located = locate_flags(flags, len(conditions), run, "duckdb", all_true=True)
    index = {(c.column, c.kind): i for i, c in enumerate(conditions)}
    findings: list[Finding] = []
    for problem in check.problems:
        at = index.get((problem.column, problem.kind))
        if at is None or problem.rows == 0:
            findings.append(validation_finding(problem))
            continue
        per_file = sorted((f, found) for (i, f), found in located.items() if i == at)
        if not data_file.is_directory:
            rows_at = per_file[0][1][1] if per_file else ()
            findings.append(validation_finding(problem, rows_at))
            continue
        for file, (rows, rows_at) in per_file:
            findings.append(validation_finding(replace(problem, file=file, rows=rows), rows_at))
    return findings


def check_files(
    directory: Path, as_of: datetime.date, csv_encoding: CsvEncoding = "auto"
) -> CheckReport:
    """Validate a data directory and run the plausibility rules on the rows validation keeps
    (located by file and 1-based row number)."""
    missing = directory_problem(Path(directory))
    if missing is not None:
        return CheckReport(
            "files", str(directory), as_of, "file_row", (validation_finding(missing),)
        )
    # No progress bar: DuckDB draws it on standard output, where the JSON report goes.
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    try:
        checks = check_tables(con, Path(directory), csv_encoding)
        run = _duckdb_runner(con)
        findings = [f for c in checks for f in _located_findings(c, run)]
        scans = {c.table.name: c.located for c in checks if c.located is not None}
        found = evaluate(scans, run, "duckdb", as_of)
    finally:
        con.close()
    findings.extend(plausibility_finding(f) for f in found)
    return CheckReport("files", str(directory), as_of, "file_row", tuple(findings))


# --- warehouse --------------------------------------------------------------------------------


def _typed(table: Table, present: set[str]) -> dict[str, exp.Expr]:
    """Each schema column in its canonical type (a typed NULL where the table lacks it)."""
    typed: dict[str, exp.Expr] = {}
    for column in table.columns:
        target = exp.DataType.build(PG_TYPES[column.type], dialect="postgres")
        source = _col(column.name, "src") if column.name in present else exp.null()
        typed[column.name] = exp.cast(source, target)
    return typed


def _is_null(e: exp.Expr) -> exp.Expr:
    return exp.Is(this=e.copy(), expression=exp.null())


def _conditions(
    table: Table, typed: dict[str, exp.Expr], present: set[str]
) -> list[tuple[str, str, exp.Expr]]:
    """(column, problem kind, the rows it excludes), as the file validation excludes them."""
    found: list[tuple[str, str, exp.Expr]] = []
    for column in table.columns:
        if column.name not in present:
            continue
        value = typed[column.name]
        if not column.nullable:
            found.append((column.name, "null_required", _is_null(value)))
        if column.values is not None:
            outside = exp.Not(this=value.copy().isin(*sorted(column.values)))
            found.append((column.name, "invalid_value", outside))
    span = RANGE_CHECKS.get(table.name)
    if span is not None and span[0] in present and span[1] in present:
        start, end = typed[span[0]], typed[span[1]]
        found.append((span[1], "bad_range", exp.LT(this=end.copy(), expression=start.copy())))
    return found


def _warehouse_first_rows(
    source: PostgresSource, relation: exp.Expr, name: str, conditions: Sequence[exp.Expr]
) -> dict[int, tuple[int | str, ...]]:
    """The ``ctid`` of the first rows each condition flags (by its index; each flags some row):
    one query for a table's conditions together, none when there are none."""
    if not conditions:
        return {}
    flags = [
        exp.alias_(
            exp.func("coalesce", exp.Paren(this=c.copy()), exp.false()), flag_alias(i), quoted=True
        )
        for i, c in enumerate(conditions)
    ]
    query = exp.select(
        exp.alias_(exp.Literal.string(name), FILE, quoted=True),
        exp.alias_(exp.column("ctid", table="src"), ROW, quoted=True),
        *flags,
    ).from_(relation.copy())
    located = locate_flags(
        query, len(conditions), _arrow_runner(source), "postgres", row_as_text=True, all_true=True
    )
    return {index: rows_at for (index, _), (_, rows_at) in located.items()}


def _arrow_runner(source: PostgresSource) -> Runner:
    def run(sql: str) -> Sequence[tuple[object, ...]]:
        result = source.execute_arrow(sql)
        return list(zip(*(c.to_pylist() for c in result.columns), strict=True))

    return run


def _warehouse_table(
    source: PostgresSource, schema: str, table: Table, present: set[str]
) -> tuple[list[Finding], exp.Select | None]:
    """The validation findings of one warehouse table, and its scan when it is usable."""
    name = f"{schema}.{table.name}"
    findings: list[Finding] = []
    missing = [c.name for c in table.required_columns if c.name not in present]
    for column in missing:
        problem = Problem(table.name, name, column, "missing_column", 0, "error")
        findings.append(validation_finding(problem))
    if missing:
        return findings, None
    typed = _typed(table, present)
    conditions = _conditions(table, typed, present)
    relation = exp.alias_(exp.table_(table.name, db=schema, quoted=True), "src")
    # Each condition's rows, and the rows it could concern: all of them, or for a code set the
    # rows with a value (as from files, a column none of whose values is usable is an error).
    counts = exp.select(
        exp.alias_(exp.Count(this=exp.Star()), "n_rows"),
        *(
            exp.alias_(
                exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=c.copy())),
                f"n_{i}",
            )
            for i, (_, _, c) in enumerate(conditions)
        ),
        *(
            exp.alias_(exp.Count(this=typed[column].copy()), f"of_{i}")
            for i, (column, _, _) in enumerate(conditions)
        ),
    ).from_(relation)
    result = source.execute_arrow(counts.sql(dialect="postgres"))
    values = [int(c[0].as_py() or 0) for c in result.columns]
    total, flagged = values[0], values[1 : 1 + len(conditions)]
    present_values = values[1 + len(conditions) :]
    unusable = False
    fired = [i for i, count in enumerate(flagged) if count]
    first_rows = _warehouse_first_rows(source, relation, name, [conditions[i][2] for i in fired])
    for at, i in enumerate(fired):
        column, kind, _ = conditions[i]
        count, valued = flagged[i], present_values[i]
        whole = count == (valued if kind == "invalid_value" else total) and kind != "bad_range"
        unusable = unusable or whole
        severity: Severity = "error" if whole else "warning"
        problem = Problem(table.name, name, column, kind, count, severity)
        findings.append(validation_finding(problem, first_rows.get(at, ())))
    if unusable:
        return findings, None
    scan = exp.select(
        *(exp.alias_(e, n, quoted=True) for n, e in typed.items()),
        exp.alias_(exp.Literal.string(name), FILE, quoted=True),
        exp.alias_(exp.column("ctid", table="src"), ROW, quoted=True),
    ).from_(relation.copy())
    keep = [exp.Not(this=exp.Paren(this=c.copy())) for _, _, c in conditions]
    if keep:
        # NOT (x IS NULL) keeps; NOT (code IN …) is NULL for an empty optional code: keep it.
        scan = scan.where(exp.and_(*(exp.func("coalesce", k, exp.true()) for k in keep)))
    return findings, scan


def check_warehouse(config: WarehouseConfig, as_of: datetime.date) -> CheckReport:
    """The checks of :func:`check_files`, pushed down into the carrier's warehouse."""
    schema = config.schema_name
    location = f"{config.host}:{config.port}/{config.dbname}/{schema}"
    source = PostgresSource(config)
    findings: list[Finding] = []
    scans: dict[str, exp.Query] = {}
    try:
        catalog = source.catalog()
        for table in TABLES:
            present = catalog.get(table.name)
            if present is None:
                if table.required:
                    findings.append(
                        Finding(
                            "validation",
                            "error",
                            table.name,
                            f"{schema}.{table.name}",
                            None,
                            "missing_table",
                            0,
                            f"{table.name}: table {schema}.{table.name} not found in the"
                            " warehouse — table unusable",
                        )
                    )
                continue
            table_findings, scan = _warehouse_table(source, schema, table, present)
            findings.extend(table_findings)
            if scan is not None:
                scans[table.name] = scan

        found = evaluate(scans, _arrow_runner(source), "postgres", as_of, row_as_text=True)
    finally:
        source.close()
    findings.extend(plausibility_finding(f) for f in found)
    return CheckReport("warehouse", location, as_of, "ctid", tuple(findings))
