"""``carrier-node check``: validation and plausibility of a carrier's data, on its files or in
its warehouse, as one :class:`~carrier_node.data.report.CheckReport`.

On files, the schema checks of :mod:`carrier_node.data.validation` run first; the plausibility
rules then run on the rows they keep, with each row's 1-based number within its file. In a
PostgreSQL warehouse the same checks are pushed down: the catalog gives missing tables and
columns, one aggregate per table counts empty required values, codes outside their set and
spans ending before they start (those rows are left out, as from files), and the rules run on
the rest; a row is located by its ``ctid``. The same data gives the same findings from both,
row positions aside.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from pathlib import Path

import duckdb
from sqlglot import exp

from carrier_node.data.plausibility import FILE, RuleFinding, Runner, evaluate
from carrier_node.data.report import CheckReport, Finding, Severity
from carrier_node.data.validation import (
    RANGE_CHECKS,
    CsvEncoding,
    Problem,
    check_tables,
    directory_problem,
)
from carrier_node.data.warehouse import PG_TYPES, PostgresSource, WarehouseConfig
from fedoversight.errors import DataSourceError
from fedoversight.plausibility import ROW
from fedoversight.schema import TABLES, Table

logger = logging.getLogger(__name__)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def validation_finding(problem: Problem) -> Finding:
    return Finding(
        "validation",
        problem.severity,
        problem.table,
        problem.file,
        problem.column,
        problem.kind,
        problem.rows,
        problem.describe(),
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
    con = duckdb.connect(":memory:")
    try:
        checks = check_tables(con, Path(directory), csv_encoding)
        findings = [validation_finding(p) for c in checks for p in c.problems]
        scans = {c.table.name: c.located for c in checks if c.located is not None}
        found = evaluate(scans, _duckdb_runner(con), "duckdb", as_of)
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
    for (column, kind, _), count, valued in zip(conditions, flagged, present_values, strict=True):
        if not count:
            continue
        whole = count == (valued if kind == "invalid_value" else total) and kind != "bad_range"
        unusable = unusable or whole
        severity: Severity = "error" if whole else "warning"
        findings.append(
            validation_finding(Problem(table.name, name, column, kind, count, severity))
        )
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

        def run(sql: str) -> Sequence[tuple[object, ...]]:
            result = source.execute_arrow(sql)
            return list(zip(*(c.to_pylist() for c in result.columns), strict=True))

        found = evaluate(scans, run, "postgres", as_of, row_as_text=True)
    finally:
        source.close()
    findings.extend(plausibility_finding(f) for f in found)
    return CheckReport("warehouse", location, as_of, "ctid", tuple(findings))
