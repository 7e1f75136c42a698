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
