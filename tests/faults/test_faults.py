"""Faults in a federation of real processes: a coordinator and three carrier nodes, each its own
process, provisioned by ``oversight provision`` (mutual TLS, signed requests and results), on
synthetic data, driven through the operator API.

Every test checks that no result is lost or counted twice: each carrier's state in the round,
the signed results the coordinator stored for it (one for a carrier that answered, none for
one that did not), the program-wide sums equal to the sums of the carriers' values, and the
carriers' values equal to those of an undisturbed round of the same request (the node's noise
is a function of its secret and the cell, so the same request gets the same values).

One federation serves the module; each test leaves it running (a fixture restarts whatever a
test stopped), and on failure the tail of every process's log is printed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import pytest

from coordinator.combine import ScopedTable
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period
from tests.faults.procs import (
    CARRIER_NODE,
    REPO,
    Federation,
    Node,
    RoundView,
    child_env,
    remount,
    tmpfs,
    wait_until,
)

#: Three carriers of skewed sizes (c001 holds about 70% of the members): small enough to
#: write in seconds, large enough that a heavy request keeps c001 busy for seconds.
SYNTH = {"carriers": 3, "members": 6000, "seed": 5, "year": 2026, "months": 12}

TRIVIAL_PERIOD = Period.parse("2026-01")
TRIVIAL = [wire.make_query("enrollment.member_months")]

HEAVY_PERIOD = Period.parse("2026-01:2026-12")
HEAVY_BY = (D.MONTH, D.AGE_BAND, D.SEX, D.STATE)
#: About a second of evaluation at the largest carrier (0.7 s in one CI run), a fraction of
#: that at the smallest.
HEAVY = [wire.make_query("cost.pmpm", 0, HEAVY_BY)]
#: Several seconds at the largest carrier.
HEAVIER = [wire.make_query(m, 0, HEAVY_BY) for m in ("cost.pmpm", "util.office_visits")]
#: Well over ten seconds at the largest carrier.
HEAVIEST = [
    wire.make_query(m, 0, HEAVY_BY)
    for m in (
        "cost.pmpm",
        "cost.member_cost_share_pmpm",
        "util.office_visits",
        "util.ed_visits",
        "util.scripts",
        "ops.denial_rate",
    )
]

BIG = "c001"  # the largest carrier: the slowest to evaluate
SMALL = "c002"
SPARE = "c003"

DATA_SOURCE_REASON = "the carrier's data source could not answer"
REPLAYED_REASON = "the request was seen before"


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    from fedoversight.testing import SynthConfig, write_carriers

    root = tmp_path_factory.mktemp("faults")
    dirs = write_carriers(root / "data", SynthConfig(**SYNTH))  # type: ignore[arg-type]
    federation = Federation(root / "run", {d.name: d for d in dirs})
    try:
        federation.provision()
        federation.start()
        yield federation
    finally:
        federation.close()


@pytest.fixture(scope="module")
def baseline(fed: Federation) -> dict[str, dict[tuple[tuple[D, str], ...], int]]:
    """Each carrier's member months of the trivial round, undisturbed."""
    view = fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=30)
    assert view.state is RoundState.COMPLETE, view.carriers
    check_counted_once(view)
    assert view.outcome is not None
    return carrier_values(view.outcome.tables, "member_months")


@pytest.fixture(autouse=True)
def running(fed: Federation, request: pytest.FixtureRequest) -> Iterator[Federation]:
    """Every process up and connected before the test; the logs printed when it failed."""
    fed.ensure_running()
    yield fed
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(fed.report())


# --- checks ---------------------------------------------------------------------------------


Key = tuple[tuple[D, str], ...]


def carrier_values(tables: Sequence[ScopedTable], stat: str) -> dict[str, dict[Key, int]]:
    """scope -> cell key (without the carrier) -> the statistic's integer value."""
    out: dict[str, dict[Key, int]] = {}
    for table in tables:
        for cell in table.cells:
            key = tuple((d, v) for d, v in cell.key if d is not D.CARRIER)
            for s in cell.stats:
                if s.name == stat and isinstance(s.value, int):
                    out.setdefault(table.scope, {})[key] = s.value
    return out


def check_counted_once(view: RoundView) -> None:
    """Nothing lost, nothing counted twice: one stored signed result per carrier that
    answered and none for the others, no late one; with the tables, one table per query for
    each carrier that answered (none for the others) and every program sum the sum of the
    carriers' values."""
    answered = {c for c, v in view.carriers.items() if v.state is CarrierRoundState.ANSWERED}
    for carrier_id, v in view.carriers.items():
        assert v.receipts == (1 if carrier_id in answered else 0), (carrier_id, v)
    assert not view.late, view.late
    if view.outcome is None:
        return
    assert view.outcome.answered == len(answered)
    assert view.outcome.state is view.state
    blocks: list[list[ScopedTable]] = []
    for table in view.outcome.tables:
        if table.scope == "program":
            blocks.append([])
        blocks[-1].append(table)
    assert blocks, "no tables"
    for block in blocks:
        scopes = [t.scope for t in block[1:]]
        assert sorted(scopes) == sorted(answered), (block[0].metric, scopes, answered)
        program = block[0]
        by_key: dict[tuple[Key, str], int] = {}
        for table in block[1:]:
            for cell in table.cells:
                key = tuple((d, v) for d, v in cell.key if d is not D.CARRIER)
                for s in cell.stats:
                    if isinstance(s.value, int):
                        by_key[(key, s.name)] = by_key.get((key, s.name), 0) + s.value
        checked = 0
        for cell in program.cells:
            key = tuple((d, v) for d, v in cell.key if d is not D.CARRIER)
            for s in cell.stats:
                if isinstance(s.value, int):
                    assert s.value == by_key.get((key, s.name), 0), (program.metric, key, s.name)
                    checked += 1
        assert checked or not answered, f"no program value of {program.metric} to check"


def check_trivial(view: RoundView, baseline: dict[str, dict[Key, int]]) -> None:
    """The trivial round: complete, counted once, every carrier's value as undisturbed."""
    assert view.state is RoundState.COMPLETE, view.carriers
    check_counted_once(view)
    assert view.outcome is not None
    values = carrier_values(view.outcome.tables, "member_months")
    for carrier_id in view.carriers:
        assert values[carrier_id] == baseline[carrier_id], carrier_id
    assert values["program"] == baseline["program"]


def wait_audit(node: Node, round_id: str, kind: str, timeout: float) -> None:
    wait_until(
        lambda: kind in node.audit_kinds(round_id),
        timeout,
        f"{node.carrier_id} to log '{kind}' for {round_id}",
        step=0.05,
    )


def released(node: Node, round_id: str) -> int:
    return node.audit_kinds(round_id).count("released")


def acknowledged(node: Node, request_id: str) -> bool:
    """Whether the node has forgotten its answer to ``request_id`` (the coordinator
    acknowledged it)."""
    return request_id not in node.outbox()


def heavy_round(fed: Federation, queries: list[QuerySpec], deadline: int = 30) -> str:
    return fed.create_round(HEAVY_PERIOD, queries, deadline=deadline)


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("restart", ["at once", "after the round"])
def test_a_node_killed_mid_round_is_marked_and_nothing_counts_twice(
    fed: Federation, baseline: dict[str, dict[Key, int]], restart: str
) -> None:
    node = fed.nodes[BIG]
    round_id = heavy_round(fed, HEAVY)
    wait_audit(node, round_id, "admitted", 30)
    node.proc.kill()
    if released(node, round_id):
        pytest.fail(f"{BIG} signed before it was killed: the request was not heavy enough")
    if restart == "at once":
        # Back within the coordinator's grace for a dropped carrier: it is asked again, and
        # the request it admitted but never answered is evaluated again (not a replay).
        fed.start_node(BIG)
        view = fed.wait_round(round_id, 120)
        assert view.state is RoundState.COMPLETE, view.carriers
        assert view.carriers[BIG].state is CarrierRoundState.ANSWERED
        expected_releases = 1
    else:
        view = fed.wait_round(round_id, 120)
        fed.start_node(BIG)
        assert view.state is RoundState.PARTIAL, view.carriers
        # It signed nothing before the kill: what the round says of it is final and clear.
        big = view.carriers[BIG]
        assert big.state in (
            CarrierRoundState.DISCONNECTED,
            CarrierRoundState.TIMED_OUT,
            CarrierRoundState.REFUSED,
        ), big
        if big.state is CarrierRoundState.REFUSED:
            assert big.message, "a refusal names its reason"
        expected_releases = 0
    for carrier_id in (SMALL, SPARE):
        assert view.carriers[carrier_id].state is CarrierRoundState.ANSWERED
    check_counted_once(view)
    assert released(node, round_id) == expected_releases
    # Nothing of the killed evaluation arrives later, and the node answers the next round.
    fed.wait_connected([BIG])
    time.sleep(1.0)
    again = fed.view(round_id, tables=False)
    assert again.states() == view.states()
    check_counted_once(again)
    assert released(node, round_id) == expected_releases
    check_trivial(fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=30), baseline)
    assert node.outbox() == []
    # The kill broke nothing of the node's hash-chained audit log.
    done = subprocess.run(
        [*CARRIER_NODE, "audit", "verify", "--config", str(node.config)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Exit 3: the chain and head agree, but without the coordinator's anchors the command
    # says it cannot prove the tail complete (tests/faults/test_audit_tamper.py has those).
    assert done.returncode == 3, done.stdout + done.stderr
    assert "chain and head agree" in done.stdout


def test_a_coordinator_killed_mid_round_resumes_and_takes_each_result_once(
    fed: Federation, baseline: dict[str, dict[Key, int]]
) -> None:
    assert fed.coordinator is not None
    round_id = heavy_round(fed, HEAVY, deadline=60)
    request_id = f"{round_id}.q"
    # Killed once the smallest carrier's result is stored and while the largest evaluates.
    wait_until(
        lambda: fed.summary(round_id).carriers_answered >= 1,
        60,
        "a first answer",
        step=0.1,
    )
    fed.coordinator.kill()
    before = {c: released(n, round_id) for c, n in fed.nodes.items()}
    assert any(before.values()), before  # delivered before the kill
    if before[BIG]:
        pytest.fail(f"{BIG} signed before the coordinator was killed: not heavy enough")
    # The nodes go on: each signs its result once and keeps it for the next connection.
    for node in fed.nodes.values():
        wait_audit(node, round_id, "released", 60)
    for carrier_id, node in fed.nodes.items():
        assert released(node, round_id) == 1, carrier_id
    # Kept once its release is logged (the outbox is written just after the audit entry).
    wait_until(lambda: request_id in fed.nodes[BIG].outbox(), 15, f"{BIG}'s outbox", step=0.05)
    # The coordinator is started again on its store; nodes reconnect and deliver.
    fed.start_coordinator()
    fed.wait_connected(fed.carrier_ids)
    view = fed.wait_round(round_id, 60)
    assert view.state is RoundState.COMPLETE, view.carriers
    check_counted_once(view)
    for carrier_id, node in fed.nodes.items():
        assert released(node, round_id) == 1, carrier_id  # signed once, sent again at most
        wait_until(partial(acknowledged, node, request_id), 15, f"{carrier_id}'s ack")
    check_trivial(fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=30), baseline)


def test_a_truncated_data_file_gets_a_data_source_refusal_and_the_node_stays_up(
    fed: Federation, baseline: dict[str, dict[Key, int]], tmp_path: Path
) -> None:
    node = fed.nodes[SMALL]
    pid = node.proc.pid
    table = node.data_dir / "eligibility.parquet"
    saved = tmp_path / table.name
    shutil.copy2(table, saved)
    try:
        os.truncate(table, table.stat().st_size // 2)
        view = fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=30)
        assert view.state is RoundState.PARTIAL, view.carriers
        refused = view.carriers[SMALL]
        assert refused.state is CarrierRoundState.REFUSED, refused
        assert refused.message == DATA_SOURCE_REASON
        for carrier_id in (BIG, SPARE):
            assert view.carriers[carrier_id].state is CarrierRoundState.ANSWERED
        check_counted_once(view)
        assert node.proc.alive and node.proc.pid == pid
        assert fed.connected()[SMALL]
    finally:
        shutil.copy(saved, table)  # a new modification time: validated again at the next use
    # The same node, files fixed, answers again without a restart.
    check_trivial(fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=30), baseline)
    assert node.proc.alive and node.proc.pid == pid


def test_a_trivial_round_behind_a_heavy_one_is_answered_within_its_deadline(
    fed: Federation,
) -> None:
    heavy = fed.create_round(HEAVY_PERIOD, HEAVIER, deadline=60, carriers=[BIG])
    wait_audit(fed.nodes[BIG], heavy, "admitted", 30)
    started = time.monotonic()
    trivial = fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=3)
    try:
        assert trivial.state is RoundState.COMPLETE, trivial.carriers
        assert time.monotonic() - started < 3 + 5
        check_counted_once(trivial)
    finally:
        view = fed.wait_round(heavy, 90, tables=False)
    assert view.state is RoundState.COMPLETE, view.carriers
    check_counted_once(view)


def test_sigterm_during_a_heavy_evaluation_exits_promptly_and_loses_nothing(
    fed: Federation, baseline: dict[str, dict[Key, int]]
) -> None:
    node = fed.nodes[BIG]
    round_id = fed.create_round(HEAVY_PERIOD, HEAVIEST, deadline=60, carriers=[BIG, SMALL])
    wait_audit(node, round_id, "admitted", 30)
    node.proc.signal(signal.SIGTERM)
    stopped = time.monotonic()
    try:
        node.proc.wait(30)
    finally:
        took = time.monotonic() - stopped
    signed = released(node, round_id)
    fed.start_node(BIG)
    view = fed.wait_round(round_id, 90, tables=False)
    assert took <= 10, f"{BIG} took {took:.1f}s to exit after SIGTERM"
    big = view.carriers[BIG]
    assert big.state in (CarrierRoundState.ANSWERED, CarrierRoundState.REFUSED), big
    if big.state is CarrierRoundState.REFUSED:
        assert big.message and big.message != REPLAYED_REASON, big
    assert view.carriers[SMALL].state is CarrierRoundState.ANSWERED
    check_counted_once(view)
    # What it signed (before or after the restart) is delivered once, then forgotten.
    assert released(node, round_id) <= 1
    if signed:
        assert big.state is CarrierRoundState.ANSWERED
    wait_until(lambda: node.outbox() == [], 15, f"{BIG}'s outbox to empty")
    check_trivial(fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=30), baseline)


#: Mounting a tmpfs needs root (as in CI).
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def move_state(fed: Federation, node: Node, state_dir: Path) -> Path:
    """Stop the node and point its config at ``state_dir``; the old state dir is returned."""
    node.proc.stop()
    old = node.state_dir
    node.set_config(state_dir=str(state_dir))
    node.state_dir = state_dir
    return old


@needs_root
def test_a_read_only_state_directory_gets_a_refusal_and_recovers_without_restart(
    fed: Federation, tmp_path: Path
) -> None:
    node = fed.nodes[SPARE]
    with tmpfs(tmp_path / "state", "16m") as state:
        old = move_state(fed, node, state)
        try:
            fed.start_node(SPARE)  # its state made on a writable file system ...
            node.proc.stop()
            remount(state, read_only=True)  # ... which is read-only when it starts again
            fed.start_node(SPARE, connect=False)
            pid = node.proc.pid
            time.sleep(3)
            assert node.proc.alive, f"{SPARE} exited: {node.proc.returncode}"
            fed.wait_connected([SPARE], 30)
            view = fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=10)
            refused = view.carriers[SPARE]
            assert refused.state is CarrierRoundState.REFUSED, refused
            assert re.search(r"record|state|audit|storage|writ", refused.message, re.I), refused
            check_counted_once(view)
            assert node.proc.alive and node.proc.pid == pid
            remount(state, read_only=False)
            view = fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=30)
            assert view.state is RoundState.COMPLETE, view.carriers
            check_counted_once(view)
            assert node.proc.alive and node.proc.pid == pid
        finally:
            node.proc.stop()
            move_state(fed, node, old)


def fill(path: Path) -> None:
    """Write ``path`` until its file system is full."""
    with path.open("wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)


@needs_root
def test_a_full_state_directory_gets_a_refusal_and_recovers_without_restart(
    fed: Federation, tmp_path: Path
) -> None:
    node = fed.nodes[SPARE]
    with tmpfs(tmp_path / "state", "4m") as state:
        old = move_state(fed, node, state)
        try:
            fed.start_node(SPARE)
            pid = node.proc.pid
            filler = state / "filler"
            fill(filler)
            view = fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=10)
            refused = view.carriers[SPARE]
            assert refused.state is CarrierRoundState.REFUSED, refused  # not timed out
            assert refused.message, refused
            check_counted_once(view)
            assert node.proc.alive and node.proc.pid == pid
            filler.unlink()
            view = fed.run_round(TRIVIAL_PERIOD, TRIVIAL, deadline=30)
            assert view.state is RoundState.COMPLETE, view.carriers
            check_counted_once(view)
            assert node.proc.alive and node.proc.pid == pid
        finally:
            node.proc.stop()
            move_state(fed, node, old)
