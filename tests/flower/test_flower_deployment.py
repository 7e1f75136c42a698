"""One round through Flower's deployment runtime on loopback: flower-superlink and two
flower-supernode processes, the bundle submitted with flwr run, the shim answering from each
carrier's node.toml (scripts/flower_loopback.py, bounded in time; every process it started is
stopped)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_round_through_superlink_and_supernodes(tmp_path: Path) -> None:
    work = tmp_path / "loopback"
    done = subprocess.run(
        [sys.executable, "scripts/flower_loopback.py", "--work", str(work), "--timeout", "200"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=260,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert ": complete in " in done.stdout
    assert done.stdout.count(": answered") == 2
    written = json.loads((work / "round.json").read_text(encoding="utf-8"))
    assert written["round"]["state"] == "complete"
    assert written["round"]["carriers_answered"] == 2
    assert any(t["scope"] == "program" for t in written["tables"])
