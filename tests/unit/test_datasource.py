"""The carrier node's file data source: validation, canonical views, and no data in messages."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carrier_node.data.files import FileSource
from carrier_node.data.validation import Problem, check_directory
from fedoversight.errors import DataSourceError
from fedoversight.schema import TABLES_BY_NAME, ColumnType

Format = Literal["csv", "parquet"]
Rows = list[dict[str, str]]

SECRET = "SECRET123"

_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.CODE: pa.string(),
    ColumnType.DATE: pa.date32(),
    ColumnType.MONEY: pa.decimal128(18, 2),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.INT: pa.int64(),
    ColumnType.NUMBER: pa.float64(),
}
_CANONICAL = {
    ColumnType.CODE: "VARCHAR",
    ColumnType.DATE: "DATE",
    ColumnType.MONEY: "DECIMAL(18,2)",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.INT: "BIGINT",
    ColumnType.NUMBER: "DOUBLE",
}


def eligibility_rows() -> Rows:
    return [
        {
            "member_id": f"M{i:03d}",
            "program": "FEHB" if i % 2 else "PSHB",
            "plan_code": "010",
            "birth_date": "1980-02-03",
            "sex": "F" if i % 2 else "M",
            "state": "MD",
            "enrollment_start_date": "2024-01-01",
            "enrollment_end_date": "" if i == 1 else "2024-12-31",
            "medicare_primary": "false",
        }
        for i in range(1, 6)
    ]


def medical_rows() -> Rows:
    blank_dx = {f"dx{i}": "" for i in range(2, 11)}
    return [
        {
            "claim_id": f"C{i:04d}",
            "claim_line": "1",
            "claim_status": "paid",
            "member_id": f"M{1 + i % 5:03d}",
            "claim_type": "professional",
            "claim_start_date": "2024-03-04",
            "claim_end_date": "2024-03-04",
            "admission_date": "",
            "discharge_date": "",
            "discharge_status": "",
            "place_of_service": "02",
            "bill_type": "",
            "revenue_code": "0450",
            "hcpcs": "99213",
            "drg": "",
            "dx1": "E119",
            **blank_dx,
            "facility_npi": "",
            "rendering_npi": "1234567890",
            "in_network": "true",
            "charge_amount": "100.00",
            "allowed_amount": "80.50",
            "paid_amount": "70.25",
            "paid_date": "2024-04-01",
        }
        for i in range(1, 8)
    ]


def pharmacy_rows() -> Rows:
    return [
        {
            "claim_id": f"R{i:04d}",
            "claim_status": "paid",
            "member_id": f"M{1 + i % 5:03d}",
            "fill_date": "2024-05-06",
            "paid_date": "2024-05-06",
            "ndc": "00002123401",
            "drug_class": "statin",
            "quantity": "30",
            "days_supply": "30",
            "generic": "true",
            "channel": "retail",
            "allowed_amount": "12.00",
            "paid_amount": "10.00",
            "member_paid_amount": "2.00",
        }
        for i in range(1, 5)
    ]


def valid_tables() -> dict[str, Rows]:
    return {
        "eligibility": eligibility_rows(),
        "medical_claims": medical_rows(),
        "pharmacy_claims": pharmacy_rows(),
    }


def _arrow_value(text: str, ctype: ColumnType) -> object:
    if text == "":
        return None
    if ctype is ColumnType.DATE:
        return dt.date.fromisoformat(text)
    if ctype is ColumnType.MONEY:
        return Decimal(text)
    if ctype is ColumnType.BOOL:
        return text.lower() in ("true", "t", "1", "yes", "y")
    if ctype is ColumnType.INT:
        return int(text)
    if ctype is ColumnType.NUMBER:
        return float(text)
    return text


def write_table(
    directory: Path, name: str, rows: Rows, fmt: Format, *, as_text: frozenset[str] = frozenset()
) -> Path:
    """Write rows of text values; Parquet gets the schema's types except for `as_text` columns."""
    columns = list(rows[0])
    path = directory / f"{name}.{fmt}"
    if fmt == "csv":
        pd.DataFrame(rows, columns=columns, dtype="string").to_csv(path, index=False)
        return path
    table = TABLES_BY_NAME[name]
    arrays = []
    for col in columns:
        ctype = table.column(col).type
        if col in as_text:
            arrays.append(pa.array([r[col] for r in rows], type=pa.string()))
        else:
            values = [_arrow_value(r[col], ctype) for r in rows]
            arrays.append(pa.array(values, type=_ARROW_TYPES[ctype]))
    pq.write_table(pa.table(arrays, names=columns), path)
    return path


def write_directory(directory: Path, fmt: Format, tables: dict[str, Rows] | None = None) -> Path:
    for name, rows in (tables or valid_tables()).items():
        write_table(directory, name, rows, fmt)
    return directory


@pytest.fixture
def opened() -> Iterator[Callable[[Path], FileSource]]:
    sources: list[FileSource] = []

    def open_(directory: Path) -> FileSource:
        source = FileSource(directory, threads=1)
        sources.append(source)
        source.open()
        return source

    yield open_
    for s in sources:
        s.close()


def scalar(source: FileSource, sql: str) -> object:
    return source.execute_arrow(sql).column(0).to_pylist()[0]


def column_types(source: FileSource, table: str) -> dict[str, str]:
    described = source.execute_arrow(f"DESCRIBE {table}").to_pylist()
    return {row["column_name"]: row["column_type"] for row in described}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_valid_directory_opens_with_canonical_views(tmp_path: Path, fmt: Format) -> None:
    write_directory(tmp_path, fmt)
    source = FileSource(tmp_path, threads=1)
    problems = source.open()
    try:
        assert problems == []
        assert source.tables == {"eligibility", "medical_claims", "pharmacy_claims"}
        for name, rows in valid_tables().items():
            table = TABLES_BY_NAME[name]
            # Every schema column, optional ones absent from the file included, in its type.
            assert column_types(source, name) == {c.name: _CANONICAL[c.type] for c in table.columns}
            assert scalar(source, f"SELECT count(*) FROM {name}") == len(rows)
        assert scalar(source, "SELECT sum(allowed_amount) FROM medical_claims") == Decimal("563.50")
        open_ended = "SELECT count(*) FROM eligibility WHERE enrollment_end_date IS NULL"
        assert scalar(source, open_ended) == 1
        assert scalar(source, "SELECT max(birth_date) FROM eligibility") == dt.date(1980, 2, 3)
        no_version = "SELECT count(*) FROM medical_claims WHERE claim_version IS NULL"
        assert scalar(source, no_version) == 7
        assert source.data_quality() == {
            "eligibility.*.excluded": 0,
            "medical_claims.*.excluded": 0,
            "pharmacy_claims.*.excluded": 0,
        }
    finally:
        source.close()
    assert check_directory(tmp_path) == []


def test_codes_keep_leading_zeros_from_csv(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    source = opened(write_directory(tmp_path, "csv"))
    row = source.execute_arrow(
        "SELECT revenue_code, place_of_service, plan_code FROM medical_claims, eligibility LIMIT 1"
    ).to_pylist()[0]
    assert row == {"revenue_code": "0450", "place_of_service": "02", "plan_code": "010"}
    assert scalar(source, "SELECT min(ndc) FROM pharmacy_claims") == "00002123401"


def test_missing_required_column_is_located_error(tmp_path: Path) -> None:
    tables = valid_tables()
    for row in tables["medical_claims"]:
        del row["allowed_amount"]
    write_directory(tmp_path, "csv", tables)
    problems = check_directory(tmp_path)
    assert problems == [
        Problem(
            "medical_claims", "medical_claims.csv", "allowed_amount", "missing_column", 0, "error"
        )
    ]
    source = FileSource(tmp_path)
    with pytest.raises(DataSourceError) as raised:
        source.open()
    message = str(raised.value)
    assert "medical_claims.csv" in message and "allowed_amount" in message
    assert source.tables == frozenset()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_text_in_every_date_is_wrong_type(tmp_path: Path, fmt: Format) -> None:
    tables = valid_tables()
    for row in tables["eligibility"]:
        row["birth_date"] = f"born {SECRET}"
    write_directory(tmp_path, fmt, {k: v for k, v in tables.items() if k != "eligibility"})
    write_table(
        tmp_path, "eligibility", tables["eligibility"], fmt, as_text=frozenset({"birth_date"})
    )
    problems = check_directory(tmp_path)
    assert problems == [
        Problem("eligibility", f"eligibility.{fmt}", "birth_date", "wrong_type", 5, "error")
    ]
    with pytest.raises(DataSourceError, match="birth_date") as raised:
        FileSource(tmp_path).open()
    assert SECRET not in str(raised.value)


def test_parquet_storage_type_that_cannot_hold_a_date(tmp_path: Path) -> None:
    write_directory(tmp_path, "parquet")
    path = tmp_path / "medical_claims.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("claim_start_date")
    flags = pa.array([True] * table.num_rows, type=pa.bool_())
    pq.write_table(table.set_column(index, "claim_start_date", flags), path)
    assert check_directory(tmp_path) == [
        Problem(
            "medical_claims", "medical_claims.parquet", "claim_start_date", "wrong_type", 0, "error"
        )
    ]


def test_numeric_code_column_in_parquet_warns(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    write_directory(tmp_path, "parquet")
    path = tmp_path / "medical_claims.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("revenue_code")
    numbers = pa.array([450] * table.num_rows, type=pa.int32())
    pq.write_table(table.set_column(index, "revenue_code", numbers), path)
    source = opened(tmp_path)
    assert [(p.column, p.kind, p.severity) for p in check_directory(tmp_path)] == [
        ("revenue_code", "wrong_type", "warning")
    ]
    assert scalar(source, "SELECT min(revenue_code) FROM medical_claims") == "450"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bad_rows_are_counted_and_excluded(
    tmp_path: Path, fmt: Format, opened: Callable[[Path], FileSource]
) -> None:
    tables = valid_tables()
    eligibility = tables["eligibility"]
    bad = [dict(eligibility[0]) for _ in range(5)]
    for i, row in enumerate(bad):
        row["member_id"] = f"{SECRET}-{i}"
    bad[0]["birth_date"] = "2024-02-30"  # not a date
    bad[1]["birth_date"] = "03/02/1980"  # not ISO
    bad[2]["program"] = "FEHBP"  # outside the closed set
    bad[3]["sex"] = ""  # required value missing
    bad[4]["enrollment_end_date"] = "2023-12-31"  # ends before it starts
    eligibility.extend(bad)
    # A bad value in a nullable column excludes the row too; a blank one does not.
    tables["medical_claims"][0]["paid_date"] = "soon"
    tables["medical_claims"][0]["member_id"] = SECRET
    tables["medical_claims"][1]["paid_date"] = ""
    # Parquet holds the unparseable values in text columns (a typed column could not).
    as_text = {"eligibility": frozenset({"birth_date"}), "medical_claims": frozenset({"paid_date"})}
    for name, rows in tables.items():
        write_table(tmp_path, name, rows, fmt, as_text=as_text.get(name, frozenset()))

    source = opened(tmp_path)
    quality = source.data_quality()
    assert quality == {
        "eligibility.birth_date.invalid_value": 2,
        "eligibility.program.invalid_value": 1,
        "eligibility.sex.null_required": 1,
        "eligibility.enrollment_end_date.bad_range": 1,
        "eligibility.*.excluded": 5,
        "medical_claims.paid_date.invalid_value": 1,
        "medical_claims.*.excluded": 1,
        "pharmacy_claims.*.excluded": 0,
    }
    assert all(p.severity == "warning" for p in check_directory(tmp_path))
    assert scalar(source, "SELECT count(*) FROM eligibility") == 5
    assert scalar(source, "SELECT count(*) FROM medical_claims") == 6
    assert scalar(source, "SELECT count(*) FROM medical_claims WHERE paid_date IS NULL") == 1
    found = scalar(source, f"SELECT count(*) FROM eligibility WHERE member_id LIKE '{SECRET}%'")
    assert found == 0


def test_booleans_accept_common_spellings(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    tables = valid_tables()
    spellings = ["TRUE", "f", "1", "No", "Y"]
    for row, word in zip(tables["eligibility"], spellings, strict=True):
        row["medicare_primary"] = word
    tables["eligibility"].append({**tables["eligibility"][0], "medicare_primary": "maybe"})
    source = opened(write_directory(tmp_path, "csv", tables))
    flags = (
        source.execute_arrow("SELECT medicare_primary FROM eligibility ORDER BY member_id")
        .column(0)
        .to_pylist()
    )
    assert flags == [True, False, True, False, True]
    assert source.data_quality()["eligibility.medicare_primary.invalid_value"] == 1


def test_column_with_no_usable_value_is_error(tmp_path: Path) -> None:
    tables = valid_tables()
    for row in tables["pharmacy_claims"]:
        row["channel"] = "drive-through"
    for row in tables["medical_claims"]:
        row["claim_id"] = ""
    write_directory(tmp_path, "csv", tables)
    found = {(p.table, p.column, p.kind, p.rows, p.severity) for p in check_directory(tmp_path)}
    assert found == {
        ("pharmacy_claims", "channel", "invalid_value", 4, "error"),
        ("medical_claims", "claim_id", "null_required", 7, "error"),
    }


def test_optional_tables_may_be_absent_required_may_not(tmp_path: Path) -> None:
    write_directory(tmp_path, "csv")
    (tmp_path / "pharmacy_claims.csv").unlink()
    assert check_directory(tmp_path) == [
        Problem(
            "pharmacy_claims", "pharmacy_claims.{parquet,csv}", None, "missing_file", 0, "error"
        )
    ]
    with pytest.raises(DataSourceError, match="pharmacy_claims"):
        FileSource(tmp_path).open()


def test_optional_table_is_read_when_present(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    write_directory(tmp_path, "csv")
    rows = [
        {
            "npi": "0123456789",
            "entity_type": "1",
            "taxonomy": "",
            "state": "VA",
            "in_network": "yes",
        }
    ]
    write_table(tmp_path, "providers", rows, "csv")
    source = opened(tmp_path)
    assert source.tables == {"eligibility", "medical_claims", "pharmacy_claims", "providers"}
    assert source.execute_arrow("SELECT npi, in_network FROM providers").to_pylist() == [
        {"npi": "0123456789", "in_network": True}
    ]


def test_corrupt_parquet_is_an_error_not_a_crash(tmp_path: Path) -> None:
    write_directory(tmp_path, "parquet")
    (tmp_path / "providers.parquet").write_bytes(b"PAR1 not really parquet " + SECRET.encode())
    source = FileSource(tmp_path)
    problems = source.open()
    try:
        assert problems == [
            Problem("providers", "providers.parquet", None, "unreadable", 0, "error")
        ]
        assert "providers" not in source.tables  # optional: the rest still serves
    finally:
        source.close()
    (tmp_path / "eligibility.parquet").write_bytes(b"garbage")
    with pytest.raises(DataSourceError, match=r"eligibility\.parquet could not be read"):
        FileSource(tmp_path).open()


def test_both_formats_present_reads_parquet(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    write_directory(tmp_path, "parquet")
    write_table(tmp_path, "eligibility", eligibility_rows()[:2], "csv")
    source = opened(tmp_path)
    assert [(p.file, p.kind) for p in check_directory(tmp_path)] == [
        ("eligibility.parquet", "ambiguous_file")
    ]
    assert scalar(source, "SELECT count(*) FROM eligibility") == 5


def test_repeated_claim_keys_are_counted_not_excluded(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    tables = valid_tables()
    claims = tables["medical_claims"]
    claims.extend([dict(claims[0]), dict(claims[0]), dict(claims[1])])
    source = opened(write_directory(tmp_path, "parquet", tables))
    assert source.data_quality()["medical_claims.*.duplicate_key"] == 3
    assert scalar(source, "SELECT count(*) FROM medical_claims") == 10


@pytest.mark.parametrize("statistics", [True, False], ids=["footer", "no-footer-counts"])
def test_required_nulls_in_parquet_are_excluded_with_or_without_footer_counts(
    tmp_path: Path, opened: Callable[[Path], FileSource], statistics: bool
) -> None:
    """Parquet footers usually record each column's NULLs, and validation takes them from
    there (a clean required column is not read); a writer that records none leaves the count
    to the pass over the values. Either way the rows are counted and left out alike."""
    tables = valid_tables()
    for row in tables["medical_claims"][:2]:
        row["member_id"] = None
    write_directory(tmp_path, "parquet", tables)
    if not statistics:
        path = tmp_path / "medical_claims.parquet"
        pq.write_table(pq.read_table(path), path, write_statistics=False)
        footer = pq.ParquetFile(path).metadata.row_group(0).column(0)
        assert not footer.is_stats_set
    source = opened(tmp_path)
    quality = source.data_quality()
    assert quality["medical_claims.member_id.null_required"] == 2
    assert quality["medical_claims.*.excluded"] == 2
    assert scalar(source, "SELECT count(*) FROM medical_claims") == len(medical_rows()) - 2
    assert scalar(source, "SELECT count(*) FROM medical_claims WHERE member_id IS NULL") == 0


def test_snapshot_describes_files(tmp_path: Path) -> None:
    write_directory(tmp_path, "csv")
    source = FileSource(tmp_path)
    first = source.snapshot()
    assert len(first) == 64 and source.snapshot() == first
    path = tmp_path / "medical_claims.csv"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = source.snapshot()
    assert touched != first
    write_table(tmp_path, "rebates", [{"quarter": "2024Q1", "rebate_amount": "5.00"}], "csv")
    assert source.snapshot() != touched


def test_queries_from_several_threads(tmp_path: Path, opened: Callable[[Path], FileSource]) -> None:
    source = opened(write_directory(tmp_path, "parquet"))
    queries = ["SELECT count(*) FROM medical_claims", "SELECT count(*) FROM eligibility"] * 8
    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(lambda q: scalar(source, q), queries))
    assert counts == [7, 5] * 8


def test_query_failure_is_data_source_error_without_sql(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    source = opened(write_directory(tmp_path, "csv"))
    with pytest.raises(DataSourceError) as raised:
        source.execute_arrow(f"SELECT CAST('{SECRET}' AS INTEGER) FROM eligibility")
    assert SECRET not in str(raised.value) and raised.value.__cause__ is None
    closed = FileSource(tmp_path)
    with pytest.raises(DataSourceError):
        closed.execute_arrow("SELECT 1")


def test_no_data_value_in_any_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A planted member id in bad rows of every kind appears in no problem, error or log."""
    caplog.set_level(logging.DEBUG)
    tables = valid_tables()
    planted = {
        "birth_date": SECRET,
        "program": SECRET,
        "sex": SECRET,
        "medicare_primary": SECRET,
        "enrollment_end_date": SECRET,
        "member_id": SECRET,
    }
    for column, value in planted.items():
        tables["eligibility"].append(
            {**tables["eligibility"][0], column: value, "member_id": SECRET}
        )
    for column in ("allowed_amount", "claim_line", "claim_start_date", "in_network"):
        tables["medical_claims"].append(
            {**tables["medical_claims"][0], column: SECRET, "member_id": SECRET}
        )
    for row in tables["pharmacy_claims"]:  # every row bad: an error, so open() raises
        row["quantity"] = SECRET
    write_directory(tmp_path, "csv", tables)
    # A malformed line past the sniffer's sample: DuckDB's own error quotes that line.
    good = "1234567890,1,,VA,yes\n" * 30_000
    (tmp_path / "providers.csv").write_text(
        f"npi,entity_type,taxonomy,state,in_network\n{good}{SECRET},1,,VA,yes,extra\n"
    )
    problems = check_directory(tmp_path)
    kinds = {p.kind for p in problems}
    assert kinds == {"invalid_value", "wrong_type", "unreadable", "duplicate_key"}
    assert Problem("providers", "providers.csv", None, "unreadable", 0, "error") in problems
    texts = [p.describe() for p in problems] + [repr(p) for p in problems]
    with pytest.raises(DataSourceError) as raised:
        FileSource(tmp_path).open()
    texts += [str(raised.value), raised.value.detail]
    texts += [r.getMessage() for r in caplog.records]
    assert texts and not [t for t in texts if SECRET in t]


def view_filter(source: FileSource, table: str) -> str | None:
    """The WHERE of a table's view as DuckDB holds it (None without one)."""
    (text,) = (
        source.execute_arrow(f"SELECT sql FROM duckdb_views() WHERE view_name = '{table}'")
        .column(0)
        .to_pylist()
    )
    where = text.find(" WHERE ")
    return None if where < 0 else text[where:]


def test_views_filter_only_by_the_checks_a_row_fails(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    """A clean file's view is a plain projection (a query reads only its own columns); a file
    with a bad value in one column is filtered by that column's check alone."""
    tables = valid_tables()
    tables["medical_claims"][0]["claim_status"] = "pending"
    source = opened(write_directory(tmp_path, "parquet", tables))
    assert view_filter(source, "eligibility") is None
    assert view_filter(source, "pharmacy_claims") is None
    medical = view_filter(source, "medical_claims")
    assert medical is not None and "claim_status" in medical
    for other in ("member_id", "claim_type", "claim_start_date", "allowed_amount"):
        assert other not in medical
    assert scalar(source, "SELECT count(*) FROM medical_claims") == 6
    assert source.data_quality()["medical_claims.*.excluded"] == 1


def replace_table(directory: Path, name: str, rows: Rows, fmt: Format) -> None:
    """Rewrite a table's data file as a carrier would between rounds (its modification time
    moves on even on a file system with a coarse clock)."""
    before = (directory / f"{name}.{fmt}").stat().st_mtime_ns
    path = write_table(directory, name, rows, fmt)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_a_changed_file_is_validated_again_before_it_is_read(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    tables = valid_tables()
    source = opened(write_directory(tmp_path, "parquet", tables))
    assert view_filter(source, "medical_claims") is None
    assert scalar(source, "SELECT count(*) FROM medical_claims") == 7

    # Next month's file, with rows the first one did not have: a bad status, no member.
    claims = tables["medical_claims"]
    claims.append({**claims[0], "claim_id": "C0100", "claim_status": "pending"})
    claims.append({**claims[0], "claim_id": "C0101", "member_id": ""})
    claims.append({**claims[0], "claim_id": "C0102"})
    replace_table(tmp_path, "medical_claims", claims, "parquet")
    assert scalar(source, "SELECT count(*) FROM medical_claims") == 8
    assert scalar(source, "SELECT count(*) FROM medical_claims WHERE member_id IS NULL") == 0
    quality = source.data_quality()
    assert quality["medical_claims.*.excluded"] == 2
    assert quality["medical_claims.claim_status.invalid_value"] == 1


def test_a_file_made_unusable_is_not_read_until_it_is_fixed(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    tables = valid_tables()
    source = opened(write_directory(tmp_path, "csv", tables))
    broken = [{k: v for k, v in row.items() if k != "birth_date"} for row in tables["eligibility"]]
    replace_table(tmp_path, "eligibility", broken, "csv")
    for _ in range(2):  # refused again, without a view left over the unchecked file
        with pytest.raises(DataSourceError, match=r"missing_column|birth_date"):
            scalar(source, "SELECT count(*) FROM eligibility")
    assert source.tables == frozenset()
    replace_table(tmp_path, "eligibility", tables["eligibility"], "csv")
    assert scalar(source, "SELECT count(*) FROM eligibility") == 5
    assert "eligibility" in source.tables


def test_a_batch_during_which_a_file_changes_fails(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    tables = valid_tables()
    source = opened(write_directory(tmp_path, "parquet", tables))
    read: list[int] = []
    with (
        pytest.raises(DataSourceError, match="changed during the evaluation"),
        source.session() as session,
    ):
        read.append(
            session.execute_arrow("SELECT count(*) AS n FROM pharmacy_claims")["n"][0].as_py()
        )
        replace_table(tmp_path, "pharmacy_claims", tables["pharmacy_claims"][:2], "parquet")
    assert read == [4]
    # The next batch reads the new file, validated.
    assert scalar(source, "SELECT count(*) FROM pharmacy_claims") == 2


#: How a money column reaches the checks: CSV text; Parquet DECIMAL with the footers' statistics
#: or without; Parquet text.
_AMOUNT_STORAGE = pytest.mark.parametrize(
    "storage",
    [
        ("csv", True, False),
        ("parquet", True, False),
        ("parquet", False, False),
        ("parquet", True, True),
    ],
    ids=["csv", "parquet-footer", "parquet-no-statistics", "parquet-text-amounts"],
)


def _write_amounts(
    tmp_path: Path, tables: dict[str, Rows], storage: tuple[Format, bool, bool]
) -> None:
    """Write ``tables`` with their amounts stored as :data:`_AMOUNT_STORAGE` says."""
    fmt, statistics, as_text = storage
    for name, rows in tables.items():
        text = frozenset(c for c in rows[0] if as_text and c.endswith("_amount"))
        write_table(tmp_path, name, rows, fmt, as_text=text)
    if not statistics:
        path = tmp_path / "medical_claims.parquet"
        pq.write_table(pq.read_table(path), path, write_statistics=False)


@_AMOUNT_STORAGE
def test_the_largest_amount_bounds_the_sums_of_cents(
    tmp_path: Path, opened: Callable[[Path], FileSource], storage: tuple[Format, bool, bool]
) -> None:
    """Each table's largest amount (in cents, of any money column, negative ones by their
    magnitude) is known after opening: from the Parquet footers where they record it for a
    column stored as the canonical DECIMAL, else from the pass over the values (CSV, text,
    a writer without statistics), the same either way. With the rows it tells whether every
    sum of the cents fits 64 bits."""
    tables = valid_tables()
    tables["medical_claims"][0]["allowed_amount"] = "-98765.43"
    tables["medical_claims"][1]["copay_amount"] = "12.00"
    _write_amounts(tmp_path, tables, storage)
    source = opened(tmp_path)
    bounds = {c.table.name: c.money_bound_cents for c in source.checks}
    expected_medical = max(
        abs(int(Decimal(r[c]) * 100))
        for r in tables["medical_claims"]
        for c in r
        if c.endswith("_amount") and r[c]
    )
    assert expected_medical == 9876543
    assert bounds["medical_claims"] == expected_medical
    assert bounds["eligibility"] is None  # no money column
    assert source.money_sums_fit_int64


@_AMOUNT_STORAGE
def test_an_amount_too_large_for_cents_is_an_invalid_value_not_a_failing_query(
    tmp_path: Path, opened: Callable[[Path], FileSource], storage: tuple[Format, bool, bool]
) -> None:
    """An amount of 10^14 dollars or more fits the schema's DECIMAL(18,2) but not its cents in
    it, as every query computes them: such a value is an invalid value and its row is left
    out at opening (counted, the bound of the sums taken over the rest), so queries over the
    table run on the other rows instead of failing."""
    tables = valid_tables()
    tables["medical_claims"][0]["allowed_amount"] = "123456789012345.67"
    tables["medical_claims"][2]["paid_amount"] = "-99999999999999.99"  # the largest that fits
    _write_amounts(tmp_path, tables, storage)
    source = opened(tmp_path)
    [problem] = [p for c in source.checks if c.table.name == "medical_claims" for p in c.problems]
    assert (problem.column, problem.kind, problem.rows, problem.severity) == (
        "allowed_amount",
        "invalid_value",
        1,
        "warning",
    )
    assert "123456789012345" not in problem.describe()
    quality = source.data_quality()
    assert quality["medical_claims.allowed_amount.invalid_value"] == 1
    assert quality["medical_claims.*.excluded"] == 1
    kept = tables["medical_claims"][1:]
    cents = "SELECT SUM(CAST(allowed_amount * 100 AS BIGINT)) FROM medical_claims"
    assert scalar(source, cents) == sum(int(Decimal(r["allowed_amount"]) * 100) for r in kept)
    paid = "SELECT MIN(CAST(paid_amount * 100 AS BIGINT)) FROM medical_claims"
    assert scalar(source, paid) == -9999999999999999
    [check] = [c for c in source.checks if c.table.name == "medical_claims"]
    assert check.money_bound_cents == 9999999999999999


def test_carrier_node_check_locates_an_amount_too_large_for_cents(tmp_path: Path) -> None:
    """What a carrier's engineer sees of it: ``carrier-node check`` (a real process) reports
    the amount as an invalid value at its row, a warning (exit code 1), without the value."""
    tables = valid_tables()
    tables["medical_claims"][3]["allowed_amount"] = "123456789012345.67"
    write_directory(tmp_path, "parquet", tables)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from carrier_node.cli import main; main()",
            "check",
            "--data",
            str(tmp_path),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "123456789012345" not in done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert done.returncode == document["exit_code"] == 1, done.stderr
    found = [
        (f["kind"], f["table"], f["column"], f["rule"], f["rows"], f["first_rows"])
        for f in document["findings"]
    ]
    assert found == [("validation", "medical_claims", "allowed_amount", "invalid_value", 1, [4])]
