"""Generated documentation agrees with the code it is generated from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fedoversight.schema import TABLES

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
