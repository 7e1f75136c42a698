"""Manual release mode over real gRPC: a carrier whose policy says ``release_mode = "manual"``
holds its signed result until its reviewer approves it with ``carrier-node approve``; the round
waits for it, the approval sends exactly what automatic release would have sent, a rejection
reaches the coordinator as a refusal, and a held result survives a restart of the node."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from carrier_node.cli import main
from carrier_node.config import NodeConfig
from carrier_node.daemon import REVIEWER_REJECTED, NodeDaemon
from carrier_node.policy import Policy
from carrier_node.records.audit import read_entries, verify
from carrier_node.records.state import ReviewStatus
from coordinator.combine import ScopedTable
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.periods import Period
from fedoversight.testing import SimulatedFederation
from fedoversight.v1 import types_pb2

PERIOD = Period.parse("2026-01:2026-03")
QUERIES = [
    wire.make_query("enrollment.member_months", group_by=[D.PLAN_CODE, D.AGE_BAND]),
    wire.make_query("cost.pmpm", group_by=[D.AGE_BAND, D.SEX]),
]
MANUAL = Policy(release_mode="manual")


@pytest.fixture(scope="module")
def carriers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small carriers (the last one small enough to have cells suppressed)."""
    from fedoversight.testing import SynthConfig, write_carriers

    root = tmp_path_factory.mktemp("manual-carriers")
    dirs = write_carriers(root, SynthConfig(carriers=3, members=3000, seed=5, months=3))
    return {d.name: d for d in dirs}


async def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return check()


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich lays tables out for the terminal's width; a wide one keeps each cell on a line."""
    monkeypatch.setenv("COLUMNS", "250")


class Terminal(io.StringIO):
    """Typed answers, as from a terminal."""

    def isatty(self) -> bool:
        return True


def write_node_toml(config: NodeConfig, path: Path) -> Path:
    """The node's config as the carrier would keep it (what ``approve --config`` reads)."""
    path.write_text(tomli_w.dumps(config.model_dump(mode="json", exclude_none=True)))
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``carrier-node ARGV`` through its entry point: (exit code, what it printed)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    code = done.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), capsys.readouterr().out


async def start_manual_node(fed: SimulatedFederation, carrier: str) -> NodeDaemon:
    """(Re)start a carrier's node with the manual policy, on the state it had."""
    if carrier in fed.nodes:
        await fed.stop_node(carrier)
    node = NodeDaemon(fed.node_config(carrier), policy=MANUAL, review_poll_seconds=0.2)
    fed.nodes[carrier] = node
    fed._tasks[carrier] = asyncio.create_task(node.run())
    await asyncio.wait_for(node.connected.wait(), 30)
    return node


def cells(tables: tuple[ScopedTable, ...], scope: str) -> list[list[tuple[Any, ...]]]:
    """A scope's tables as comparable cells (figures left out: NaN never equals itself)."""
    return [[(c.key, c.stats) for c in t.cells] for t in tables if t.scope == scope]


def states(fed: SimulatedFederation, round_id: str) -> dict[str, CarrierRoundState]:
    assert fed.coordinator is not None
    return {c.carrier_id: c.state for c in fed.coordinator.store.carrier_rounds(round_id)}


def audit_kinds(node: NodeDaemon, request_id: str) -> list[dict[str, Any]]:
    return [
        e
        for _, e in read_entries(node.audit.path)
        if e is not None and e.get("request_id") == request_id
    ]


async def test_a_held_result_waits_for_approval_then_goes_out_as_auto_would(
    carriers: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manual = sorted(carriers)[-1]  # the smallest carrier: it has suppressed cells
    async with SimulatedFederation(carriers, tmp_path / "run") as fed:
        assert fed.client is not None and fed.coordinator is not None
        # Automatic release first: what the carrier gives without review.
        auto = await fed.client.run_round(PERIOD, QUERIES, deadline_seconds=120)
        assert auto.state is RoundState.COMPLETE
        toml = write_node_toml(fed.node_config(manual), tmp_path / "node.toml")
        node = await start_manual_node(fed, manual)
        code, out = cli(capsys, "approve", "--config", str(toml))
        assert code == 0 and "no results are held" in out

        round_id = await fed.client.create_round(PERIOD, QUERIES, deadline_seconds=120)
        request_id = f"{round_id}.q"
        assert await wait_for(lambda: len(node._state.held_releases()) == 1, 60)
        others = {c for c in carriers if c != manual}
        assert await wait_for(
            lambda: all(states(fed, round_id)[c] is CarrierRoundState.ANSWERED for c in others), 60
        )
        # The round waits for the manual carrier: the coordinator has nothing from it.
        await asyncio.sleep(1.0)
        assert states(fed, round_id)[manual] is CarrierRoundState.SENT
        assert fed.coordinator.rounds.is_open(round_id)
        assert manual not in {r.carrier_id for r in fed.coordinator.store.results(round_id)}
        assert node._state.pending() == []  # nothing in the outbox either
        assert [e["kind"] for e in audit_kinds(node, request_id)] == [
            "received",
            "admitted",
            "held",
        ]

        # The reviewer lists what is held, then looks at it cell by cell.
        code, out = cli(capsys, "approve", "--config", str(toml), "--json")
        assert code == 0
        (listed,) = json.loads(out)
        assert (listed["request_id"], listed["round_id"], listed["status"]) == (
            request_id,
            round_id,
            "held",
        )
        code, out = cli(capsys, "approve", "--config", str(toml))
        assert code == 0 and request_id in out
        code, out = cli(capsys, "approve", request_id, "--config", str(toml), "--json")
        assert code == 0
        shown = json.loads(out)
        assert shown["status"] == "held" and not shown["expired"]
        # The reviewer sees why the round was asked: the coordinator's default purpose here.
        assert shown["purpose"]["code"] == "plan-cost-oversight"
        assert shown["purpose"]["office"] == "agency"
        assert "default purpose" in shown["purpose"]["justification"]
        auto_tables = [t for t in auto.tables if t.scope == manual]
        statuses: set[str] = set()
        for table, before in zip(shown["tables"], auto_tables, strict=True):
            # The previous release of the same query is the automatic round's.
            assert table["previous"]["round_id"] == auto.round_id
            assert table["previous"]["approved_by"] == ""
            assert len(table["cells"]) == len(before.cells)
            for cell, old in zip(table["cells"], before.cells, strict=True):
                assert cell["key"] == {str(d): v for d, v in old.key}
                assert cell["status"] == str(old.status)
                statuses.add(cell["status"])
                for stat, old_stat in zip(cell["stats"], old.stats, strict=True):
                    assert stat["status"] == str(old_stat.status)
                    if old_stat.status.withheld:
                        assert stat["value"] is None and stat["change"] is None
                    elif isinstance(old_stat.value, int):
                        assert stat["value"] == old_stat.value and stat["change"] == 0
        # The held values are those the automatic release sent: the same contents, the same
        # noise.
        assert "perturbed" in statuses and "withheld" in statuses
        code, out = cli(capsys, "approve", request_id, "--config", str(toml))
        assert code == 0  # not a terminal: shown, nothing decided
        assert "purpose: plan-cost-oversight" in out
        assert "withheld" in out and "perturbed" in out and auto.round_id in out
        assert node._state.held_release(request_id).status is ReviewStatus.HELD  # type: ignore[union-attr]

        # Approval: the running node sends it, the round completes with auto's figures.
        code, out = cli(
            capsys, "approve", request_id, "--config", str(toml), "--release", "--reviewer", "alice"
        )
        assert code == 0 and "approved" in out
        assert await wait_for(lambda: not fed.coordinator.rounds.is_open(round_id), 30)  # type: ignore[union-attr]
        outcome = await fed.client.get_round(round_id)
        assert outcome.state is RoundState.COMPLETE
        assert cells(outcome.tables, manual) == cells(auto.tables, manual)
        assert cells(outcome.tables, "program") == cells(auto.tables, "program")
        kinds = audit_kinds(node, request_id)
        assert [e["kind"] for e in kinds] == ["received", "admitted", "held", "released"]
        assert kinds[-1]["approved_by"] == "alice"
        assert kinds[-1]["result_sha256"] == kinds[-2]["result_sha256"]
        assert node._state.held_release(request_id).status is ReviewStatus.RELEASED  # type: ignore[union-attr]
        assert await wait_for(lambda: node._state.pending() == [])  # acknowledged
        # Deciding again is refused; nothing more is held.
        code, out = cli(capsys, "approve", request_id, "--config", str(toml), "--reject")
        assert code == 1 and "no longer held" in out
        code, out = cli(capsys, "approve", "--config", str(toml), "--json")
        assert code == 0 and json.loads(out) == []
        assert verify(node.audit.path).ok


async def test_a_held_result_survives_restarts_and_a_rejection_is_a_refusal(
    carriers: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    manual = sorted(carriers)[-1]
    # A node away longer than the grace would have its round closed without it.
    async with SimulatedFederation(carriers, tmp_path / "run", disconnect_grace_seconds=60) as fed:
        assert fed.client is not None and fed.coordinator is not None
        coordinator = fed.coordinator
        toml = write_node_toml(fed.node_config(manual), tmp_path / "node.toml")
        node = await start_manual_node(fed, manual)
        round_id = await fed.client.create_round(PERIOD, QUERIES, deadline_seconds=120)
        request_id = f"{round_id}.q"
        assert await wait_for(lambda: len(node._state.held_releases()) == 1, 60)

        # A restart: the held result is still there, and the request the coordinator sends
        # again on reconnection is recognised (not refused as a replay, not evaluated again).
        node = await start_manual_node(fed, manual)
        assert await wait_for(
            lambda: any(
                "its result awaits the carrier's reviewer" in r.getMessage() for r in caplog.records
            )
        )
        code, out = cli(capsys, "approve", "--config", str(toml), "--json")
        assert code == 0 and [h["request_id"] for h in json.loads(out)] == [request_id]
        assert await wait_for(lambda: states(fed, round_id)[manual] is CarrierRoundState.SENT)
        assert [e["kind"] for e in audit_kinds(node, request_id)] == [
            "received",
            "admitted",
            "held",
        ]

        # Rejected while the node is down, answering the prompt on a terminal: carried out
        # when the node is back.
        await fed.stop_node(manual)
        monkeypatch.setattr(sys, "stdin", Terminal("reject\nfigures look off\n"))
        code, out = cli(capsys, "approve", request_id, "--config", str(toml), "--reviewer", "bob")
        assert code == 0 and "release it, reject it, or keep it held?" in out
        assert "rejected" in out
        node = await start_manual_node(fed, manual)
        assert await wait_for(lambda: not coordinator.rounds.is_open(round_id), 30)
        (mine,) = [c for c in coordinator.store.carrier_rounds(round_id) if c.carrier_id == manual]
        assert mine.state is CarrierRoundState.REFUSED
        assert mine.error_code == types_pb2.ERROR_CODE_POLICY_REFUSED
        assert mine.message == REVIEWER_REJECTED
        outcome = await fed.client.get_round(round_id)
        assert outcome.state is RoundState.PARTIAL
        assert manual not in {t.scope for t in outcome.tables}
        kinds = audit_kinds(node, request_id)
        # The request delivered again on reconnection may get the refusal once more.
        assert [e["kind"] for e in kinds][:4] == ["received", "admitted", "held", "rejected"]
        assert {e["kind"] for e in kinds[4:]} <= {"resent"}
        assert kinds[3]["rejected_by"] == "bob"
        assert kinds[3]["reason"] == "figures look off"  # kept at the node only
        assert node._state.held_release(request_id).status is ReviewStatus.REFUSED  # type: ignore[union-attr]
        assert verify(node.audit.path).ok
        code, out = cli(capsys, "approve", "--config", str(toml), "--all", "--json")
        assert code == 0 and [h["status"] for h in json.loads(out)] == ["refused"]
        code, out = cli(capsys, "audit", "show", "--config", str(toml))
        assert code == 0 and "held for the reviewer" in out and "rejected by bob" in out


def test_approve_needs_a_node_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = NodeConfig(
        carrier_id="c001",
        coordinator="127.0.0.1:1",
        data_dir=tmp_path,
        insecure=True,
        state_dir=tmp_path / "state",
    )
    toml = write_node_toml(config, tmp_path / "node.toml")
    code, out = cli(capsys, "approve", "--config", str(toml))
    assert code == 2 and "no node state" in out
