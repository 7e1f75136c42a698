"""Generated documentation agrees with the code it is generated from."""

from __future__ import annotations

import csv
import datetime
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from carrier_node.data.checks import check_files
from carrier_node.data.validation import check_directory
from fedoversight.schema import TABLES, TABLES_BY_NAME, Table

ROOT = Path(__file__).resolve().parents[2]
DICTIONARY = ROOT / "docs" / "data-dictionary.md"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_data_dictionary_is_generated_from_the_schema() -> None:
    done = run(sys.executable, "scripts/gen_docs.py", "--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_table_and_column_is_described() -> None:
    text = DICTIONARY.read_text(encoding="utf-8")
    for table in TABLES:
        assert table.description, table.name
        assert f"\n## {table.name}\n" in text, table.name
        for column in table.columns:
            assert column.description, f"{table.name}.{column.name}"
            assert f"| `{column.name}` |" in text, f"{table.name}.{column.name}"


def test_code_lists_named_by_the_schema_exist() -> None:
    for table in TABLES:
        for column in table.columns:
            if column.code_list is not None:
                path = ROOT / "fedoversight" / "codelists" / column.code_list
                assert path.is_file(), f"{table.name}.{column.name}: {column.code_list}"


def write_examples(directory: Path, tables: tuple[Table, ...] = TABLES) -> Path:
    """Each table as a CSV file of one row: its columns' examples."""
    for table in tables:
        with (directory / f"{table.name}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([c.name for c in table.columns])
            writer.writerow([c.example for c in table.columns])
    return directory


def test_every_column_has_an_example_shown_in_the_dictionary() -> None:
    text = DICTIONARY.read_text(encoding="utf-8")
    for table in TABLES:
        for column in table.columns:
            assert column.example.strip(), f"{table.name}.{column.name}"
            assert column.example == column.example.strip(), f"{table.name}.{column.name}"
            assert f" | `{column.example}` | " in text, f"{table.name}.{column.name}"


def test_every_example_is_valid_as_the_node_validates_a_value(tmp_path: Path) -> None:
    """A row of examples passes the node's own validation (types parse, codes are in their
    set, required values present): not one problem, so no example is excluded or refused.
    (The schema declares no pattern or check digit; NPIs are checked below.)"""
    problems = check_directory(write_examples(tmp_path))
    assert [p.describe() for p in problems] == []
    # Nor does a plausibility rule find the examples, taken as one record, implausible.
    report = check_files(tmp_path, datetime.date(2026, 12, 31))
    assert [f.message for f in report.findings] == []
    for table in TABLES:
        for column in table.columns:
            if column.values is not None:
                assert column.example in column.values, f"{table.name}.{column.name}"


def test_a_wrong_example_would_be_found(tmp_path: Path) -> None:
    """The check above can fail: an example that does not parse, or outside its set, is a
    problem naming its column."""
    eligibility = TABLES_BY_NAME["eligibility"]
    wrong = {"birth_date": "1968-02-30", "sex": "X", "medicare_primary": "maybe"}
    columns = tuple(replace(c, example=wrong.get(c.name, c.example)) for c in eligibility.columns)
    write_examples(tmp_path, (replace(eligibility, columns=columns),))
    write_examples(tmp_path, tuple(t for t in TABLES if t is not eligibility))
    found = {(p.table, p.column) for p in check_directory(tmp_path)}
    assert found == {("eligibility", name) for name in wrong}


def test_examples_of_coded_columns_come_from_their_code_list() -> None:
    for table in TABLES:
        for column in table.columns:
            if column.code_list is None:
                continue
            path = ROOT / "fedoversight" / "codelists" / column.code_list
            with path.open(encoding="utf-8", newline="") as f:
                codes = {row[0] for row in csv.reader(f)}
            assert column.example in codes, f"{table.name}.{column.name}"


def luhn_valid_npi(npi: str) -> bool:
    """The NPI check digit: Luhn over the prefix 80840 and the ten digits."""
    digits = [int(d) for d in "80840" + npi]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if i % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


def test_example_npis_have_a_valid_check_digit() -> None:
    assert luhn_valid_npi("1234567893") and not luhn_valid_npi("1234567890")
    npis = [
        (t.name, c.name, c.example) for t in TABLES for c in t.columns if c.name.endswith("npi")
    ]
    assert len(npis) == 3
    for table, column, example in npis:
        assert len(example) == 10 and luhn_valid_npi(example), f"{table}.{column}"
