"""The node's audit log proven against the anchors the coordinator keeps: rounds run over real
gRPC with mutual TLS, the anchors exported through the operator API and the ``oversight`` CLI,
the log checked with ``carrier-node audit verify``; then a cut tail with the head deleted (also
across a restart of the node) and a recomputed chain are both detected."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from carrier_node.cli import app as node_app
from carrier_node.records.audit import entry_hash, head_path, read_entries
from coordinator.cli import app as oversight_app
from coordinator.store import RoundState
from fedoversight import wire
from fedoversight.anchors import read_anchors
from fedoversight.signing import Signer, Verifier
from fedoversight.testing import VIEWER, SimulatedFederation
from tests.integration.test_trust import PERIOD, small

QUERY = wire.make_query("enrollment.member_months")


async def invoke(app: object, args: Sequence[str]) -> tuple[int, str]:
    """Run a CLI (off the event loop: it runs its own); its exit code and output, unwrapped."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))  # type: ignore[arg-type]
    return result.exit_code, " ".join(result.output.split())


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def recompute(path: Path, entries: list[dict[str, object]]) -> None:
    """Write a consistent log of ``entries`` (every prev and hash recomputed) and its head."""
    prev = "0" * 64
    out = []
    for entry in entries:
        entry = {**entry, "prev": prev}
        entry["hash"] = prev = entry_hash(entry)  # type: ignore[arg-type]
        out.append(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
    path.write_text("".join(out))
    head_path(path).write_text(json.dumps({"seq": len(entries), "hash": prev}))


async def test_anchors_exported_by_the_coordinator_prove_the_log_and_catch_tampering(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 1)
    (carrier,) = dirs
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        assert fed.client is not None and fed.pki is not None
        rounds = []
        for _ in range(2):
            outcome = await fed.client.run_round(PERIOD, [QUERY], deadline_seconds=120)
            assert outcome.state is RoundState.COMPLETE
            rounds.append(outcome.round_id)
        kit = fed.pki.operators[VIEWER]  # reading anchors needs no more than a viewer
        connection = [
            "--coordinator",
            fed.address,
            "--ca-cert",
            str(kit.ca_cert),
            "--cert",
            str(kit.cert),
            "--key",
            str(kit.key),
        ]
        anchors = tmp_path / "anchors.json"
        result_key = fed.pki.result_keys_dir / f"{carrier}.pub"
        code, out = await invoke(
            oversight_app,
            [
                "anchors",
                "--carrier",
                carrier,
                "--result-keys",
                str(fed.pki.result_keys_dir),
                "-o",
                str(anchors),
                *connection,
            ],
        )
        assert code == 0, out
        assert f"wrote 2 anchors of {carrier}" in out
        _, anchored = read_anchors(anchors, verifier=Verifier.load(result_key), carrier_id=carrier)
        assert sorted(a.round_id for a in anchored) == sorted(rounds)
        # Each anchor is the admission of the request it answers, the entry just before the
        # release was written (the rounds ran one after the other).
        log_path = fed.nodes[carrier].audit.path
        entries = {e["seq"]: e for _, e in read_entries(log_path) if e is not None}
        for a in anchored:
            entry = entries[a.anchor.seq]
            assert (entry["kind"], entry["request_id"], entry["hash"]) == (
                "admitted",
                a.request_id,
                a.anchor.hash,
            )
            assert entries[a.anchor.seq + 1]["kind"] == "released"
        # With a key another carrier's: the export refuses to write anything.
        other, other_key = tmp_path / "other-anchors.json", tmp_path / "other.pub"
        other_key.write_bytes(Signer.generate().verifier.public_pem())
        export = ["anchors", "--carrier", carrier, "--result-key", str(other_key)]
        code, out = await invoke(oversight_app, [*export, "-o", str(other), *connection])
        assert code == 5 and "does not verify" in out and not other.exists()

        verify = ["audit", "verify", "--anchors", str(anchors), "--result-key", str(result_key)]
        code, out = await invoke(node_app, [*verify, "--log", str(log_path)])
        assert code == 0, out
        assert "intact and anchored" in out and "2 anchors agree" in out
        code, out = await invoke(node_app, ["audit", "verify", "--log", str(log_path)])
        assert code == 3 and "NOT PROVEN" in out and "cannot be detected" in out

        # Tampering with a copy (the node keeps appending to its own).
        copy = tmp_path / "copy" / log_path.name
        copy.parent.mkdir()
        shutil.copy(log_path, copy)
        shutil.copy(head_path(log_path), head_path(copy))
        kept = lines(copy)
        last_release = max(a.anchor.seq for a in anchored) + 1
        # The last release cut from the end, and the head file deleted.
        copy.write_text("".join(kept[: last_release - 1]))
        head_path(copy).unlink()
        code, out = await invoke(node_app, ["audit", "verify", "--log", str(copy)])
        assert code == 3 and "intact" not in out and "missing" in out
        code, out = await invoke(node_app, [*verify, "--log", str(copy)])
        assert code == 1 and "BROKEN" in out and "is not in the log" in out
        # The first round's admission edited and the whole chain recomputed, head and all.
        edited = [json.loads(line) for line in kept]
        first = min(a.anchor.seq for a in anchored)
        edited[first - 1]["period"] = "2025-01:2025-03"
        recompute(copy, edited)
        code, out = await invoke(node_app, ["audit", "verify", "--log", str(copy)])
        assert code == 3 and "chain and head agree" in out
        code, out = await invoke(node_app, [*verify, "--log", str(copy)])
        assert code == 1 and "BROKEN" in out and f"entry {first} is not the entry" in out

        # The node's own log cut and its head deleted while it is stopped: it starts again,
        # says so in its started entry, and the anchors still show the cut.
        await fed.stop_node(carrier)
        original = lines(log_path)
        log_path.write_text("".join(original[: last_release - 1]))
        head_path(log_path).unlink()
        node = await fed.start_node(carrier)
        assert node.audit.head_at_open == {"state": "missing", "log_ends_at": last_release - 1}
        started = [e for _, e in read_entries(log_path) if e and e["kind"] == "started"][-1]
        assert started["seq"] == last_release  # the first entry after the cut
        assert started["audit_head"] == node.audit.head_at_open
        code, out = await invoke(node_app, ["audit", "verify", "--log", str(log_path)])
        assert code == 3 and "started with its head file missing" in out
        code, out = await invoke(node_app, [*verify, "--log", str(log_path)])
        assert code == 1 and "BROKEN" in out


def test_anchors_need_a_result_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        oversight_app, ["anchors", "--carrier", "c001", "-o", str(tmp_path / "a.json")]
    )
    assert result.exit_code == 2 and "--result-key" in result.output
