"""``oversight demo``, as the README's first command runs it (at a small size)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path


def test_the_demo_runs_end_to_end_and_reports_what_was_withheld(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from oversight_sim.cli import main; main()",
            "demo",
            "--carriers",
            "5",
            "--members",
            "3000",
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "5/5 carriers answered" in done.stdout
    assert "carrier cells with a value withheld by disclosure control" in done.stdout
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    scopes = {r["scope"] for r in rows}
    assert scopes == {"program", "c001", "c002", "c003", "c004", "c005"}
    metrics = {r["metric"] for r in rows}
    assert metrics == {"enrollment.member_months", "cost.pmpm", "cost.pmpm_by_service_category"}
    assert (out / "results.json").stat().st_size > 0


SCENARIO = """
name = "three carriers, one killed in round 1, late claims after it"
carriers = 3
members = 1500
seed = 4
deadline_seconds = 30

[[plant]]
kind = "late_claims"
carrier = "c001"

[[faults]]
carrier = "c003"
action = "kill"
round = 1
"""


def test_the_demo_runs_a_scenario_file_with_its_faults_and_refresh(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from oversight_sim.cli import main; main()",
            "demo",
            "--scenario",
            str(scenario),
            "--metrics",
            "enrollment.member_months",
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Two rounds (the late claims arrive after the first): c003 is killed in the first.
    assert "2/3 carriers answered" in done.stdout
    assert done.stdout.count("carriers answered") == 2
    assert (out / "carriers" / "c001.after-round-1" / "medical_claims.parquet").is_file()
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["scope"] for r in rows} == {"program", "c001", "c002"}
