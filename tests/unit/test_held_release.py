"""The node state's held results (manual release mode): held → decided once → settled into
the outbox in one step, durable across reopening, shared by two connections (the daemon and
``carrier-node approve``)."""

from __future__ import annotations

from pathlib import Path

from carrier_node.records.state import HeldRelease, NodeState, ReviewStatus, query_record
from fedoversight import wire
from fedoversight.dimensions import Dimension as D


def held(request_id: str = "r-1.q", message: bytes = b"signed result") -> HeldRelease:
    query = wire.make_query("cost.pmpm", group_by=[D.AGE_BAND], filters={D.PROGRAM: ["FEHB"]})
    return HeldRelease(
        request_id=request_id,
        round_id=request_id.removesuffix(".q"),
        request_sha256="ab" * 32,
        message=message,
        period="2026-01:2026-03",
        queries=(query_record(query),),
        expires_at="2026-01-01T01:00:00+00:00",
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_a_held_result_is_decided_once_and_settled_into_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "c001.node.sqlite3"
    daemon_side = NodeState(path)
    daemon_side.hold(held())
    assert daemon_side.awaiting_review("r-1.q", "ab" * 32)
    assert not daemon_side.awaiting_review("r-1.q", "cd" * 32)  # other bytes, same claimed id
    assert daemon_side.pending() == []  # nothing to send while held
    assert not daemon_side.settle("r-1.q", b"answer")  # undecided: nothing to carry out

    reviewer_side = NodeState(path)  # the approve command's own connection
    assert [h.request_id for h in reviewer_side.held_releases()] == ["r-1.q"]
    assert reviewer_side.decide("r-1.q", approve=True, reviewer="alice")
    assert not reviewer_side.decide("r-1.q", approve=False, reviewer="bob")  # decided already
    reviewer_side.close()

    (decided,) = daemon_side.decided()
    assert (decided.status, decided.reviewer) == (ReviewStatus.APPROVED, "alice")
    assert daemon_side.awaiting_review("r-1.q", "ab" * 32)  # decided, not yet in the outbox
    assert daemon_side.settle("r-1.q", b"signed result")
    assert not daemon_side.settle("r-1.q", b"signed result")  # carried out once
    assert daemon_side.pending() == [("r-1.q", b"signed result")]
    assert daemon_side.get_outbox("r-1.q", "ab" * 32) == b"signed result"
    assert not daemon_side.awaiting_review("r-1.q", "ab" * 32)
    assert daemon_side.held_releases() == [] and daemon_side.decided() == []
    daemon_side.close()

    reopened = NodeState(path)
    stored = reopened.held_release("r-1.q")
    assert stored is not None and stored.status is ReviewStatus.RELEASED and stored.settled_at
    assert stored.queries == held().queries
    reopened.close()


def test_a_rejection_settles_as_a_refusal_and_held_results_survive_reopening(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c001.node.sqlite3"
    state = NodeState(path)
    state.hold(held("r-1.q"))
    state.hold(held("r-2.q"))
    state.close()
    state = NodeState(path)
    assert [h.request_id for h in state.held_releases()] == ["r-1.q", "r-2.q"]
    assert state.decide("r-2.q", approve=False, reviewer="bob", reason="looks off")
    assert [h.request_id for h in state.held_releases()] == ["r-1.q"]
    assert state.settle("r-2.q", b"refusal")
    everything = {h.request_id: h for h in state.held_releases(None)}
    assert everything["r-2.q"].status is ReviewStatus.REFUSED
    assert everything["r-2.q"].reason == "looks off"
    assert state.pending() == [("r-2.q", b"refusal")]
    state.close()
