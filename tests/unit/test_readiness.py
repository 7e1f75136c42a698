"""`oversight serve --check`: a provisioned coordinator is ready; each thing a start would
miss (a carrier's result key, the operators, a matching key) is named, with exit status 2,
through the real command in a process of its own."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tomllib
from contextlib import closing
from pathlib import Path

import pytest
import tomli_w

from coordinator.provision import load_plan, provision
from fedoversight.signing import Signer

ROOT = Path(__file__).resolve().parents[2]
#: The ``oversight`` command, as its entry point runs it.
OVERSIGHT = (sys.executable, "-c", "from oversight_sim.cli import main; main()")

PLAN = """
coordinator_id = "agency"
coordinator_address = "127.0.0.1:50051"

[[carriers]]
id = "c001"

[[carriers]]
id = "c002"

[[operators]]
name = "alice"
role = "operator"
"""


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OVERSIGHT, "serve", "--config", str(config), "--check"],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )


@pytest.fixture
def coordinator_toml(tmp_path: Path) -> Path:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    done = provision(load_plan(plan), tmp_path / "kit")
    return done.coordinator_config


def edit(path: Path, **changes: object) -> None:
    data = tomllib.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(tomli_w.dumps(data))


def test_a_provisioned_coordinator_is_ready_and_nothing_is_created(
    coordinator_toml: Path,
) -> None:
    done = check(coordinator_toml)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ready to serve" in done.stdout
    assert "2 carrier(s), 2 with a result key" in done.stdout
    assert "will be created at the first start" in done.stdout
    assert not list(coordinator_toml.parent.glob("*.sqlite3"))  # a check creates nothing


def test_a_carrier_without_its_result_key_is_named(coordinator_toml: Path) -> None:
    keys = tomllib.loads(coordinator_toml.read_text())["result_keys_dir"]
    (coordinator_toml.parent / keys / "c002.pub").unlink()
    done = check(coordinator_toml)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "1 carrier(s) without a result-signing key" in done.stdout
    assert "c002" in done.stdout
    assert "not ready to serve" in done.stdout


def test_no_operators_and_a_mismatched_key_are_each_problems(coordinator_toml: Path) -> None:
    other = coordinator_toml.parent / "other.pub"
    other.write_bytes(Signer.generate().verifier.public_pem())
    edit(coordinator_toml, operators=None, operator_public_key=str(other))
    done = check(coordinator_toml)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no [[operators]]: the operator API would refuse every call" in done.stdout
    assert "operator_public_key is not the public half of operator_signing_key" in done.stdout
    assert "2 problem(s)" in done.stdout


def test_an_unreadable_config_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "coordinator.toml"
    bad.write_text("listen = 5\n")
    done = check(bad)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error" in done.stdout


def test_an_existing_store_is_opened_and_one_of_another_schema_refused(
    coordinator_toml: Path,
) -> None:
    from coordinator.store import RoundStore

    path = coordinator_toml.parent / tomllib.loads(coordinator_toml.read_text())["store_path"]
    RoundStore(path).close()
    done = check(coordinator_toml)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "opened, 0 carrier(s) recorded" in done.stdout
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE schema_version SET version = version + 1")
    done = check(coordinator_toml)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "round store: round store schema version 2 is not 1" in done.stdout


def test_the_schedule_is_checked_and_needs_the_signing_key(coordinator_toml: Path) -> None:
    schedule = coordinator_toml.parent / "schedule.toml"
    schedule.write_text(
        '[[suite]]\nname = "monthly"\n[[suite.query]]\nmetric = "cost.pmpm"\ngroup_by = ["month"]\n'
    )
    edit(coordinator_toml, schedule="schedule.toml")
    done = check(coordinator_toml)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "schedule schedule.toml: 1 suite(s) (monthly)" in done.stdout
    edit(coordinator_toml, operator_signing_key=None)
    done = check(coordinator_toml)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "a schedule needs operator_signing_key" in done.stdout
    schedule.write_text('[[suite]]\nname = "monthly"\n[[suite.query]]\nmetric = "cost.none"\n')
    done = check(coordinator_toml)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "suite[0].query[0]: cost.none: unknown metric" in done.stdout
