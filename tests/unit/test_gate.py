"""The node's front door: signature, validity window, replay — before anything runs."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest

from carrier_node.daemon.gate import (
    ExpiredRequestError,
    NotAddressedError,
    ReplayedRequestError,
    RequestGate,
)
from carrier_node.records.state import NodeState
from fedoversight import wire
from fedoversight.domain import RequestSpec
from fedoversight.errors import AuthenticationError
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.v1 import types_pb2

NOW = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)


def signed(signer: Signer | None, **changes: object) -> types_pb2.SignedRequest:
    spec = {
        "request_id": "r1.q",
        "round_id": "r1",
        "catalogue_version": "1",
        "period": Period.parse("2026-01"),
        "queries": (wire.make_query("cost.pmpm"),),
        "issued_at": NOW - dt.timedelta(minutes=1),
        "expires_at": NOW + dt.timedelta(hours=1),
        "nonce": os.urandom(16),
        "carriers": ("c001", "c002"),
    }
    spec.update(changes)
    data = wire.request_to_pb(RequestSpec(**spec)).SerializeToString()  # type: ignore[arg-type]
    if signer is None:
        return types_pb2.SignedRequest(request=data)
    return types_pb2.SignedRequest(request=data, signature=signer.sign(data), key_id=signer.key_id)


@pytest.fixture
def state(tmp_path: Path) -> NodeState:
    return NodeState(tmp_path / "node.sqlite3")


def test_a_signed_fresh_request_is_admitted(state: NodeState) -> None:
    operator = Signer.generate()
    gate = RequestGate(state, operator.verifier, carrier_id="c001")
    assert gate.admit(signed(operator), now=NOW).round_id == "r1"


def test_unsigned_tampered_or_foreign_requests_are_refused(state: NodeState) -> None:
    operator, rogue = Signer.generate(), Signer.generate()
    gate = RequestGate(state, operator.verifier, carrier_id="c001")
    with pytest.raises(AuthenticationError):
        gate.admit(signed(None), now=NOW)
    with pytest.raises(AuthenticationError):
        gate.admit(signed(rogue), now=NOW)
    good = signed(operator)
    tampered = types_pb2.SignedRequest(
        request=good.request.replace(b"cost.pmpm", b"cost.pmpn"),
        signature=good.signature,
        key_id=good.key_id,
    )
    with pytest.raises(AuthenticationError):
        gate.admit(tampered, now=NOW)
    forged_id = types_pb2.SignedRequest(
        request=good.request, signature=rogue.sign(good.request), key_id=operator.key_id
    )
    with pytest.raises(AuthenticationError):
        gate.admit(forged_id, now=NOW)


def test_expired_and_future_requests_are_refused(state: NodeState) -> None:
    operator = Signer.generate()
    gate = RequestGate(state, operator.verifier, carrier_id="c001")
    with pytest.raises(ExpiredRequestError):
        gate.admit(signed(operator, expires_at=NOW - dt.timedelta(seconds=1)), now=NOW)
    with pytest.raises(ExpiredRequestError):
        gate.admit(
            signed(
                operator,
                issued_at=NOW + dt.timedelta(hours=1),
                expires_at=NOW + dt.timedelta(hours=2),
            ),
            now=NOW,
        )
    with pytest.raises(ExpiredRequestError):
        gate.admit(signed(operator, issued_at=NOW - dt.timedelta(hours=3)), now=NOW)


def test_a_replayed_request_is_refused_even_after_a_restart(tmp_path: Path) -> None:
    operator = Signer.generate()
    request = signed(operator)
    first = NodeState(tmp_path / "node.sqlite3")
    RequestGate(first, operator.verifier, carrier_id="c001").admit(request, now=NOW)
    with pytest.raises(ReplayedRequestError):
        RequestGate(first, operator.verifier, carrier_id="c001").admit(request, now=NOW)
    first.close()
    restarted = NodeState(tmp_path / "node.sqlite3")
    with pytest.raises(ReplayedRequestError):
        RequestGate(restarted, operator.verifier, carrier_id="c001").admit(request, now=NOW)


def test_a_request_admitted_but_never_answered_is_admitted_again(tmp_path: Path) -> None:
    """After a crash mid-evaluation the coordinator delivers the very same bytes again: with
    no answer kept for them the node evaluates the request again; other bytes with its nonce
    remain a replay."""
    operator = Signer.generate()
    request = signed(operator)
    gate = RequestGate(NodeState(tmp_path / "node.sqlite3"), operator.verifier, carrier_id="c001")
    gate.admit(request, now=NOW)
    restarted = RequestGate(
        NodeState(tmp_path / "node.sqlite3"), operator.verifier, carrier_id="c001"
    )
    with pytest.raises(ReplayedRequestError):  # unless the caller found no answer kept
        restarted.admit(request, now=NOW)
    assert restarted.admit(request, now=NOW, unanswered=True).request_id == "r1.q"
    nonce = wire.decode_request_bytes(bytes(request.request)).nonce
    # Once answered, and even after the answer is acknowledged and forgotten, it is a replay.
    state = NodeState(tmp_path / "node.sqlite3")
    digest = hashlib.sha256(bytes(request.request)).hexdigest()
    state.put_outbox("r1.q", b"the answer", digest)
    state.ack("r1.q")
    assert state.get_outbox("r1.q") is None
    with pytest.raises(ReplayedRequestError):
        restarted.admit(request, now=NOW, unanswered=True)
    other = signed(operator, nonce=nonce, request_id="r2.q", round_id="r2")
    with pytest.raises(ReplayedRequestError):
        restarted.admit(other, now=NOW, unanswered=True)


def test_unsigned_requests_only_in_insecure_mode(state: NodeState) -> None:
    with pytest.raises(AuthenticationError):
        RequestGate(state, None, carrier_id="c001")
    gate = RequestGate(state, None, carrier_id="c001", allow_unsigned=True)
    assert gate.admit(signed(None), now=NOW).request_id == "r1.q"


def test_expired_nonces_are_forgotten_and_live_ones_kept(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "node.sqlite3")
    later = NOW + dt.timedelta(hours=2)
    assert state.remember_nonce(b"a" * 16, "ra.q", NOW + dt.timedelta(hours=1), NOW)
    assert state.remember_nonce(b"b" * 16, "rb.q", NOW + dt.timedelta(hours=3), NOW)
    assert not state.remember_nonce(b"a" * 16, "ra.q", NOW + dt.timedelta(hours=1), NOW)
    state.close()
    restarted = NodeState(tmp_path / "node.sqlite3")
    # Two hours on, "a" has expired (and is forgotten); "b" is still live.
    assert restarted.remember_nonce(b"a" * 16, "ra2.q", later + dt.timedelta(hours=1), later)
    assert not restarted.remember_nonce(b"b" * 16, "rb.q", later + dt.timedelta(hours=1), later)
    rows = restarted._db.execute("SELECT request_id FROM nonces ORDER BY request_id").fetchall()
    assert [r[0] for r in rows] == ["ra2.q", "rb.q"]
    restarted.close()


def test_an_acknowledged_answer_is_forgotten(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "node.sqlite3")
    state.put_outbox("r1.q", b"answer-1", "sha-1")
    state.put_outbox("r2.q", b"answer-2", "sha-2")
    state.ack("r1.q")
    assert state.get_outbox("r1.q") is None
    assert [r for r, _ in state.pending()] == ["r2.q"]
    state.close()
    reopened = NodeState(tmp_path / "node.sqlite3")
    assert [r for r, _ in reopened.pending()] == ["r2.q"]
    reopened.close()


def test_a_request_not_naming_this_carrier_is_refused(state: NodeState) -> None:
    """A genuinely signed request for other carriers' round is not this node's to answer
    (so it cannot be replayed to carriers outside its round); its nonce is not spent."""
    operator = Signer.generate()
    gate = RequestGate(state, operator.verifier, carrier_id="c003")
    elsewhere = signed(operator)
    with pytest.raises(NotAddressedError):
        gate.admit(elsewhere, now=NOW)
    with pytest.raises(NotAddressedError):
        gate.admit(signed(operator, carriers=()), now=NOW)
    mine = RequestGate(state, operator.verifier, carrier_id="c002")
    assert mine.admit(elsewhere, now=NOW).request_id == "r1.q"
