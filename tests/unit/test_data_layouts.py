"""How a node reads a carrier's tables: one file, a directory of files or Hive-style partition
folders; Parquet, CSV and compressed CSV; CSV encodings; and where each row came from."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import zstandard

from carrier_node.data.files import FileSource
from carrier_node.data.validation import (
    FILE_COLUMN,
    ROW_COLUMN,
    CsvEncoding,
    Problem,
    TableCheck,
    check_directory,
    check_tables,
    raw_scan,
)
from fedoversight.errors import DataSourceError
from tests.plausibility_kit import clean_extract
from tests.unit.test_datasource import (
    SECRET,
    Format,
    Rows,
    opened,
    scalar,
    valid_tables,
    write_directory,
    write_table,
)

__all__ = ["opened"]  # the fixture, shared with test_datasource


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


def flat(directory: Path, name: str, parts: list[Rows], fmt: Format) -> None:
    """Write a table as files ``part-N`` side by side in its directory."""
    (directory / f"{name}.{fmt}").unlink(missing_ok=True)
    (directory / name).mkdir()
    for i, rows in enumerate(parts):
        written = write_table(directory, name, rows, fmt)
        written.rename(directory / name / f"part-{i}.{fmt}")


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


def test_an_open_source_locates_rows_of_its_checked_tables(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    tables = valid_tables()
    tables["pharmacy_claims"][2]["days_supply"] = "-5"
    source = opened(write_directory(tmp_path, "csv", tables))
    (check,) = [c for c in source.checks if c.table.name == "pharmacy_claims"]
    assert check.located is not None
    located = check.located.sql(dialect="duckdb")
    found = source.execute_arrow(
        f'SELECT "{FILE_COLUMN}" AS f, "{ROW_COLUMN}" AS r FROM ({located}) WHERE days_supply < 0'
    ).to_pylist()
    assert found == [{"f": "pharmacy_claims.csv", "r": 3}]


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


# --- layouts ----------------------------------------------------------------------------


def compress(path: Path, kind: str) -> Path:
    """Replace a file by its gzip or zstd compressed copy (``NAME.csv.gz``/``.csv.zst``)."""
    data = path.read_bytes()
    target = path.with_name(f"{path.name}.{kind}")
    if kind == "gz":
        target.write_bytes(gzip.compress(data))
    else:
        target.write_bytes(zstandard.ZstdCompressor().compress(data))
    path.unlink()
    return target


def summary(source: FileSource) -> dict[str, object]:
    """What a query sees of each table: its row count and a sum over its typed columns."""
    return {
        "eligibility": scalar(source, "SELECT count(*) FROM eligibility"),
        "medical": scalar(source, "SELECT sum(allowed_amount) FROM medical_claims"),
        "dates": scalar(source, "SELECT max(claim_start_date) FROM medical_claims"),
        "pharmacy": scalar(source, "SELECT sum(days_supply) FROM pharmacy_claims"),
        "ndc": scalar(source, "SELECT min(ndc) FROM pharmacy_claims"),
        "quality": source.data_quality(),
    }


@pytest.fixture
def plain_summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory = write_directory(tmp_path_factory.mktemp("plain"), "csv")
    with FileSource(directory, threads=1) as source:
        return summary(source)


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_compressed_csv_reads_as_the_plain_file(
    tmp_path: Path, kind: str, plain_summary: dict[str, object]
) -> None:
    write_directory(tmp_path, "csv")
    for name in ("eligibility", "medical_claims", "pharmacy_claims"):
        compress(tmp_path / f"{name}.csv", kind)
    assert check_directory(tmp_path) == []
    with FileSource(tmp_path, threads=1) as source:
        assert summary(source) == plain_summary


@pytest.mark.parametrize("hive", [False, True], ids=["flat", "hive"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_directory_of_files_reads_as_one_table(
    tmp_path: Path, fmt: Format, hive: bool, plain_summary: dict[str, object]
) -> None:
    write_directory(tmp_path, fmt)
    tables = valid_tables()
    claims, fills = tables["medical_claims"], tables["pharmacy_claims"]
    if hive:
        folders = {"year=2024/month=03": claims[:2], "year=2024/month=04": claims[2:]}
        partition(tmp_path, "medical_claims", folders, fmt)
    else:
        flat(tmp_path, "medical_claims", [claims[:2], claims[2:5], claims[5:]], fmt)
    (tmp_path / f"pharmacy_claims.{fmt}").unlink()
    for i, rows in enumerate((fills[:1], fills[1:3], fills[3:])):
        target = tmp_path / "pharmacy_claims" / f"part-{i}"
        target.mkdir(parents=True)
        write_table(target, "pharmacy_claims", rows, fmt)
    # What exporters leave beside their data is not read.
    (tmp_path / "medical_claims" / "_SUCCESS").write_text("")
    (tmp_path / "pharmacy_claims" / ".part-0.crc").write_text("not data")
    assert check_directory(tmp_path) == []
    with FileSource(tmp_path, threads=1) as source:
        assert summary(source) == plain_summary


def test_a_new_partition_file_is_validated_before_it_is_read(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    write_directory(tmp_path, "parquet")
    claims = valid_tables()["medical_claims"]
    partition(tmp_path, "medical_claims", {"month=03": claims}, "parquet")
    source = opened(tmp_path)
    assert scalar(source, "SELECT count(*) FROM medical_claims") == 7
    bad = [{**claims[0], "claim_id": "C0100", "claim_status": "pending"}]
    later = tmp_path / "medical_claims" / "month=04"
    later.mkdir()
    write_table(later, "medical_claims", [*bad, {**claims[0], "claim_id": "C0101"}], "parquet")
    assert scalar(source, "SELECT count(*) FROM medical_claims") == 8
    assert source.data_quality()["medical_claims.claim_status.invalid_value"] == 1


def test_files_that_differ_in_columns(tmp_path: Path, opened: Callable[[Path], FileSource]) -> None:
    """Read by column name: an optional column one file lacks is empty in its rows (a
    warning naming the file); a required column one file lacks makes the table unusable
    (an error naming the file)."""
    write_directory(tmp_path, "csv")
    claims = valid_tables()["medical_claims"]
    # The same columns in another order are matched by name too.
    reordered = [dict(reversed(list(row.items()))) for row in claims[:3]]
    for row in reordered:
        row["copay_amount"] = "20.00"
    partition(tmp_path, "medical_claims", {"a": reordered, "b": claims[3:]}, "csv")
    assert check_directory(tmp_path) == [
        Problem(
            "medical_claims",
            "medical_claims/b/medical_claims.csv",
            "copay_amount",
            "partial_column",
            0,
            "warning",
        )
    ]
    source = opened(tmp_path)
    counts = source.execute_arrow(
        "SELECT sum(copay_amount) AS copay, count(*) AS n, sum(allowed_amount) AS allowed,"
        " min(revenue_code) AS revenue FROM medical_claims"
    ).to_pylist()
    assert counts == [
        {"copay": Decimal("60.00"), "n": 7, "allowed": Decimal("563.50"), "revenue": "0450"}
    ]

    without_amount = [{k: v for k, v in row.items() if k != "allowed_amount"} for row in claims]
    write_table(tmp_path / "medical_claims" / "b", "medical_claims", without_amount[3:], "csv")
    problems = check_directory(tmp_path)
    assert (
        Problem(
            "medical_claims",
            "medical_claims/b/medical_claims.csv",
            "allowed_amount",
            "missing_column",
            0,
            "error",
        )
        in problems
    )
    with pytest.raises(DataSourceError, match=r"medical_claims/b/medical_claims\.csv"):
        FileSource(tmp_path).open()


def test_a_directory_mixing_formats_or_holding_nothing_is_an_error(tmp_path: Path) -> None:
    write_directory(tmp_path, "csv")
    claims = valid_tables()["medical_claims"]
    partition(tmp_path, "medical_claims", {"a": claims[:3]}, "csv")
    partition(tmp_path, "medical_claims", {"b": claims[3:]}, "parquet")
    (tmp_path / "pharmacy_claims.csv").unlink()
    (tmp_path / "pharmacy_claims").mkdir()
    (tmp_path / "pharmacy_claims" / "README.txt").write_text("fills")
    problems = check_directory(tmp_path)
    assert problems == [
        Problem("medical_claims", "medical_claims/", None, "mixed_formats", 0, "error"),
        Problem("pharmacy_claims", "pharmacy_claims/", None, "empty_directory", 0, "error"),
    ]
    assert "both Parquet and CSV" in problems[0].describe()
    assert ".csv.zst" in problems[1].describe()


def test_a_file_and_a_directory_of_one_table(tmp_path: Path) -> None:
    write_directory(tmp_path, "parquet")
    partition(tmp_path, "medical_claims", {"a": valid_tables()["medical_claims"]}, "csv")
    write_table(tmp_path, "medical_claims", valid_tables()["medical_claims"], "parquet")
    (problem,) = check_directory(tmp_path)
    assert (problem.file, problem.kind, problem.severity) == (
        "medical_claims.parquet",
        "ambiguous_file",
        "warning",
    )
    assert "reading medical_claims.parquet" in problem.describe()


# --- empty files and a missing directory -----------------------------------------------


@pytest.mark.parametrize("name", ["eligibility.csv", "eligibility.csv.gz", "eligibility.csv.zst"])
def test_an_empty_file_is_one_problem(tmp_path: Path, name: str) -> None:
    write_directory(tmp_path, "csv")
    (tmp_path / "eligibility.csv").unlink()
    path = tmp_path / name
    path.write_bytes(b"")
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(b""))
    elif name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(b""))
    problems = check_directory(tmp_path)
    assert problems == [Problem("eligibility", name, None, "empty_file", 0, "error")]
    assert problems[0].describe() == (
        f"eligibility: {name} is empty (not even a header row) — table unusable"
    )
    with pytest.raises(DataSourceError, match="empty"):
        FileSource(tmp_path).open()


def test_an_empty_partition_file_is_skipped_with_a_warning(
    tmp_path: Path, opened: Callable[[Path], FileSource]
) -> None:
    write_directory(tmp_path, "csv")
    claims = valid_tables()["medical_claims"]
    partition(tmp_path, "medical_claims", {"month=03": claims}, "csv")
    (tmp_path / "medical_claims" / "month=04").mkdir()
    (tmp_path / "medical_claims" / "month=04" / "medical_claims.csv.gz").write_bytes(
        gzip.compress(b"")
    )
    assert check_directory(tmp_path) == [
        Problem(
            "medical_claims",
            "medical_claims/month=04/medical_claims.csv.gz",
            None,
            "empty_file",
            0,
            "warning",
        )
    ]
    assert scalar(opened(tmp_path), "SELECT count(*) FROM medical_claims") == 7


def test_a_header_only_file_is_an_empty_table_not_a_problem(tmp_path: Path) -> None:
    write_directory(tmp_path, "csv")
    header = tmp_path / "providers.csv"
    header.write_text("npi,entity_type,taxonomy,state,in_network\n")
    assert check_directory(tmp_path) == []


def test_a_file_without_a_header_is_one_problem(tmp_path: Path) -> None:
    write_directory(tmp_path, "csv")
    path = tmp_path / "eligibility.csv"
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
    assert check_directory(tmp_path) == [
        Problem("eligibility", "eligibility.csv", None, "no_columns", 0, "error")
    ]


def test_a_missing_data_directory_is_one_error(tmp_path: Path) -> None:
    missing = tmp_path / "carrier-data"
    problems = check_directory(missing)
    assert problems == [Problem("*", "carrier-data", None, "missing_directory", 0, "error")]
    assert problems[0].describe() == "data directory 'carrier-data' does not exist"
    with pytest.raises(DataSourceError, match="does not exist") as raised:
        FileSource(missing).open()
    assert "missing" not in str(raised.value).replace("does not exist", "")
    (tmp_path / "a-file").write_text("")
    assert [p.kind for p in check_directory(tmp_path / "a-file")] == ["missing_directory"]


# --- encodings ------------------------------------------------------------------------

NAMES = ["Zoë", "José", "Ångström", "Müller", "Françoise"]


def accented(tmp_path: Path) -> Rows:
    """Eligibility rows with accented text in a code column, the rest as valid_tables'."""
    write_directory(tmp_path, "csv")
    rows = valid_tables()["eligibility"]
    for row, name in zip(rows, NAMES, strict=True):
        row["plan_code"] = name
    return rows


def write_encoded(path: Path, rows: Rows, encoding: str) -> None:
    text = pd.DataFrame(rows, dtype="string").to_csv(index=False)
    path.write_bytes(text.encode(encoding))


@pytest.mark.parametrize(
    ("encoding", "declared"),
    [
        ("latin-1", "auto"),
        ("latin-1", "latin-1"),
        ("utf-16", "auto"),
        ("utf-16", "utf-16"),
        ("utf-8", "auto"),
        ("utf-8-sig", "auto"),
    ],
)
def test_encodings_are_detected_or_declared(
    tmp_path: Path, encoding: str, declared: CsvEncoding
) -> None:
    rows = accented(tmp_path)
    # One encoding for every CSV file of the directory.
    for name, others in valid_tables().items():
        write_encoded(tmp_path / f"{name}.csv", rows if name == "eligibility" else others, encoding)
    assert check_directory(tmp_path, declared) == []
    source = FileSource(tmp_path, threads=1, csv_encoding=declared)
    with source:
        plans = source.execute_arrow("SELECT plan_code FROM eligibility ORDER BY member_id")
    assert plans.column(0).to_pylist() == NAMES


def test_a_value_past_the_sniffed_sample_decides_the_encoding(tmp_path: Path) -> None:
    """DuckDB sniffs the start of a file: one Latin-1 row far down is still found, and the
    file read as Latin-1, not failed at the first query that reads that column."""
    rows = accented(tmp_path)
    plain = [{**rows[0], "member_id": f"M{i:06d}", "plan_code": "010"} for i in range(40_000)]
    write_encoded(tmp_path / "eligibility.csv", [*plain, rows[1]], "latin-1")
    assert check_directory(tmp_path) == []
    with FileSource(tmp_path, threads=1) as source:
        found = scalar(source, "SELECT count(*) FROM eligibility WHERE plan_code = 'José'")
    assert found == 1
    (problem,) = check_directory(tmp_path, "utf-8")
    assert problem.kind == "wrong_encoding"


@pytest.mark.parametrize(
    ("encoding", "declared", "message"),
    [
        (
            "latin-1",
            "utf-8",
            "eligibility: eligibility.csv is not valid UTF-8; it reads as Latin-1: set"
            ' csv_encoding = "latin-1" in node.toml (or "auto") — table unusable',
        ),
        (
            "utf-16",
            "utf-8",
            "eligibility: eligibility.csv is not valid UTF-8; it reads as UTF-16: set"
            ' csv_encoding = "utf-16" in node.toml (or "auto") — table unusable',
        ),
        (
            "utf-16",
            "latin-1",
            "eligibility: eligibility.csv is not Latin-1 text; it reads as UTF-16: set"
            ' csv_encoding = "utf-16" in node.toml (or "auto") — table unusable',
        ),
        (
            "utf-8",
            "utf-16",
            "eligibility: eligibility.csv is not valid UTF-16; it reads as UTF-8: set"
            ' csv_encoding = "utf-8" in node.toml (or "auto") — table unusable',
        ),
        (
            "latin-1",
            "utf-16",
            "eligibility: eligibility.csv is not valid UTF-16; it reads as Latin-1: set"
            ' csv_encoding = "latin-1" in node.toml (or "auto") — table unusable',
        ),
    ],
)
def test_a_wrong_encoding_is_named_as_such(
    tmp_path: Path,
    encoding: str,
    declared: CsvEncoding,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = accented(tmp_path)
    rows[2]["member_id"] = f"{SECRET}é"
    write_encoded(tmp_path / "eligibility.csv", rows, encoding)
    # The other tables' files are in the declared encoding.
    for name, others in valid_tables().items():
        if name != "eligibility":
            write_encoded(tmp_path / f"{name}.csv", others, declared)
    problems = check_directory(tmp_path, declared)
    assert [p.describe() for p in problems] == [message]
    with pytest.raises(DataSourceError) as raised:
        FileSource(tmp_path, csv_encoding=declared).open()
    texts = [message, str(raised.value), *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if SECRET in t or "Exception" in t.replace("(", " ")]


def test_a_wrong_encoding_in_one_partition_names_that_file(tmp_path: Path) -> None:
    write_directory(tmp_path, "csv")
    claims = valid_tables()["medical_claims"]
    claims[5]["hcpcs"] = "9921é"
    partition(tmp_path, "medical_claims", {"a": claims[:4], "b": claims[4:]}, "csv")
    path = tmp_path / "medical_claims" / "b" / "medical_claims.csv"
    write_encoded(path, claims[4:], "latin-1")
    (problem,) = check_directory(tmp_path, "utf-8")
    assert (problem.file, problem.kind, problem.reads_as) == (
        "medical_claims/b/medical_claims.csv",
        "wrong_encoding",
        "latin-1",
    )


def test_check_names_a_wrong_encoding_on_the_command_line(tmp_path: Path) -> None:
    rows = accented(tmp_path)
    rows[0]["member_id"] = f"{SECRET}é"
    write_encoded(tmp_path / "eligibility.csv", rows, "latin-1")
    env = {**os.environ, "COLUMNS": "200"}
    cli = "from carrier_node.cli import main; main()"
    command = [sys.executable, "-c", cli, "check", "--data", str(tmp_path)]
    declared = subprocess.run(
        [*command, "--csv-encoding", "utf-8"], capture_output=True, text=True, env=env, timeout=120
    )
    assert declared.returncode == 2  # an error (docs/operations.md, "Checking the data")
    assert "eligibility.csv is not valid UTF-8" in declared.stdout
    assert 'csv_encoding = "latin-1"' in declared.stdout
    assert SECRET not in declared.stdout + declared.stderr
    assert "InvalidInputException" not in declared.stdout + declared.stderr
    detected = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert detected.returncode == 0, detected.stdout
    assert "no problems found" in detected.stdout

    missing = subprocess.run(
        [*command[:-1], str(tmp_path / "nowhere")], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2
    assert missing.stdout.count("does not exist") == 1
    assert "missing_file" not in missing.stdout


@pytest.mark.parametrize(
    ("sep", "newline"), [(";", "\r\n"), ("|", "\n"), ("\t", "\r\n"), (",", "\r\n")]
)
def test_csv_dialects_are_found_once_and_read_alike(
    tmp_path: Path, sep: str, newline: str, plain_summary: dict[str, object]
) -> None:
    """Delimiters, line ends, quoting and upper-case headers as exporters write them: the
    dialect is found when the files are checked, and queries read with it (not sniffing each
    file again)."""
    write_directory(tmp_path, "csv")
    for name, rows in valid_tables().items():
        frame = pd.DataFrame(rows, dtype="string").rename(columns=str.upper)
        text = frame.to_csv(index=False, sep=sep, lineterminator=newline, quoting=csv.QUOTE_ALL)
        if name == "medical_claims":
            (tmp_path / f"{name}.csv").unlink()
            half = len(rows) // 2
            folder = tmp_path / name
            folder.mkdir()
            for i, part in enumerate((frame[:half], frame[half:])):
                chunk = part.to_csv(index=False, sep=sep, lineterminator=newline)
                (folder / f"part-{i}.csv").write_text(chunk, newline="")
        else:
            (tmp_path / f"{name}.csv").write_text(text, newline="")
    assert check_directory(tmp_path) == []
    with FileSource(tmp_path, threads=1) as source:
        assert summary(source) == plain_summary
        views = source.execute_arrow("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal")
        found = dict(zip(*(views.column(i).to_pylist() for i in range(2)), strict=True))
        assert all(
            "auto_detect = false" in found[t].lower() for t in ("eligibility", "medical_claims")
        )


# --- row numbers of validation findings --------------------------------------------------------

#: Rows (0-based in the extract's eligibility file) planted with each problem, kept apart.
PLANTED_ELIGIBILITY: dict[tuple[str, str], list[int]] = {
    ("sex", "invalid_value"): [3, 40, 41, 97, 150, 222, 301],
    ("birth_date", "invalid_value"): [12, 260],
    ("member_id", "null_required"): [77],
    ("enrollment_end_date", "bad_range"): [5, 280],
}


def plant_validation_problems(directory: Path) -> pd.DataFrame:
    """Eligibility rows a validation excludes (a secret in a value that does not parse), and
    two medical claim lines repeated at the end of their file."""
    path = directory / "eligibility.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for (column, kind), rows in PLANTED_ELIGIBILITY.items():
        if kind == "invalid_value":
            frame.loc[rows, column] = "X" if column == "sex" else SECRET
        elif kind == "null_required":
            frame.loc[rows, column] = ""
        else:
            frame.loc[rows, "enrollment_start_date"] = "2026-01-31"
            frame.loc[rows, "enrollment_end_date"] = "2026-01-01"
    frame.to_csv(path, index=False)
    claims_path = directory / "medical_claims.csv"
    claims = pd.read_csv(claims_path, dtype=str, keep_default_na=False)
    pd.concat([claims, claims.iloc[[0, 5]]]).to_csv(claims_path, index=False)
    return frame


def check_json(directory: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cli = "from carrier_node.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", cli, "check", "--data", str(directory), "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert SECRET not in done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert isinstance(document, dict)
    # Errors come from plausibility rules the planted rows trip (validation's are warnings).
    assert done.returncode == document["exit_code"] == 2, done.stderr
    return document


def validation_rows(document: dict[str, object]) -> dict[tuple[str, str, str, str], object]:
    findings = document["findings"]
    assert isinstance(findings, list)
    return {
        (f["table"], f["file"], f["column"] or "", f["rule"]): (f["rows"], f["first_rows"])
        for f in findings
        if f["kind"] == "validation"
    }


def test_validation_findings_give_their_first_rows_in_a_csv_file(tmp_path: Path) -> None:
    directory = clean_extract(tmp_path)
    plant_validation_problems(directory)
    claim_lines = len(pd.read_csv(directory / "medical_claims.csv", dtype=str))
    got = validation_rows(check_json(directory))
    expected: dict[tuple[str, str, str, str], object] = {
        ("eligibility", "eligibility.csv", column, kind): (len(rows), [r + 1 for r in rows][:5])
        for (column, kind), rows in PLANTED_ELIGIBILITY.items()
    }
    # The repeats are the last two lines: the earlier of each key is not one.
    expected[("medical_claims", "medical_claims.csv", "", "duplicate_key")] = (
        2,
        [claim_lines - 1, claim_lines],
    )
    assert got == expected


def test_validation_findings_give_their_first_rows_in_parquet_partitions(
    tmp_path: Path,
) -> None:
    directory = clean_extract(tmp_path)
    frame = plant_validation_problems(directory)
    (directory / "eligibility.csv").unlink()
    # Parquet keeps an empty text as a value: a required value is empty when it is null.
    frame = frame.astype(object)
    frame.loc[PLANTED_ELIGIBILITY[("member_id", "null_required")], "member_id"] = None
    half = 200
    names = []
    for folder, rows in (
        ("year=2026/month=01", frame.iloc[:half]),
        ("year=2026/month=02", frame.iloc[half:]),
    ):
        target = directory / "eligibility" / folder
        target.mkdir(parents=True)
        rows.to_parquet(target / "part-0.parquet", index=False)
        names.append(f"eligibility/{folder}/part-0.parquet")
    got = {k: v for k, v in validation_rows(check_json(directory)).items() if k[0] == "eligibility"}
    expected: dict[tuple[str, str, str, str], object] = {}
    for (column, kind), rows in PLANTED_ELIGIBILITY.items():
        early = [r + 1 for r in rows if r < half]
        late = [r + 1 - half for r in rows if r >= half]
        for name, numbers in zip(names, (early, late), strict=True):
            if numbers:
                expected[("eligibility", name, column, kind)] = (len(numbers), numbers[:5])
    assert got == expected
