"""The node's hash-chained audit log: any edited, deleted, inserted or reordered entry is found,
and the first bad one is named."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carrier_node.cli import app
from carrier_node.records.audit import (
    GENESIS,
    HEAD_WIDTH,
    AuditKind,
    AuditLog,
    entry_hash,
    head_path,
    verify,
)


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
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output and "6 entries" in ok.output
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
