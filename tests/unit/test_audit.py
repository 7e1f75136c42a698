"""The node's hash-chained audit log: any edited, deleted, inserted or reordered entry is found,
and the first bad one is named."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carrier_node.cli import app
from carrier_node.records.audit import (
    GENESIS,
    HEAD_WIDTH,
    WITHOUT_ANCHORS,
    AuditKind,
    AuditLog,
    JsonValue,
    Outcome,
    encode_bytes,
    entry_hash,
    head_path,
    verify,
)
from fedoversight import wire
from fedoversight.anchors import AnchoredResult, anchored_result, read_anchors, write_anchors
from fedoversight.errors import AuthenticationError
from fedoversight.signing import Signer, Verifier
from fedoversight.v1 import types_pb2


def write_log(path: Path, n: int = 6) -> None:
    with AuditLog(path, fsync=False) as log:
        for i in range(n):
            log.append(
                AuditKind.RECEIVED if i % 2 == 0 else AuditKind.REFUSED,
                request_id=f"r{i}.q",
                round_id=f"r{i}",
                reason="bad signature",
                bytes=100 + i,
            )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "c001.audit.jsonl"
    write_log(path)
    return path


def test_an_untouched_log_verifies_and_chains_from_genesis(log_path: Path) -> None:
    outcome = verify(log_path)
    assert outcome.ok and outcome.entries == 6
    entries = [json.loads(line) for line in lines(log_path)]
    assert entries[0]["prev"] == GENESIS
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["hash"] == entry_hash(before)
    head = json.loads(head_path(log_path).read_text())
    assert head == {"seq": 6, "hash": entries[-1]["hash"]}


def test_reopening_continues_the_chain(log_path: Path) -> None:
    with AuditLog(log_path, fsync=False) as log:
        assert log.seq == 6
        log.append(AuditKind.STARTED, policy_digest="abc")
    outcome = verify(log_path)
    assert outcome.ok and outcome.entries == 7


def test_an_edited_entry_is_named(log_path: Path) -> None:
    text = lines(log_path)
    entry = json.loads(text[2])
    entry["reason"] = "looked fine"  # change what was decided, keep the stored hash
    text[2] = json.dumps(entry, sort_keys=True) + "\n"
    log_path.write_text("".join(text))
    outcome = verify(log_path)
    assert not outcome.ok
    assert (outcome.first_bad_line, outcome.first_bad_seq) == (3, 3)
    assert "edited" in outcome.problem


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(log_path: Path) -> None:
    text = lines(log_path)
    entry = json.loads(text[1])
    entry["bytes"] = 1
    entry["hash"] = entry_hash(entry)  # a careful forger rehashes the entry itself
    text[1] = json.dumps(entry, sort_keys=True) + "\n"
    log_path.write_text("".join(text))
    outcome = verify(log_path)
    assert (outcome.first_bad_line, outcome.first_bad_seq) == (3, 3)
    assert "does not chain" in outcome.problem


def test_a_deleted_entry_is_named(log_path: Path) -> None:
    text = lines(log_path)
    del text[3]
    log_path.write_text("".join(text))
    outcome = verify(log_path)
    assert (outcome.first_bad_line, outcome.first_bad_seq) == (4, 5)
    assert "expected entry 4" in outcome.problem


def test_reordered_entries_are_named(log_path: Path) -> None:
    text = lines(log_path)
    text[1], text[2] = text[2], text[1]
    log_path.write_text("".join(text))
    outcome = verify(log_path)
    assert (outcome.first_bad_line, outcome.first_bad_seq) == (2, 3)


def test_an_inserted_entry_is_named(log_path: Path) -> None:
    text = lines(log_path)
    forged = json.loads(text[1])
    forged["request_id"] = "forged.q"
    forged["hash"] = entry_hash(forged)
    text.insert(2, json.dumps(forged, sort_keys=True) + "\n")
    log_path.write_text("".join(text))
    outcome = verify(log_path)
    assert outcome.first_bad_line == 3
    assert not outcome.ok


def test_entries_cut_from_the_end_are_detected_by_the_head(log_path: Path) -> None:
    text = lines(log_path)
    log_path.write_text("".join(text[:-2]))
    outcome = verify(log_path)
    assert not outcome.ok
    assert outcome.entries == 4
    assert "removed from the end" in outcome.problem


def test_a_line_that_is_not_an_entry_is_named(log_path: Path) -> None:
    text = lines(log_path)
    text[4] = "{not json\n"
    log_path.write_text("".join(text))
    outcome = verify(log_path)
    assert outcome.first_bad_line == 5
    assert "not an audit entry" in outcome.problem


def test_cli_verify_and_show(log_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--log", str(log_path)])
    # Consistent, but without anchors it cannot be proven complete: said, with its own code.
    assert ok.exit_code == 3, ok.output
    assert "NOT PROVEN" in ok.output and "6 entries" in ok.output
    assert "intact" not in ok.output
    shown = runner.invoke(app, ["audit", "show", "--log", str(log_path), "--limit", "2"])
    assert shown.exit_code == 0, shown.output
    assert "r5.q" in shown.output and "r0.q" not in shown.output
    text = lines(log_path)
    text[0], text[1] = text[1], text[0]
    log_path.write_text("".join(text))
    broken = runner.invoke(app, ["audit", "verify", "--log", str(log_path)])
    assert broken.exit_code == 1
    assert "BROKEN" in broken.output and "line 1" in broken.output


def test_the_head_is_rewritten_in_place_and_an_older_head_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "c001.audit.jsonl"
    write_log(path, 2)
    head = head_path(path)
    # A head as earlier versions wrote it (compact JSON, no padding).
    head.write_text(json.dumps({"seq": 2, "hash": json.loads(lines(path)[-1])["hash"]}))
    inode = head.stat().st_ino
    with AuditLog(path, fsync=True) as log:
        log.append(AuditKind.STARTED, policy_digest="abc")
        log.append_many(
            [(AuditKind.RECEIVED, "r9.q", "r9", {}), (AuditKind.ADMITTED, "r9.q", "r9", {})]
        )
        assert log.seq == 5
        # After each append the log on disk ends at the entry the head names.
        last = json.loads(lines(path)[-1])
        assert json.loads(head.read_text()) == {"seq": 5, "hash": last["hash"]}
    assert head.stat().st_ino == inode  # the same file, no temporary file and rename
    assert len(head.read_bytes()) == HEAD_WIDTH
    assert not list(tmp_path.glob("*.tmp"))
    assert verify(path).ok
    with AuditLog(path, fsync=False) as log:  # reopened: the padded head matches
        assert log.seq == 5
        log.append(AuditKind.STARTED)
    assert verify(path).ok and verify(path).entries == 6


def test_cutting_entries_is_still_found_with_an_in_place_head(tmp_path: Path) -> None:
    path = tmp_path / "c001.audit.jsonl"
    with AuditLog(path, fsync=True) as log:
        for i in range(4):
            log.append(AuditKind.RECEIVED, request_id=f"r{i}.q", round_id=f"r{i}")
    path.write_text("".join(lines(path)[:-1]))
    outcome = verify(path)
    assert not outcome.ok and "removed from the end" in outcome.problem


# --- anchors: the head the node signed into its results --------------------------------------

CARRIER = "c001"


def release(log: AuditLog, signer: Signer, n: int) -> AnchoredResult:
    """Log a request's arrival and admission, sign a result anchored at the log's head, then
    log its release, as the node does; the anchored result as the coordinator keeps it."""
    request_id, round_id = f"r{n}.q", f"r{n}"
    log.append_many(
        [
            (AuditKind.RECEIVED, request_id, round_id, {"bytes": 100 + n}),
            (AuditKind.ADMITTED, request_id, round_id, {"period": "2026-01:2026-03"}),
        ]
    )
    message = types_pb2.MetricResult(
        request_id=request_id,
        round_id=round_id,
        carrier_id=CARRIER,
        audit_anchor=wire.anchor_to_pb(log.head()),
    )
    data = message.SerializeToString()
    signature = signer.sign(data)
    log.append(
        AuditKind.RELEASED,
        request_id=request_id,
        round_id=round_id,
        result_sha256=hashlib.sha256(data).hexdigest(),
        signature=signature.hex(),
        key_id=signer.key_id,
        result=encode_bytes(data),
    )
    anchored = anchored_result(data, signature, signer.key_id, verifier=signer.verifier)
    assert anchored is not None
    return anchored


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture
def anchored_log(tmp_path: Path, signer: Signer) -> tuple[Path, list[AnchoredResult]]:
    """A log of three released results (entries 1-9) and their anchors (entries 2, 5, 8)."""
    path = tmp_path / f"{CARRIER}.audit.jsonl"
    with AuditLog(path, fsync=False) as log:
        results = [release(log, signer, n) for n in range(3)]
    assert [a.anchor.seq for a in results] == [2, 5, 8]
    return path, results


def recompute(path: Path, entries: list[dict[str, JsonValue]]) -> None:
    """Write ``entries`` as a consistent log: every seq, prev and hash recomputed, and a head
    that agrees (what a careful forger with write access does)."""
    prev = GENESIS
    out = []
    for seq, entry in enumerate(entries, start=1):
        entry = {**entry, "seq": seq, "prev": prev}
        entry["hash"] = prev = entry_hash(entry)
        out.append(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
    path.write_text("".join(out))
    head_path(path).write_text(json.dumps({"seq": len(entries), "hash": prev}))


def anchors_file(tmp_path: Path, anchored: list[AnchoredResult]) -> Path:
    out = tmp_path / "anchors.json"
    write_anchors(out, CARRIER, anchored)
    return out


def public_key(tmp_path: Path, signer: Signer) -> Path:
    out = tmp_path / f"{CARRIER}.pub"
    out.write_bytes(signer.verifier.public_pem())
    return out


def verify_cli(path: Path, *extra: str) -> tuple[int, str]:
    """``carrier-node audit verify``: its exit code and its output (wrapping undone)."""
    result = CliRunner().invoke(app, ["audit", "verify", "--log", str(path), *extra])
    return result.exit_code, " ".join(result.output.split())


def test_an_anchored_log_is_proven_to_its_last_anchor(
    anchored_log: tuple[Path, list[AnchoredResult]], tmp_path: Path, signer: Signer
) -> None:
    path, anchored = anchored_log
    outcome = verify(path, anchors=anchored)
    assert outcome.outcome is Outcome.ANCHORED, outcome
    assert (outcome.anchors, outcome.anchored_to, outcome.entries) == (3, 8, 9)
    # Entry 9 (the last release) follows the last anchor: named as not proven by it.
    assert any("entries 9 to 9 come after the last anchor" in n for n in outcome.unproven)
    code, out = verify_cli(
        path,
        "--anchors",
        str(anchors_file(tmp_path, anchored)),
        "--result-key",
        str(public_key(tmp_path, signer)),
    )
    assert code == 0, out
    assert "intact and anchored" in out and "3 anchors agree up to entry 8" in out


def test_a_cut_tail_with_the_head_deleted_is_detected_by_the_anchors(
    anchored_log: tuple[Path, list[AnchoredResult]], tmp_path: Path, signer: Signer
) -> None:
    path, anchored = anchored_log
    kept = lines(path)
    head_path(path).unlink()
    key = str(public_key(tmp_path, signer))
    anchors = str(anchors_file(tmp_path, anchored))

    # Only the last release cut: its anchor (entry 8) is there, the release after it is not.
    path.write_text("".join(kept[:8]))
    outcome = verify(path)
    assert outcome.ok and outcome.outcome is Outcome.UNPROVEN  # the chain alone cannot tell
    assert any("missing" in n for n in outcome.unproven)
    code, out = verify_cli(path)
    assert code == 3 and "intact" not in out
    assert "head file" in out and "missing" in out and "cannot be detected" in out
    outcome = verify(path, anchors=anchored)
    assert outcome.outcome is Outcome.BROKEN
    assert "the release of request r2.q (round r2), signed after entry 8, is not in the log" in (
        outcome.problem
    )
    code, out = verify_cli(path, "--anchors", anchors, "--result-key", key)
    assert code == 1 and "BROKEN" in out and "r2.q" in out

    # Cut further, past the last anchor itself.
    path.write_text("".join(kept[:6]))
    outcome = verify(path, anchors=anchored)
    assert outcome.outcome is Outcome.BROKEN
    assert "anchors entry 8, but the log ends at entry 6" in outcome.problem


def test_an_edit_with_the_whole_chain_recomputed_is_detected_by_the_anchors(
    anchored_log: tuple[Path, list[AnchoredResult]], tmp_path: Path, signer: Signer
) -> None:
    path, anchored = anchored_log
    entries = [json.loads(line) for line in lines(path)]
    entries[3]["bytes"] = 1  # entry 4, the second request's arrival
    recompute(path, entries)
    outcome = verify(path)  # chain and head agree again
    assert outcome.ok and outcome.outcome is Outcome.UNPROVEN
    assert outcome.unproven == (WITHOUT_ANCHORS,)
    code, out = verify_cli(path)
    assert code == 3 and "chain and head agree" in out and "cannot be detected" in out
    outcome = verify(path, anchors=anchored)
    assert outcome.outcome is Outcome.BROKEN
    assert outcome.problem.startswith("entry 5 is not the entry the node signed")
    assert "r1.q" in outcome.problem
    code, out = verify_cli(
        path,
        "--anchors",
        str(anchors_file(tmp_path, anchored)),
        "--result-key",
        str(public_key(tmp_path, signer)),
    )
    assert code == 1 and "BROKEN" in out and "entry 5" in out


def test_a_release_rewritten_after_the_last_anchor_is_detected(
    anchored_log: tuple[Path, list[AnchoredResult]], signer: Signer
) -> None:
    path, anchored = anchored_log
    entries = [json.loads(line) for line in lines(path)]
    # The last release (entry 9) names its result's digest but holds other figures.
    entries[8]["result"] = encode_bytes(b"other figures")
    recompute(path, entries)
    outcome = verify(path, anchors=anchored)
    assert outcome.outcome is Outcome.BROKEN
    assert "does not hold the result and signature" in outcome.problem


def test_a_dropped_release_with_the_chain_recomputed_is_detected(
    anchored_log: tuple[Path, list[AnchoredResult]],
) -> None:
    path, anchored = anchored_log
    entries = [json.loads(line) for line in lines(path)]
    del entries[2]  # the first release, entry 3; everything after it renumbered and rehashed
    recompute(path, entries)
    assert verify(path).ok
    outcome = verify(path, anchors=anchored)
    assert outcome.outcome is Outcome.BROKEN
    assert "the release of request r0.q (round r0), signed after entry 2, is not in the log" in (
        outcome.problem
    )


def test_anchors_that_do_not_verify_are_refused(
    anchored_log: tuple[Path, list[AnchoredResult]], tmp_path: Path
) -> None:
    path, anchored = anchored_log
    other = tmp_path / "other.pub"
    other.write_bytes(Signer.generate().verifier.public_pem())
    anchors = anchors_file(tmp_path, anchored)
    code, out = verify_cli(path, "--anchors", str(anchors), "--result-key", str(other))
    assert code == 2 and "does not verify" in out
    with pytest.raises(AuthenticationError):
        read_anchors(anchors, verifier=Verifier.load(other))
    # Without a key the anchors are still checked against the log, but prove no more than
    # their source is trusted: not proven.
    code, out = verify_cli(path, "--anchors", str(anchors))
    assert code == 3 and "signatures were not checked" in out


def test_a_missing_head_at_start_up_is_recorded_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "c001.audit.jsonl"
    write_log(path, 4)
    path.write_text("".join(lines(path)[:2]))
    head_path(path).unlink()
    with AuditLog(path, fsync=False) as log:
        assert log.head_at_open == {"state": "missing", "log_ends_at": 2}
        log.append(AuditKind.STARTED, audit_head=log.head_at_open)
    with AuditLog(path, fsync=False) as log:  # the head is written again: it agrees now
        assert log.head_at_open is None
    outcome = verify(path)
    assert outcome.ok and outcome.outcome is Outcome.UNPROVEN
    assert any(
        "at entry 3 the node started with its head file missing" in n for n in outcome.unproven
    )
    # A head that names more entries than the log has.
    head_path(path).write_text(json.dumps({"seq": 9, "hash": "0" * 64}))
    with AuditLog(path, fsync=False) as log:
        assert log.head_at_open == {"state": "ahead of the log", "log_ends_at": 3, "head_seq": 9}
