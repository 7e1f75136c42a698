"""Project hygiene that CI enforces through the test suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_generated_wire_code_matches_protos() -> None:
    done = run(sys.executable, "scripts/gen_protos.py", "--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_contracts_hold() -> None:
    """The contracts of pyproject.toml: the two sides never import each other, the shared
    package neither side, the carrier node's parts only those below them."""
    tool = shutil.which("lint-imports")
    if tool is None:
        pytest.fail("lint-imports missing: install the project with its dev extra")
    done = run(tool)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broken" not in done.stdout.lower() or "0 broken" in done.stdout.lower()


def test_lint_is_clean() -> None:
    tool = shutil.which("ruff")
    if tool is None:
        pytest.fail("ruff missing: install the project with its dev extra")
    done = run(tool, "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_code_is_formatted() -> None:
    tool = shutil.which("ruff")
    if tool is None:
        pytest.fail("ruff missing: install the project with its dev extra")
    done = run(tool, "format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_types_check_strictly() -> None:
    """mypy in strict mode over every package (configured in pyproject.toml)."""
    done = run(sys.executable, "-m", "mypy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout


def test_readme_metric_table_is_generated_from_the_catalogue() -> None:
    done = run(sys.executable, "scripts/gen_readme.py", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
