"""``carrier-node policy show`` and the errors of a policy or node config, through the real
command in a process of its own: a readable summary, and one line per wrong key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from carrier_node.policy import Policy, _prefix_ranges


def carrier_node(*args: str, columns: int = 160) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": str(columns)}
    done = subprocess.run(
        [sys.executable, "-c", "from carrier_node.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


#: What a Python repr looks like in text meant for people.
REPRS = (
    re.compile(r"\('[^']*',"),  # a tuple of strings
    re.compile(r"<[A-Za-z]+\.[A-Z_]+: "),  # an enum member
    re.compile(r"\b[A-Z][A-Za-z]+\("),  # a model or dataclass
    re.compile(r"\bNone\b|\bTrue\b|\bFalse\b"),
)


def test_policy_show_is_a_readable_summary(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'min_cell_size = 15\nrelease_mode = "manual"\nmetrics = ["cost.pmpm", "ops.data_quality"]\n'
        'dimensions = ["month", "state"]\n\n[perturbation]\np_percent = 12.0\n',
        encoding="utf-8",
    )
    code, out = carrier_node("policy", "show", "--policy", str(policy))
    assert code == 0, out
    for pattern in REPRS:
        assert not pattern.search(out), (pattern.pattern, out)
    for section in ("What the node answers", "Cell sizes", "Protection of released values"):
        assert section in out
    assert "15 members (program floor 11)" in out
    assert "manual: a person approves each result" in out
    assert "month, state" in out
    assert "2 named: cost.pmpm, ops.data_quality" in out
    assert "diagnoses F10–F19" in out  # ten prefixes read as one range
    assert "move by 12% to 18% of their largest member contribution" in out
    assert re.search(r"ops\s+data_quality v1, data_quality v2", out), out
    assert "cost.member_cost_share_pmpm" not in out  # not answered


def test_the_defaults_are_shown_when_no_policy_is_configured() -> None:
    code, out = carrier_node("policy", "show")
    assert code == 0, out
    assert "none configured: the defaults" in out
    assert f"digest {Policy().digest}" in out
    assert "all 23 metrics of the catalogue" in out


def test_a_policy_error_is_one_line_per_key_without_links(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'min_cell_size = 5\nrelease_mode = "automatic"\ncolour = "blue"\n\n'
        '[perturbation]\np_percent = "ten"\n\n'
        '[[sensitive_groups]]\nname = "x"\nmin_cell_size = 3\n',
        encoding="utf-8",
    )
    code, out = carrier_node("policy", "show", "--policy", str(policy), columns=60)
    assert code == 2, out  # one line each, however narrow the terminal
    assert "http" not in out and "pydantic" not in out and "type=" not in out
    lines = out.splitlines()
    assert lines[0] == f"error: invalid policy in {policy}:"
    assert sorted(line.strip() for line in lines[1:]) == [
        "colour: unknown key",
        "min_cell_size: min_cell_size may not be below the program floor 11",
        "perturbation.p_percent: Input should be a valid number, unable to parse string as a"
        " number",
        "release_mode: Input should be 'auto' or 'manual'",
        "sensitive_groups[0].min_cell_size: min_cell_size may not be below the program floor 11",
    ]


def test_a_node_config_error_names_its_keys(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'carrier_id = "C 1"\ncoordinator = "x:1"\ninsecure = true\ndata_dir = "d"\nbogus = 1\n'
        '[warehouse]\ndbname = "x"\nport = "abc"\n',
        encoding="utf-8",
    )
    code, out = carrier_node("policy", "show", "--config", str(config))
    assert code == 2, out
    assert "http" not in out
    lines = [line.strip() for line in out.splitlines()[1:]]
    assert "carrier_id: carrier_id must be lowercase letters, digits, '-' or '_'" in lines
    assert (
        "warehouse.port: Input should be a valid integer, unable to parse string as an"
        in " ".join(lines)
    )
    assert "bogus: unknown key" in lines


def test_prefix_runs_read_as_ranges() -> None:
    assert _prefix_ranges(("F10", "F11", "F12", "B20", "Z21", "Z22")) == "F10–F12, B20, Z21–Z22"
    assert _prefix_ranges(("F9", "F10")) == "F9, F10"
    assert _prefix_ranges(()) == ""
