"""Fault: the node's audit log tampered with by someone who can write its files.

Two attacks that leave a log consistent with itself, run through the real ``carrier-node``
command as a carrier's auditor would: the tail cut with the head file removed, and an entry
edited with every hash after it (and the head) recomputed. Without anchors, ``audit verify``
must not call either log intact, and says what it cannot prove (exit 3); with the anchors the
node signed into its results, it reports both broken (exit 1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carrier_node.records.audit import AuditKind, AuditLog, entry_hash, head_path
from fedoversight import wire
from fedoversight.anchors import AnchoredResult, anchored_result, write_anchors
from fedoversight.signing import Signer
from fedoversight.v1 import types_pb2

ROOT = Path(__file__).resolve().parents[2]
CARRIER = "c007"


def carrier_node(*args: str) -> tuple[int, str]:
    """The ``carrier-node`` command in a process of its own: exit code and output."""
    done = subprocess.run(
        [sys.executable, "-c", "from carrier_node.cli import main; main()", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "400", "PYTHONPATH": str(ROOT)},
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def release(log: AuditLog, signer: Signer, n: int) -> AnchoredResult:
    """A request admitted, its result signed with the log's head in it, its release logged."""
    request_id, round_id = f"round-{n}.{CARRIER}", f"round-{n}"
    log.append(AuditKind.RECEIVED, request_id=request_id, round_id=round_id, bytes=300 + n)
    log.append(AuditKind.ADMITTED, request_id=request_id, round_id=round_id, period="2026-01")
    data = types_pb2.MetricResult(
        request_id=request_id,
        round_id=round_id,
        carrier_id=CARRIER,
        audit_anchor=wire.anchor_to_pb(log.head()),
    ).SerializeToString()
    signature = signer.sign(data)
    log.append(
        AuditKind.RELEASED,
        request_id=request_id,
        round_id=round_id,
        result_sha256=hashlib.sha256(data).hexdigest(),
        signature=signature.hex(),
        key_id=signer.key_id,
        result=base64.b64encode(data).decode(),
    )
    anchored = anchored_result(data, signature, signer.key_id, verifier=signer.verifier)
    assert anchored is not None
    return anchored


@pytest.fixture
def node_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A node's audit log of four releases, the anchors file and the public result key."""
    signer = Signer.generate()
    log_path = tmp_path / f"{CARRIER}.audit.jsonl"
    with AuditLog(log_path, fsync=False) as log:
        log.append(AuditKind.STARTED, node_version="test")
        anchored = [release(log, signer, n) for n in range(4)]
    anchors = tmp_path / "anchors.json"
    write_anchors(anchors, CARRIER, anchored)
    key = tmp_path / f"{CARRIER}.pub"
    key.write_bytes(signer.verifier.public_pem())
    return log_path, anchors, key


def with_anchors(log_path: Path, anchors: Path, key: Path) -> tuple[int, str]:
    return carrier_node(
        "audit",
        "verify",
        "--log",
        str(log_path),
        "--anchors",
        str(anchors),
        "--result-key",
        str(key),
    )


def test_an_untouched_log_is_proven_by_its_anchors(node_files: tuple[Path, Path, Path]) -> None:
    code, out = with_anchors(*node_files)
    assert code == 0, out
    assert "intact and anchored" in out and "4 anchors agree up to entry 12" in out


def test_a_cut_tail_with_the_head_removed_is_detected(
    node_files: tuple[Path, Path, Path],
) -> None:
    log_path, anchors, key = node_files
    text = log_path.read_text().splitlines(keepends=True)
    log_path.write_text("".join(text[:-4]))  # the last request and the release before it
    head_path(log_path).unlink()
    code, out = carrier_node("audit", "verify", "--log", str(log_path))
    assert code == 3, out
    assert "intact" not in out and "NOT PROVEN" in out
    assert (
        "is missing" in out and "a truncated tail or a recomputed chain cannot be detected" in out
    )
    code, out = with_anchors(log_path, anchors, key)
    assert code == 1, out
    # The first anchor the cut log fails: the third release, whose anchor survived the cut.
    assert "BROKEN" in out and "the release of request round-2.c007" in out
    assert "is not in the log" in out


def test_a_recomputed_chain_is_detected(node_files: tuple[Path, Path, Path]) -> None:
    log_path, anchors, key = node_files
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    entries[5]["period"] = "2025-12"  # the second request's admission, rewritten
    prev = "0" * 64
    for entry in entries:
        entry["prev"] = prev
        entry["hash"] = prev = entry_hash(entry)
    log_path.write_text(
        "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in entries)
    )
    head_path(log_path).write_text(json.dumps({"seq": len(entries), "hash": prev}))
    code, out = carrier_node("audit", "verify", "--log", str(log_path))
    assert code == 3, out
    assert "intact" not in out and "chain and head agree" in out and "cannot be detected" in out
    code, out = with_anchors(log_path, anchors, key)
    assert code == 1, out
    assert "BROKEN" in out and "entry 6 is not the entry the node signed" in out
