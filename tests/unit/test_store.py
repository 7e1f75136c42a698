"""The round store: round trips, idempotency, terminal states, durability across reopen.

Each test that takes ``store`` or ``open_store`` runs on both backends: a SQLite file and a
fresh schema on the PostgreSQL server (see tests/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from coordinator.store import (
    SCHEMA_VERSION,
    CarrierRoundState,
    RoundRecord,
    RoundState,
    RoundStore,
    StoredResult,
)
from fedoversight.errors import ConfigError, InvalidRequestError, NotFoundError
from tests.conftest import StoreOpener

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def _round(
    round_id: str = "r1",
    *,
    minutes: int = 0,
    state: RoundState = RoundState.CREATED,
    key: str | None = None,
) -> RoundRecord:
    created = T0 + dt.timedelta(minutes=minutes)
    return RoundRecord(
        round_id=round_id,
        request_bytes=b"\x0a\x03req" + round_id.encode(),
        signature=b"sig-" + round_id.encode(),
        key_id="operator-1",
        state=state,
        quorum=2,
        deadline_at=created + dt.timedelta(minutes=5),
        created_at=created,
        finished_at=None,
        idempotency_key=key,
    )


def _result(round_id: str, carrier_id: str, payload: bytes = b"result") -> StoredResult:
    return StoredResult(
        round_id=round_id,
        carrier_id=carrier_id,
        result_bytes=payload,
        signature=b"node-sig",
        key_id=f"{carrier_id}-key",
        received_at=T0 + dt.timedelta(seconds=30),
    )


@pytest.fixture
def store(open_store: StoreOpener) -> Iterator[RoundStore]:
    s = open_store()
    yield s
    s.close()


def test_round_round_trip(store: RoundStore) -> None:
    record = _round()
    stored = store.create_round(record, ["acme", "blue"])
    assert stored == record
    assert store.get_round("r1") == record
    carriers = store.carrier_rounds("r1")
    assert [(c.carrier_id, c.state) for c in carriers] == [
        ("acme", CarrierRoundState.PENDING),
        ("blue", CarrierRoundState.PENDING),
    ]
    assert all(c.updated_at.tzinfo is not None for c in carriers)


def test_get_unknown_round_raises(store: RoundStore) -> None:
    with pytest.raises(NotFoundError):
        store.get_round("missing")
    with pytest.raises(NotFoundError):
        store.set_round_state("missing", RoundState.FAILED)


def test_duplicate_round_id_is_refused(store: RoundStore) -> None:
    store.create_round(_round(), ["acme"])
    with pytest.raises(InvalidRequestError):
        store.create_round(_round(), ["acme"])


def test_naive_datetimes_are_refused(store: RoundStore) -> None:
    naive = replace(_round(), created_at=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        store.create_round(naive, ["acme"])
    with pytest.raises(NotFoundError):  # nothing half-written
        store.get_round("r1")


def test_create_round_is_idempotent_on_key(store: RoundStore) -> None:
    first = store.create_round(_round("r1", key="k-1"), ["acme", "blue"])
    again = store.create_round(_round("r2", minutes=1, key="k-1"), ["acme", "blue", "cove"])
    assert again == first
    assert again.round_id == "r1"
    assert [r.round_id for r in store.list_rounds()] == ["r1"]
    assert len(store.carrier_rounds("r1")) == 2
    assert store.carrier_rounds("r2") == []


def test_set_round_state_and_finished_at(store: RoundStore) -> None:
    store.create_round(_round(), ["acme"])
    store.set_round_state("r1", RoundState.COLLECTING)
    assert store.get_round("r1").state is RoundState.COLLECTING
    assert store.get_round("r1").finished_at is None
    done = T0 + dt.timedelta(minutes=3)
    store.set_round_state("r1", RoundState.COMPLETE, finished_at=done)
    got = store.get_round("r1")
    assert got.state is RoundState.COMPLETE
    assert got.finished_at == done


def test_list_rounds_newest_first_with_limit(store: RoundStore) -> None:
    for i, rid in enumerate(["a", "b", "c", "d"]):
        store.create_round(_round(rid, minutes=i), ["acme"])
    assert [r.round_id for r in store.list_rounds()] == ["d", "c", "b", "a"]
    assert [r.round_id for r in store.list_rounds(limit=2)] == ["d", "c"]


def test_terminal_carrier_states_are_not_overwritten(store: RoundStore) -> None:
    store.create_round(_round(), ["acme", "blue"])
    assert store.set_carrier_state("r1", "acme", CarrierRoundState.SENT)
    assert store.set_carrier_state("r1", "acme", CarrierRoundState.REFUSED, 4, "policy refused")
    assert not store.set_carrier_state("r1", "acme", CarrierRoundState.TIMED_OUT)
    assert not store.set_carrier_state("r1", "acme", CarrierRoundState.ANSWERED)
    by_id = {c.carrier_id: c for c in store.carrier_rounds("r1")}
    assert by_id["acme"].state is CarrierRoundState.REFUSED
    assert (by_id["acme"].error_code, by_id["acme"].message) == (4, "policy refused")

    assert store.save_result(_result("r1", "blue"))
    assert not store.set_carrier_state("r1", "blue", CarrierRoundState.DISCONNECTED)
    by_id = {c.carrier_id: c for c in store.carrier_rounds("r1")}
    assert by_id["blue"].state is CarrierRoundState.ANSWERED


def test_set_carrier_state_for_carrier_not_in_round(store: RoundStore) -> None:
    store.create_round(_round(), ["acme"])
    with pytest.raises(NotFoundError):
        store.set_carrier_state("r1", "other", CarrierRoundState.SENT)


def test_save_result_is_idempotent_and_marks_answered(store: RoundStore) -> None:
    store.create_round(_round(), ["acme", "blue"])
    store.set_carrier_state("r1", "acme", CarrierRoundState.TIMED_OUT)
    assert store.save_result(_result("r1", "acme", b"first"))
    assert not store.save_result(_result("r1", "acme", b"second"))
    results = store.results("r1")
    assert len(results) == 1
    assert results[0].result_bytes == b"first"
    assert results[0] == _result("r1", "acme", b"first")
    states = {c.carrier_id: c.state for c in store.carrier_rounds("r1")}
    assert states == {"acme": CarrierRoundState.ANSWERED, "blue": CarrierRoundState.PENDING}


def test_save_result_for_unknown_round_or_carrier(store: RoundStore) -> None:
    store.create_round(_round(), ["acme"])
    with pytest.raises(NotFoundError):
        store.save_result(_result("nope", "acme"))
    with pytest.raises(NotFoundError):
        store.save_result(_result("r1", "stranger"))
    assert store.results("r1") == []


def test_open_rounds(store: RoundStore) -> None:
    states = [
        RoundState.CREATED,
        RoundState.DISPATCHED,
        RoundState.COLLECTING,
        RoundState.COMPLETE,
        RoundState.PARTIAL,
        RoundState.FAILED,
    ]
    for i, state in enumerate(states):
        store.create_round(_round(f"r{i}", minutes=i, state=state), ["acme"])
    assert [r.round_id for r in store.open_rounds()] == ["r0", "r1", "r2"]
    store.set_round_state("r1", RoundState.PARTIAL, finished_at=T0)
    assert [r.round_id for r in store.open_rounds()] == ["r0", "r2"]


def test_carrier_registry(store: RoundStore) -> None:
    store.upsert_carrier("blue", "Blue Plan")
    store.upsert_carrier("acme")
    store.upsert_carrier("blue")  # an empty name keeps the stored one
    store.upsert_carrier("acme", "Acme Health")
    assert store.carriers() == [("acme", "Acme Health"), ("blue", "Blue Plan")]


def test_persists_across_reopen(open_store: StoreOpener) -> None:
    with open_store() as store:
        store.upsert_carrier("acme", "Acme Health")
        store.create_round(_round(key="k"), ["acme", "blue"])
        store.set_round_state("r1", RoundState.COLLECTING)
        store.set_carrier_state("r1", "blue", CarrierRoundState.REFUSED, 5, "refused")
        assert store.save_result(_result("r1", "acme", b"\x00\xffbytes"))
    with open_store() as store:
        assert store.get_round("r1") == replace(_round(key="k"), state=RoundState.COLLECTING)
        assert store.results("r1")[0].result_bytes == b"\x00\xffbytes"
        states = {c.carrier_id: c.state for c in store.carrier_rounds("r1")}
        assert states == {"acme": CarrierRoundState.ANSWERED, "blue": CarrierRoundState.REFUSED}
        assert store.carriers() == [("acme", "Acme Health")]
        assert [r.round_id for r in store.open_rounds()] == ["r1"]
        # the idempotency key survives the restart too
        assert store.create_round(_round("r9", key="k"), ["x"]).round_id == "r1"


def test_file_database_is_wal_with_full_sync_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "rounds.db"
    RoundStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    finally:
        conn.close()
    store = RoundStore(path)  # reopening does not add a second version row
    store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    finally:
        conn.close()


def test_committed_before_return_visible_to_another_connection(
    open_store: StoreOpener,
) -> None:
    with open_store() as store, open_store() as other:
        store.create_round(_round(), ["acme"])
        assert store.save_result(_result("r1", "acme"))
        assert [r.carrier_id for r in other.results("r1")] == ["acme"]
        assert other.carrier_rounds("r1")[0].state is CarrierRoundState.ANSWERED


@pytest.mark.parametrize("connections", [1, 2], ids=["one-connection", "two-connections"])
def test_concurrent_duplicate_saves_store_one(open_store: StoreOpener, connections: int) -> None:
    """Eight deliveries of one result at once, through one store or two (two coordinator
    processes on one database): one is stored, the others are duplicates."""
    stores = [open_store() for _ in range(connections)]
    try:
        store = stores[0]
        store.create_round(_round(), ["acme"])
        outcomes: list[bool] = []
        lock = threading.Lock()

        def deliver(i: int) -> None:
            ok = stores[i % connections].save_result(_result("r1", "acme", f"copy-{i}".encode()))
            with lock:
                outcomes.append(ok)

        threads = [threading.Thread(target=deliver, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == [False] * 7 + [True]
        assert len(store.results("r1")) == 1
    finally:
        for s in stores:
            s.close()


def test_closed_store_refuses_use() -> None:
    store = RoundStore(":memory:")
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(Exception, match="closed"):
        store.list_rounds()


def test_save_results_stores_a_batch_in_one_go(store: RoundStore) -> None:
    store.create_round(_round("r1"), ["acme", "blue", "cove"])
    store.create_round(_round("r2", minutes=1), ["acme"])
    assert store.save_result(_result("r1", "cove", b"earlier"))
    first_acme = _result("r1", "acme", b"first")
    outcomes = store.save_results(
        [
            first_acme,
            _result("r1", "acme", b"second"),  # a duplicate delivery in the same batch
            _result("r1", "cove", b"later"),  # already stored before
            _result("r1", "other"),  # not part of the round
            _result("r2", "acme", b"other round"),
            _result("r9", "acme"),  # no such round
        ]
    )
    assert outcomes[:3] == [True, False, False]
    assert isinstance(outcomes[3], NotFoundError)
    assert outcomes[4] is True
    assert isinstance(outcomes[5], NotFoundError)
    kept = {(r.round_id, r.carrier_id): r.result_bytes for r in store.results("r1")}
    assert kept == {("r1", "acme"): b"first", ("r1", "cove"): b"earlier"}
    assert [r.result_bytes for r in store.results("r2")] == [b"other round"]
    states = {c.carrier_id: c.state for c in store.carrier_rounds("r1")}
    assert states == {
        "acme": CarrierRoundState.ANSWERED,
        "blue": CarrierRoundState.PENDING,
        "cove": CarrierRoundState.ANSWERED,
    }


def test_set_carriers_state_changes_only_carriers_not_yet_final(store: RoundStore) -> None:
    carriers = [f"c{i:03d}" for i in range(250)]  # more than one statement's worth
    store.create_round(_round(), carriers)
    assert store.save_result(_result("r1", "c001"))
    assert store.set_carrier_state("r1", "c002", CarrierRoundState.REFUSED, 4, "policy")
    changed = store.set_carriers_state(
        "r1",
        [(c, CarrierRoundState.SENT) for c in carriers[:200]]
        + [(c, CarrierRoundState.DISCONNECTED) for c in carriers[200:]],
    )
    assert changed == [c for c in carriers if c not in ("c001", "c002")]
    states = {c.carrier_id: c for c in store.carrier_rounds("r1")}
    assert states["c001"].state is CarrierRoundState.ANSWERED
    assert (states["c002"].state, states["c002"].message) == (CarrierRoundState.REFUSED, "policy")
    assert states["c000"].state is CarrierRoundState.SENT
    assert states["c249"].state is CarrierRoundState.DISCONNECTED
    with pytest.raises(NotFoundError):
        store.set_carriers_state(
            "r1", [("c000", CarrierRoundState.SENT), ("other", CarrierRoundState.SENT)]
        )
    assert store.carrier_rounds("r1")[0].state is CarrierRoundState.SENT  # nothing half-done
    assert store.set_carriers_state("r1", []) == []


def test_result_keys_name_the_stored_results_and_not_the_late_ones(store: RoundStore) -> None:
    store.create_round(_round(), ["acme", "blue"])
    assert store.result_keys("r1") == []
    store.save_result(_result("r1", "blue"))
    keys = store.result_keys("r1")
    assert keys == [(r.carrier_id, r.received_at) for r in store.results("r1")]
    assert keys == [("blue", T0 + dt.timedelta(seconds=30))]
    store.set_round_state("r1", RoundState.PARTIAL, T0 + dt.timedelta(minutes=5))
    store.save_result(_result("r1", "acme"))  # late: kept apart
    assert [r.carrier_id for r in store.results("r1", late=True)] == ["acme"]
    assert store.result_keys("r1") == keys


def test_a_store_of_another_schema_version_is_refused(open_store: StoreOpener) -> None:
    with open_store() as store, store.backend.transaction() as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="schema version"):
        open_store()


def test_a_scheduled_round_keeps_its_suite_and_due_time(store: RoundStore) -> None:
    due = dt.datetime(2026, 3, 5, 6, 30, tzinfo=dt.UTC)
    later = dt.datetime(2026, 4, 5, 6, 30, tzinfo=dt.UTC)
    store.create_round(_round("r1"), ["acme"])
    second = replace(
        _round("r3", minutes=2, key="schedule:cost:2"), suite="cost", scheduled_for=later
    )
    first = replace(_round("r2", minutes=1, key="schedule:cost:1"), suite="cost", scheduled_for=due)
    other = replace(_round("r4", minutes=3), suite="other", scheduled_for=due)
    for record in (second, first, other):
        assert store.create_round(record, ["acme"]) == record
    assert store.get_round("r2").suite == "cost"
    assert store.get_round("r2").scheduled_for == due
    assert store.get_round("r1").suite is None and store.get_round("r1").scheduled_for is None
    # Newest first, only the suite's; the suite's rounds in order of their due times.
    assert [r.round_id for r in store.list_rounds(suite="cost")] == ["r3", "r2"]
    assert [r.round_id for r in store.list_rounds()] == ["r4", "r3", "r2", "r1"]
    assert [r.round_id for r in store.suite_rounds("cost")] == ["r2", "r3"]
    assert store.suite_rounds("none") == []
    assert store.last_scheduled("cost") == later
    assert store.last_scheduled("other") == due
    assert store.last_scheduled("another") is None
    # The same run again (its key) is the round stored, written once.
    again = replace(first, round_id="r9")
    assert store.create_round(again, ["acme"]).round_id == "r2"
    assert len(store.suite_rounds("cost")) == 2
    # Open rounds carry it too (what a restart resumes).
    assert {r.round_id: r.suite for r in store.open_rounds()}["r3"] == "cost"
    with pytest.raises(InvalidRequestError):
        store.create_round(replace(_round("r5"), suite="cost"), ["acme"])


def test_a_store_from_before_schedules_gets_their_table(open_store: StoreOpener) -> None:
    with open_store() as store:
        store.create_round(_round("r1"), ["acme"])
        with store.backend.transaction() as conn:
            conn.execute("DROP TABLE scheduled_rounds")
    with open_store() as store:
        assert store.get_round("r1").suite is None
        due = dt.datetime(2026, 3, 5, tzinfo=dt.UTC)
        store.create_round(replace(_round("r2"), suite="cost", scheduled_for=due), ["acme"])
        assert store.last_scheduled("cost") == due
        with store.backend.reading() as conn:
            row = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        assert row["v"] == SCHEMA_VERSION
