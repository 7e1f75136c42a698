"""How a node reads a carrier's tables: one file, a directory of files or Hive-style partition
folders; Parquet, CSV and compressed CSV; CSV encodings; and where each row came from."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from carrier_node.data.validation import (
    FILE_COLUMN,
    ROW_COLUMN,
    TableCheck,
    check_tables,
    raw_scan,
)
from tests.unit.test_datasource import Format, Rows, valid_tables, write_directory, write_table


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(":memory:")
    yield connection
    connection.close()


def checked(con: duckdb.DuckDBPyConnection, directory: Path, table: str) -> TableCheck:
    (check,) = [c for c in check_tables(con, directory) if c.table.name == table]
    return check


def partition(directory: Path, name: str, parts: dict[str, Rows], fmt: Format) -> list[Path]:
    """Write a table as partition files, at paths relative to its directory (the file's own
    name is the table's, the path's last part its folder)."""
    (directory / f"{name}.{fmt}").unlink(missing_ok=True)
    written = []
    for folder, rows in parts.items():
        target = directory / name / folder
        target.mkdir(parents=True, exist_ok=True)
        written.append(write_table(target, name, rows, fmt))
    return written


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_rows_carry_their_file_and_row_number(
    tmp_path: Path, fmt: Format, con: duckdb.DuckDBPyConnection
) -> None:
    write_directory(tmp_path, fmt)
    claims = valid_tables()["medical_claims"]
    claims[4]["claim_status"] = "pending"  # excluded from the view, still in the raw scan
    partition(
        tmp_path,
        "medical_claims",
        {"year=2024/month=03": claims[:3], "year=2024/month=04": claims[3:]},
        fmt,
    )
    check = checked(con, tmp_path, "medical_claims")
    assert check.file is not None and check.located is not None
    raw = raw_scan(check.file).sql(dialect="duckdb")
    located = check.located.sql(dialect="duckdb")
    march = f"medical_claims/year=2024/month=03/medical_claims.{fmt}"
    april = f"medical_claims/year=2024/month=04/medical_claims.{fmt}"
    everything = con.execute(
        f'SELECT claim_id, "{FILE_COLUMN}", "{ROW_COLUMN}" FROM ({raw}) ORDER BY claim_id'
    ).fetchall()
    assert everything == [
        ("C0001", march, 1),
        ("C0002", march, 2),
        ("C0003", march, 3),
        ("C0004", april, 1),
        ("C0005", april, 2),
        ("C0006", april, 3),
        ("C0007", april, 4),
    ]
    kept = con.execute(
        f'SELECT claim_id, "{FILE_COLUMN}", "{ROW_COLUMN}", allowed_amount FROM ({located})'
        " ORDER BY claim_id"
    ).fetchall()
    assert [r[:3] for r in kept] == [r for r in everything if r[0] != "C0005"]
    assert {str(r[3]) for r in kept} == {"80.50"}


def test_row_numbers_hold_over_a_large_csv_read_in_parallel(tmp_path: Path) -> None:
    """Row numbers come from the reader's position in the file, not from the order rows
    reach the query: a file big enough to be read by several threads keeps them."""
    write_directory(tmp_path, "csv")
    row = valid_tables()["pharmacy_claims"][0]
    header = ",".join(row)
    lines = [header] + [
        ",".join(f"R{i:07d}" if k == "claim_id" else v for k, v in row.items())
        for i in range(1, 200_001)
    ]
    (tmp_path / "pharmacy_claims.csv").unlink()
    folder = tmp_path / "pharmacy_claims"
    folder.mkdir()
    with gzip.open(folder / "part-1.csv.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    (folder / "part-0.csv").write_text("\n".join(lines[:1001]) + "\n")
    con = duckdb.connect(":memory:", config={"threads": 4, "preserve_insertion_order": False})
    try:
        check = checked(con, tmp_path, "pharmacy_claims")
        assert check.file is not None and check.rows == 201_000
        raw = raw_scan(check.file).sql(dialect="duckdb")
        wrong = con.execute(
            f'SELECT "{FILE_COLUMN}", count(*) FILTER (WHERE CAST(substr(claim_id, 2) AS BIGINT)'
            f' <> "{ROW_COLUMN}"), count(*) FROM ({raw}) GROUP BY ALL ORDER BY 1'
        ).fetchall()
    finally:
        con.close()
    assert wrong == [
        ("pharmacy_claims/part-0.csv", 0, 1000),
        ("pharmacy_claims/part-1.csv.gz", 0, 200_000),
    ]
