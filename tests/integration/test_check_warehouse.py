"""``carrier-node check`` pushed down into a PostgreSQL warehouse gives the findings it gives on
the same data as files: the same rules, columns and row counts, and the same rows (a warehouse
row is located by its ``ctid``; loaded in file order, its rank by ctid is its file row number).

Needs the PostgreSQL server (127.0.0.1:5432, trust auth, database ``test``); skipped with the
reason when unreachable, a failure with FEDOVERSIGHT_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg.sql
import pytest

from carrier_node.data.checks import check_files, check_warehouse
from carrier_node.data.report import CheckReport
from carrier_node.data.warehouse import WarehouseConfig
from fedoversight.testing import load_directory
from tests import postgres
from tests.plausibility_kit import AS_OF, Key, break_extract, clean_extract
from tests.postgres import fresh_schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[Key, set[int]]]:
    directory = clean_extract(tmp_path_factory.mktemp("extract"))
    expected = break_extract(directory)
    # Validation's exclusions too: a code outside its set, an empty required value.
    path = directory / "eligibility.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    used = {
        r - 1 for (table, _, _), rows in expected.items() if table == "eligibility" for r in rows
    }
    free = [i for i in frame.index if i not in used][-2:]
    frame.loc[free[0], "sex"] = "X"
    frame.loc[free[1], "program"] = ""
    frame.to_csv(path, index=False)
    return directory, expected


@pytest.fixture(scope="module")
def warehouse(broken: tuple[Path, dict[Key, set[int]]]) -> Iterator[str]:
    directory, _ = broken
    with fresh_schema("fedoversight_check") as schema:
        con = postgres.connect()
        try:
            load_directory(con, schema, directory)
            yield schema
        finally:
            con.close()


def ranks_by_ctid(schema: str) -> dict[tuple[str, str], int]:
    """(table, ctid) -> the row's rank in ctid order: its row number in the file it came from."""
    con = postgres.connect()
    ranks: dict[tuple[str, str], int] = {}
    try:
        for table in ("eligibility", "medical_claims", "pharmacy_claims"):
            query = psycopg.sql.SQL(
                "SELECT ctid::text, row_number() OVER (ORDER BY ctid) FROM {}.{}"
            ).format(psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table))
            for ctid, rank in con.execute(query).fetchall():
                ranks[(table, str(ctid))] = int(str(rank))
    finally:
        con.close()
    return ranks


def summary(report: CheckReport) -> set[tuple[str, str, str, str, int]]:
    return {
        (f.kind, f.table, f.column or "", f.rule, f.rows)
        for f in report.findings
        if f.rule != "duplicate_key"  # a file-side count; the rule duplicate_claim_line is both
    }


@pytest.mark.postgres
def test_the_warehouse_gives_the_findings_of_the_files(
    broken: tuple[Path, dict[Key, set[int]]], warehouse: str
) -> None:
    directory, expected = broken
    files = check_files(directory, AS_OF)
    pg = check_warehouse(WarehouseConfig(dbname="test", schema_name=warehouse), AS_OF)
    assert pg.row_identity == "ctid" and pg.source == "warehouse"
    assert summary(pg) == summary(files)
    validation = {
        (f.column, f.rule, f.rows, f.severity) for f in pg.findings if f.kind == "validation"
    }
    assert validation == {
        ("sex", "invalid_value", 1, "warning"),
        ("program", "null_required", 1, "warning"),
    }
    # The same rows: each ctid reported is the row of the file row number reported, for a
    # validation finding as for a rule's.
    ranks = ranks_by_ctid(warehouse)
    frame = pd.read_csv(directory / "eligibility.csv", dtype=str, keep_default_na=False)
    planted = {
        "sex": [i + 1 for i in frame.index[frame["sex"] == "X"]],
        "program": [i + 1 for i in frame.index[frame["program"] == ""]],
    }
    for report in (files, pg):
        located = {
            f.column: [ranks[(f.table, r)] if isinstance(r, str) else r for r in f.first_rows]
            for f in report.findings
            if f.kind == "validation" and f.rule != "duplicate_key"  # files only: see summary
        }
        assert located == planted, report.source
    by_key = {(f.table, f.column, f.rule): f for f in files.findings if f.kind == "plausibility"}
    for f in pg.findings:
        if f.kind != "plausibility":
            continue
        assert f.file == f"{warehouse}.{f.table}"
        from_files = by_key[(f.table, f.column, f.rule)]
        assert [ranks[(f.table, str(ctid))] for ctid in f.first_rows] == list(
            from_files.first_rows
        ), f.rule
    assert {
        (f.table, f.column or "", f.rule) for f in pg.findings if f.kind == "plausibility"
    } == set(expected)


@pytest.mark.postgres
def test_check_config_with_a_warehouse_through_the_command_line(
    warehouse: str, tmp_path: Path
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'carrier_id = "c001"\ncoordinator = "127.0.0.1:1"\ninsecure = true\n\n'
        f'[warehouse]\ndbname = "test"\nschema_name = "{warehouse}"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from carrier_node.cli import main; main()"
    args = ["check", "--config", str(config), "--format", "json", "--as-of", AS_OF.isoformat()]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 2, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert document["source"] == {
        "kind": "warehouse",
        "location": f"127.0.0.1:5432/test/{warehouse}",
    }
    assert document["row_identity"] == "ctid"
    assert {f["rule"] for f in document["findings"]} >= {"negative_amount", "duplicate_fill"}
    assert all(
        isinstance(r, str) and r.startswith("(")
        for f in document["findings"]
        for r in f["first_rows"]
    )


@pytest.mark.postgres
def test_a_warehouse_without_a_required_table_or_column(tmp_path: Path) -> None:
    directory = clean_extract(tmp_path)
    with fresh_schema("fedoversight_check") as schema:
        con = postgres.connect()
        try:
            load_directory(con, schema, directory)
            con.execute(
                psycopg.sql.SQL("DROP TABLE {}.pharmacy_claims").format(
                    psycopg.sql.Identifier(schema)
                )
            )
            con.execute(
                psycopg.sql.SQL("ALTER TABLE {}.eligibility DROP COLUMN sex").format(
                    psycopg.sql.Identifier(schema)
                )
            )
            report = check_warehouse(WarehouseConfig(dbname="test", schema_name=schema), AS_OF)
        finally:
            con.close()
    assert {(f.table, f.column, f.rule, f.severity) for f in report.findings} == {
        ("pharmacy_claims", None, "missing_table", "error"),
        ("eligibility", "sex", "missing_column", "error"),
    }
    assert report.exit_code == 2


@pytest.mark.postgres
def test_a_column_with_no_usable_value_is_an_error_in_both(tmp_path: Path) -> None:
    directory = clean_extract(tmp_path)
    path = directory / "eligibility.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["sex"] = "X"
    frame.loc[3, "enrollee_type"] = "retiree"  # an optional code: a warning, empty ones aside
    frame.to_csv(path, index=False)
    files = check_files(directory, AS_OF)
    with fresh_schema("fedoversight_check") as schema:
        con = postgres.connect()
        try:
            load_directory(con, schema, directory)
        finally:
            con.close()
        pg = check_warehouse(WarehouseConfig(dbname="test", schema_name=schema), AS_OF)
    expected = {
        ("validation", "eligibility", "sex", "invalid_value", len(frame)),
        ("validation", "eligibility", "enrollee_type", "invalid_value", 1),
    }
    assert summary(files) == summary(pg) == expected
    severities = {(f.column, f.severity) for f in pg.findings}
    assert severities == {("sex", "error"), ("enrollee_type", "warning")}
    assert pg.exit_code == files.exit_code == 2
