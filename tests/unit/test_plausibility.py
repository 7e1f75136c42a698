"""Plausibility rules: each fires on exactly the rows planted for it, a clean synthetic extract
gives none, and ``carrier-node check`` reports them (JSON shape, exit codes) without a value."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlglot import exp

from carrier_node.data.checks import check_files
from carrier_node.data.report import CheckReport, Finding
from fedoversight.plausibility import AS_OF as AS_OF_PLACEHOLDER
from fedoversight.plausibility import MEMBER_BIRTH_DATE, ROW, RULES
from fedoversight.schema import SCHEMA_VERSION, TABLES_BY_NAME
from tests.plausibility_kit import AS_OF, TABLES, Key, break_extract, clean_extract

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clean_extract(tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="module")
def broken(
    clean: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[Key, set[int]]]]:
    directory = tmp_path_factory.mktemp("broken") / "c001"
    shutil.copytree(clean, directory)
    yield directory, break_extract(directory)


def plausibility(report: CheckReport) -> dict[Key, tuple[int, tuple[int | str, ...]]]:
    return {
        (f.table, f.column or "", f.rule): (f.rows, f.first_rows)
        for f in report.findings
        if f.kind == "plausibility"
    }


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, importing this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from carrier_node.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )


def test_rules_are_declared_once_over_schema_columns() -> None:
    assert len({r.key for r in RULES}) == len(RULES)
    for rule in RULES:
        table = TABLES_BY_NAME[rule.table]
        table.column(rule.column)  # the reported column is the schema's
        assert rule.severity in ("error", "warning")
        assert rule.description and rule.schema_version == SCHEMA_VERSION
        derived = {name for name, _ in rule.derived}
        for column in rule.flags.find_all(exp.Column):
            if column.name not in derived | {ROW, MEMBER_BIRTH_DATE}:
                table.column(column.name)
        for dialect in ("duckdb", "postgres"):
            assert rule.flags.sql(dialect=dialect)
    # The rules the brief of a claims analyst starts from are all there.
    names = {r.name for r in RULES}
    for expected in (
        "negative_amount",
        "positive_amount_on_reversal",
        "date_in_future",
        "date_before_1900",
        "service_before_birth",
        "days_supply_out_of_range",
        "quantity_out_of_range",
        "duplicate_claim_line",
        "overlapping_spans",
        "admission_after_discharge",
        "age_over_120",
    ):
        assert expected in names
    assert any(AS_OF_PLACEHOLDER in r.flags.find_all(exp.Placeholder) for r in RULES)


def test_a_clean_synthetic_extract_has_no_finding(clean: Path) -> None:
    report = check_files(clean, AS_OF)
    assert report.findings == ()
    assert report.status == "clean" and report.exit_code == 0


def test_each_rule_flags_exactly_its_rows(broken: tuple[Path, dict[Key, set[int]]]) -> None:
    directory, expected = broken
    found = plausibility(check_files(directory, AS_OF))
    assert {r.key for r in RULES} <= set(found), "every rule fires"
    assert set(found) == set(expected), "no rule fires beyond its plants"
    for key, rows in expected.items():
        count, first = found[key]
        assert count == len(rows), key
        assert list(first) == sorted(rows)[:5], key


def test_findings_are_per_file_with_row_numbers_within_it(
    broken: tuple[Path, dict[Key, set[int]]], tmp_path: Path
) -> None:
    """A table of monthly partitions: a finding per file, rows numbered within each file."""
    directory, expected = broken
    parted = tmp_path / "c001"
    shutil.copytree(directory, parted)
    frame = pd.read_csv(parted / "pharmacy_claims.csv", dtype=str, keep_default_na=False)
    (parted / "pharmacy_claims.csv").unlink()
    half = len(frame) // 2
    for part, rows in (("month=01", frame.iloc[:half]), ("month=02", frame.iloc[half:])):
        (parted / "pharmacy_claims" / part).mkdir(parents=True)
        rows.to_csv(parted / "pharmacy_claims" / part / "part-0.csv", index=False)
    report = check_files(parted, AS_OF)
    by_file: dict[tuple[str, str, str], dict[str, tuple[int, tuple[int | str, ...]]]] = {}
    for f in report.findings:
        if f.kind == "plausibility" and f.table == "pharmacy_claims":
            by_file.setdefault((f.table, f.column or "", f.rule), {})[f.file or ""] = (
                f.rows,
                f.first_rows,
            )
    first, second = "pharmacy_claims/month=01/part-0.csv", "pharmacy_claims/month=02/part-0.csv"
    for key, rows in expected.items():
        if key[0] != "pharmacy_claims":
            continue
        early = sorted(r for r in rows if r <= half)
        late = sorted(r - half for r in rows if r > half)
        got = by_file[key]
        assert set(got) == {name for name, part in ((first, early), (second, late)) if part}
        if early:
            assert got[first] == (len(early), tuple(early[:5])), key
        if late:
            assert got[second] == (len(late), tuple(late[:5])), key


def test_a_rule_counts_every_row_and_lists_the_first_five(clean: Path, tmp_path: Path) -> None:
    directory = tmp_path / "c001"
    shutil.copytree(clean, directory)
    path = directory / "pharmacy_claims.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    paid = [i + 1 for i in frame.index[frame["claim_status"] == "paid"]]  # 1-based
    planted = paid[2:4] + paid[10:12] + paid[20:23]
    frame.loc[[r - 1 for r in planted], "days_supply"] = "-5"
    frame.to_csv(path, index=False)
    report = check_files(directory, AS_OF)
    assert plausibility(report) == {
        ("pharmacy_claims", "days_supply", "days_supply_out_of_range"): (7, tuple(planted[:5]))
    }
    (finding,) = report.findings
    assert finding.severity == "error" and finding.file == "pharmacy_claims.csv"
    assert f"first at {', '.join(map(str, planted[:5]))}, …" in finding.message
    assert report.exit_code == 2


def test_dates_are_checked_against_the_as_of_date(clean: Path) -> None:
    """The synthetic claims are paid into the following months: checked as of a day in
    January, those payments are in the future."""
    early = plausibility(check_files(clean, AS_OF.replace(year=2026, month=1, day=20)))
    assert ("medical_claims", "paid_date", "date_in_future") in early


def test_check_json_and_exit_codes_through_the_command_line(
    broken: tuple[Path, dict[Key, set[int]]], clean: Path, tmp_path: Path
) -> None:
    directory, expected = broken
    done = run_check("--data", str(directory), "--format", "json", "--as-of", AS_OF.isoformat())
    assert done.returncode == 2, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {
        "report",
        "report_version",
        "schema_version",
        "source",
        "as_of",
        "row_identity",
        "status",
        "exit_code",
        "counts",
        "findings",
    }
    assert document["status"] == "errors" and document["exit_code"] == 2
    assert document["source"] == {"kind": "files", "location": str(directory)}
    assert document["row_identity"] == "file_row" and document["as_of"] == AS_OF.isoformat()
    for finding in document["findings"]:
        assert set(finding) == {
            "kind",
            "severity",
            "table",
            "file",
            "column",
            "rule",
            "rows",
            "first_rows",
            "message",
            "detail",
        }
    got = {
        (f["table"], f["column"], f["rule"]): f["first_rows"]
        for f in document["findings"]
        if f["kind"] == "plausibility"
    }
    assert got == {k: sorted(v)[:5] for k, v in expected.items()}
    assert document["counts"]["error"] == sum(
        f["severity"] == "error" for f in document["findings"]
    )
    # Nothing read from the data: no member id, claim id, NPI or date of the extract.
    values: set[str] = set()
    for table in TABLES:
        frame = pd.read_csv(directory / f"{table}.csv", dtype=str, keep_default_na=False)
        for column in ("member_id", "claim_id", "subscriber_id", "rendering_npi", "ndc"):
            if column in frame:
                values.update(v for v in frame[column] if v)
    text = done.stdout + done.stderr
    assert not [v for v in values if v in text]
    # The report names the data directory, whose temporary path may hold "-5" (pytest-5).
    text = text.replace(json.dumps(str(directory)), "").replace(str(directory), "")
    assert "1899-12-31" not in text and "-5" not in text.replace("--", "")

    # Warnings only: exit 1; the text format says where.
    warned = tmp_path / "warned"
    shutil.copytree(clean, warned)
    path = warned / "pharmacy_claims.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = pd.concat([frame, frame.iloc[[4]]], ignore_index=True)
    frame.to_csv(path, index=False)
    done = run_check("--data", str(warned), "--as-of", AS_OF.isoformat())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "duplicate_fill" in done.stdout and str(len(frame)) in done.stdout

    done = run_check("--data", str(clean), "--format", "json", "--as-of", AS_OF.isoformat())
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["findings"] == []


def test_check_through_the_node_config(
    broken: tuple[Path, dict[Key, set[int]]], tmp_path: Path
) -> None:
    directory, expected = broken
    config = tmp_path / "node.toml"
    config.write_text(
        'carrier_id = "c001"\ncoordinator = "127.0.0.1:1"\ninsecure = true\n'
        f'data_dir = "{directory}"\n'
    )
    done = run_check("--config", str(config), "--format", "json", "--as-of", AS_OF.isoformat())
    assert done.returncode == 2, done.stderr
    rules = {(f["table"], f["column"], f["rule"]) for f in json.loads(done.stdout)["findings"]}
    assert set(expected) <= rules


@pytest.mark.parametrize(
    "args",
    [
        ("--as-of", "someday"),
        (),
        ("--data", ".", "--config", "node.toml"),
        ("--config", "missing-node.toml"),
    ],
)
def test_a_check_that_cannot_run_exits_3(args: tuple[str, ...], clean: Path) -> None:
    args = tuple(str(clean) if a == "." else a for a in args)
    if args and args[0] == "--as-of":
        args = ("--data", str(clean), *args)
    done = run_check(*args, "--format", "json")
    assert done.returncode == 3, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "not_checked"


def test_the_documented_json_shape_is_the_reports(clean: Path) -> None:
    """docs/operations.md's example of ``--format json`` has the report's fields."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## Checking the data", 1)[1]
    example = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    document = json.loads(json.dumps(check_files(clean, AS_OF).to_json()))
    assert set(example) == set(document)
    assert set(example["source"]) == set(document["source"])
    assert set(example["counts"]) == set(document["counts"])
    finding = next(iter(example["findings"]))
    real = Finding("plausibility", "error", "t", "f", "c", "r", 1, "m", (1,)).to_json()
    assert set(finding) == set(real)
    assert finding["rule"] in {r.name for r in RULES}


def test_a_repeat_in_a_later_file_is_the_repeat(clean: Path, tmp_path: Path) -> None:
    """Rows are in source order file by file: a fill repeated at the top of the second
    partition is the repeat, though its row number is smaller than the original's."""
    directory = tmp_path / "c001"
    shutil.copytree(clean, directory)
    frame = pd.read_csv(directory / "pharmacy_claims.csv", dtype=str, keep_default_na=False)
    (directory / "pharmacy_claims.csv").unlink()
    first, second = frame.iloc[:50], frame.iloc[50:]
    second = pd.concat([frame.iloc[[9]], second], ignore_index=True)  # row 10 of the first
    for name, part in (("2026-01.csv", first), ("2026-02.csv", second)):
        (directory / "pharmacy_claims").mkdir(exist_ok=True)
        part.to_csv(directory / "pharmacy_claims" / name, index=False)
    (finding,) = [f for f in check_files(directory, AS_OF).findings if f.rule == "duplicate_fill"]
    assert (finding.file, finding.rows, finding.first_rows) == (
        "pharmacy_claims/2026-02.csv",
        1,
        (1,),
    )
