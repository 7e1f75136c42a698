"""Scenarios (their TOML form and validation) and what loading the testing plugin costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedoversight.errors import ConfigError
from oversight_sim.carrier_sets import skewed_sizes
from oversight_sim.scenario import Scenario, load_scenario, scenario_from

ROOT = Path(__file__).resolve().parents[2]


def test_a_scenario_file_is_read_with_paths_from_its_directory(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text("min_cell_size = 15\n", encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text(
        """
name = "two"
carriers = 2
members = 600
policy = "policy.toml"

[node_settings.c002]
control_totals_file = "totals.toml"
engine_threads = 2

[[plant]]
kind = "dominant_claimant"
carrier = "c002"

[[faults]]
carrier = "c001"
action = "slow"
seconds = 1.5
moment = "before"
""",
        encoding="utf-8",
    )
    scenario = load_scenario(path)
    assert scenario.name == "two" and scenario.carrier_count == 2
    assert scenario.policy == tmp_path / "policy.toml"
    assert scenario.node_settings["c002"] == {
        "control_totals_file": tmp_path / "totals.toml",
        "engine_threads": 2,
    }
    (plant,) = scenario.plant
    assert (plant.where, plant.size, plant.dollars) == ("ND", 15, 2_000_000.0)
    (fault,) = scenario.faults
    assert (fault.action, fault.round, fault.moment, fault.seconds) == ("slow", 1, "before", 1.5)


@pytest.mark.parametrize(
    "settings",
    [
        {"carriers": 2, "colour": "blue"},  # an unknown key
        {"faults": [{"carrier": "c001", "action": "slow"}]},  # slow without seconds
        {"faults": [{"carrier": "c001", "action": "explode"}]},
        {"datasets": 4, "sizes": [100, 100]},
        {"plant": [{"kind": "rare_cell"}], "file_format": "csv"},
        {"node_processes": 2, "faults": [{"carrier": "c001", "action": "kill"}]},
        {"sizes": [100, 10]},  # a carrier below the synthetic minimum
    ],
)
def test_an_invalid_scenario_is_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        scenario_from(settings)


def test_a_scenario_file_that_does_not_parse_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("carriers = [", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_scenario(path)


def test_changes_keep_what_was_set_and_data_keys_follow_the_data() -> None:
    base = scenario_from({"carriers": 4, "members": 2000, "secure": False})
    changed = base.with_changes(deadline_seconds=10, policy={"min_cell_size": 20})
    assert (changed.carriers, changed.secure, changed.deadline_seconds) == (4, False, 10)
    # Policies and faults do not change the carriers' files; sizes and seeds do.
    assert changed.data_key() == base.data_key()
    assert base.with_changes(seed=8).data_key() != base.data_key()
    assert Scenario().carrier_count == 3 and not Scenario().canned


@pytest.mark.parametrize(("members", "carriers", "skew"), [(3000, 5, 1.0), (900, 30, 0.0)])
def test_skewed_sizes_add_up_and_fall_with_rank(members: int, carriers: int, skew: float) -> None:
    sizes = skewed_sizes(members, carriers, skew)
    assert sum(sizes) == members and len(sizes) == carriers and min(sizes) >= 30
    assert sizes == sorted(sizes, reverse=True)
    if skew == 0:
        assert max(sizes) - min(sizes) <= 1


def test_loading_the_plugin_imports_neither_side_nor_the_simulator() -> None:
    """A session that does not use the fixtures pays only for the plugin module."""
    code = (
        "import sys, fedoversight.testing, fedoversight.testing.plugin\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in"
        " ('coordinator', 'carrier_node', 'oversight_sim', 'grpc', 'duckdb', 'pandas')]\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
