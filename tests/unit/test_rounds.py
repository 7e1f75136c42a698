"""The round manager's own costs: dispatch, storing results, waking watchers (no sockets)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from coordinator import rounds as rounds_module
from coordinator.rounds import RoundManager
from coordinator.store import Backend, CarrierRoundState, RoundState, RoundStore, StoredResult
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import RequestSpec
from fedoversight.errors import InvalidRequestError, OversightError
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.v1 import federation_pb2, types_pb2
from tests.conftest import BackendOpener
from tests.unit.trust_kit import result_for

CARRIERS = [f"c{i:03d}" for i in range(1, 9)]


class Link:
    def __init__(self, store: CountingStore) -> None:
        self.store = store
        self.sent: list[tuple[str, federation_pb2.CoordinatorMessage]] = []
        #: For each ack: was the acknowledged carrier's result in the store when it was sent?
        self.acked_stored: list[bool] = []

    def is_connected(self, carrier_id: str) -> bool:
        return True

    def send(self, carrier_id: str, message: federation_pb2.CoordinatorMessage) -> bool:
        self.sent.append((carrier_id, message))
        if message.HasField("ack"):
            round_id = message.ack.request_id.removesuffix(".q")
            self.acked_stored.append(
                carrier_id in {r.carrier_id for r in self.store.results(round_id)}
            )
        return True


def signed_results(
    spec: RequestSpec, signed: types_pb2.SignedRequest, keys: dict[str, Signer]
) -> dict[str, types_pb2.SignedResult]:
    """Each carrier's answer to ``spec``, signed with its key."""
    out = {}
    for c, key in keys.items():
        data = result_for(spec, bytes(signed.request), c)
        out[c] = types_pb2.SignedResult(result=data, signature=key.sign(data), key_id=key.key_id)
    return out


class CountingStore(RoundStore):
    """Counts the writes; can hold the first batch of results until released."""

    def __init__(self, backend: Backend | Path) -> None:
        super().__init__(backend)
        self.calls: dict[str, int] = {}
        self.batches: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def set_carrier_state(self, *args: object, **kwargs: object) -> bool:
        self._count("set_carrier_state")
        return super().set_carrier_state(*args, **kwargs)  # type: ignore[arg-type]

    def set_carriers_state(
        self, round_id: str, states: Sequence[tuple[str, CarrierRoundState]]
    ) -> list[str]:
        self._count("set_carriers_state")
        return super().set_carriers_state(round_id, states)

    def set_round_state(self, *args: object, **kwargs: object) -> None:
        self._count("set_round_state")
        super().set_round_state(*args, **kwargs)  # type: ignore[arg-type]

    def save_results(self, results: Sequence[StoredResult]) -> list[bool | OversightError]:
        self.batches.append(len(results))
        self.holding.set()
        self.hold.wait(10)
        return super().save_results(results)


async def test_dispatch_sends_to_every_carrier_then_records_them_in_one_write(
    store_backend: BackendOpener,
) -> None:
    store = CountingStore(store_backend())
    link = Link(store)
    rounds = RoundManager(store, link, signer=Signer.generate())
    try:
        spec = rounds.build_request(
            Period.parse("2026-01"), [wire.make_query("enrollment.member_months")], CARRIERS
        )
        record = await rounds.create_round(rounds.sign(spec), CARRIERS, deadline_seconds=60)
        assert sorted(c for c, m in link.sent if m.HasField("request")) == CARRIERS
        assert store.calls.get("set_carrier_state", 0) == 0
        assert store.calls["set_carriers_state"] == 1
        states = {c.carrier_id: c.state for c in store.carrier_rounds(record.round_id)}
        assert states == {c: CarrierRoundState.SENT for c in CARRIERS}
    finally:
        await rounds.close()
        store.close()


async def test_a_burst_of_results_is_stored_in_few_commits_each_before_its_ack(
    store_backend: BackendOpener,
) -> None:
    keys = {c: Signer.generate() for c in CARRIERS}
    store = CountingStore(store_backend())
    link = Link(store)
    rounds = RoundManager(
        store,
        link,
        signer=Signer.generate(),
        node_verifiers={c: k.verifier for c, k in keys.items()},
    )
    try:
        spec = rounds.build_request(
            Period.parse("2026-01"), [wire.make_query("enrollment.member_months")], CARRIERS
        )
        signed = rounds.sign(spec)
        record = await rounds.create_round(signed, CARRIERS, deadline_seconds=60)
        results = signed_results(spec, signed, keys)
        store.hold.clear()  # the first commit waits: everything after it queues up
        first = asyncio.create_task(rounds.on_result(CARRIERS[0], results[CARRIERS[0]]))
        assert await asyncio.to_thread(store.holding.wait, 10)
        rest = [asyncio.create_task(rounds.on_result(c, results[c])) for c in CARRIERS[1:]]
        rest.append(asyncio.create_task(rounds.on_result(CARRIERS[1], results[CARRIERS[1]])))
        await asyncio.sleep(0.05)
        assert not any(m.HasField("ack") for _, m in link.sent)  # nothing acked unstored
        store.hold.set()
        await asyncio.gather(first, *rest)
        assert store.batches == [1, len(CARRIERS)]  # a duplicate delivery rides along
        acks = [c for c, m in link.sent if m.HasField("ack")]
        assert sorted(acks) == sorted([*CARRIERS, CARRIERS[1]])
        assert all(link.acked_stored)
        assert store.get_round(record.round_id).state is RoundState.COMPLETE
        # Collecting, then complete: the first answers do not each write the round's state.
        assert store.calls["set_round_state"] == 3  # dispatched, collecting, complete
    finally:
        await rounds.close()
        store.close()


async def test_a_change_made_while_a_watcher_looks_away_wakes_it_at_once(
    store_backend: BackendOpener,
) -> None:
    store = RoundStore(store_backend())
    rounds = RoundManager(store, Link(store), signer=Signer.generate())  # type: ignore[arg-type]
    try:
        seen = rounds.changes
        await rounds._notify()  # a change while the watcher was busy sending what it saw
        loop = asyncio.get_running_loop()
        started = loop.time()
        await rounds.wait_for_change(timeout=5.0, since=seen)
        assert loop.time() - started < 1.0
        # Nothing new since: it waits for the next change (here: until the timeout).
        started = loop.time()
        await rounds.wait_for_change(timeout=0.2, since=rounds.changes)
        assert loop.time() - started >= 0.15
        waiter = asyncio.create_task(rounds.wait_for_change(timeout=5.0, since=rounds.changes))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await rounds._notify()
        await asyncio.wait_for(waiter, 1.0)
    finally:
        await rounds.close()
        store.close()


class Counted:
    """Counts calls of a module function (replaced with ``monkeypatch``)."""

    def __init__(self, real: Callable[..., object]) -> None:
        self.real = real
        self.calls = 0

    def __call__(self, *args: object) -> object:
        self.calls += 1
        return self.real(*args)


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counted]:
    counted = {
        "requests": Counted(wire.decode_request_bytes),
        "results": Counted(wire.decode_result_bytes),
        "tables": Counted(rounds_module.round_tables),
    }
    monkeypatch.setattr(wire, "decode_request_bytes", counted["requests"])
    monkeypatch.setattr(wire, "decode_result_bytes", counted["results"])
    monkeypatch.setattr(rounds_module, "round_tables", counted["tables"])
    return counted


async def test_a_built_request_is_kept_typed_and_equals_its_signed_bytes_decoded(
    store_backend: BackendOpener, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RoundStore(store_backend())
    rounds = RoundManager(store, Link(store), signer=Signer.generate())  # type: ignore[arg-type]
    try:
        queries = [
            wire.make_query(
                "enrollment.member_months", group_by=[D.STATE], filters={D.STATE: ["VA", "MD"]}
            ),
            wire.make_query("rx.specialty_share", parameters={"cost_per_30_days": 600}),
        ]
        spec = rounds.build_request(Period.parse("2026-01:2026-03"), queries, CARRIERS)
        signed = rounds.sign(spec)
        # Keeping the built request is the same as decoding what was signed.
        assert wire.decode_request_bytes(bytes(signed.request)) == spec
        counted = _counting(monkeypatch)
        record = await rounds.create_round(signed, CARRIERS, deadline_seconds=60, request=spec)
        assert record.request_bytes == bytes(signed.request)  # what is signed is stored
        assert rounds.request_of(record) is spec
        assert rounds.request_of(store.get_round(record.round_id)) is spec
        assert counted["requests"].calls == 0
        # A built request addressed to a carrier id not of the wire's form is refused, as
        # decoding its bytes would.
        odd = rounds.build_request(Period.parse("2026-01"), queries, ["c 1"])
        with pytest.raises(InvalidRequestError, match="carrier id"):
            await rounds.create_round(rounds.sign(odd), ["c 1"], request=odd)
    finally:
        await rounds.close()
        store.close()
    # After a restart, a round is decoded once when loaded.
    store = RoundStore(store_backend())
    rounds = RoundManager(store, Link(store), signer=Signer.generate())  # type: ignore[arg-type]
    try:
        await rounds.resume()
        assert counted["requests"].calls == 1
        loaded = rounds.request_of(store.get_round(record.round_id))
        assert loaded == spec
        assert rounds.request_of(store.get_round(record.round_id)) is loaded
        assert counted["requests"].calls == 1
    finally:
        await rounds.close()
        store.close()


async def test_a_rounds_tables_are_computed_once_per_change_of_its_results(
    store_backend: BackendOpener, monkeypatch: pytest.MonkeyPatch
) -> None:
    carriers = CARRIERS[:3]
    keys = {c: Signer.generate() for c in carriers}
    store = RoundStore(store_backend())
    rounds = RoundManager(
        store,
        Link(store),
        signer=Signer.generate(),  # type: ignore[arg-type]
        node_verifiers={c: k.verifier for c, k in keys.items()},
    )
    try:
        spec = rounds.build_request(
            Period.parse("2026-01"), [wire.make_query("enrollment.member_months")], carriers
        )
        signed = rounds.sign(spec)
        record = await rounds.create_round(signed, carriers, deadline_seconds=1, request=spec)
        results = signed_results(spec, signed, keys)
        counted = _counting(monkeypatch)
        first, second, late = carriers
        await rounds.on_result(first, results[first])
        assert counted["results"].calls == 1  # decoded on arrival, verified, kept
        one = await rounds.tables(record)
        assert [t.scope for t in one] == ["program", first]
        assert await rounds.tables(record) is one  # unchanged: not computed again
        await rounds.on_result(second, results[second])
        two = await rounds.tables(record)
        assert [t.scope for t in two] == ["program", first, second]
        assert (counted["results"].calls, counted["tables"].calls) == (2, 2)
        # The deadline passes: partial, and the same tables, from the results decoded on
        # arrival.
        # (The finished state is written on the store's thread after the round leaves the
        # open ones: wait for the store, not for the round manager.)
        await wait_until(lambda: store.get_round(record.round_id).finished_at is not None)
        assert not rounds.is_open(record.round_id)
        record = store.get_round(record.round_id)
        assert record.state is RoundState.PARTIAL
        assert await rounds.tables(record) is two
        # A late result is kept apart: it changes nothing of the round's tables.
        await rounds.on_result(late, results[late])
        assert [r.carrier_id for r in store.results(record.round_id, late=True)] == [late]
        assert await rounds.tables(record) is two
        assert (counted["results"].calls, counted["tables"].calls) == (3, 2)
    finally:
        await rounds.close()
        store.close()
    # After a restart the stored results are decoded once, when the tables are first asked.
    store = RoundStore(store_backend())
    rounds = RoundManager(store, Link(store), signer=Signer.generate())  # type: ignore[arg-type]
    try:
        again = await rounds.tables(record)
        assert again == two
        assert await rounds.tables(record) is again
        assert (counted["results"].calls, counted["tables"].calls) == (5, 3)
    finally:
        await rounds.close()
        store.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_a_round_goes_on_from_its_store_under_another_coordinator(
    store_backend: BackendOpener,
) -> None:
    """A coordinator stops mid-round; another one opening the same store (with PostgreSQL: on
    another host) resumes the round, takes the other answers, and completes it."""
    carriers = CARRIERS[:3]
    keys = {c: Signer.generate() for c in carriers}
    operator = Signer.generate()
    verifiers = {c: k.verifier for c, k in keys.items()}
    store = RoundStore(store_backend())
    rounds = RoundManager(store, Link(store), signer=operator, node_verifiers=verifiers)  # type: ignore[arg-type]
    try:
        spec = rounds.build_request(
            Period.parse("2026-01"), [wire.make_query("enrollment.member_months")], carriers
        )
        signed = rounds.sign(spec)
        record = await rounds.create_round(signed, carriers, deadline_seconds=60)
        results = signed_results(spec, signed, keys)
        await rounds.on_result(carriers[0], results[carriers[0]])
    finally:
        await rounds.close()
        store.close()

    store = RoundStore(store_backend())
    link = Link(store)
    rounds = RoundManager(store, link, signer=operator, node_verifiers=verifiers)  # type: ignore[arg-type]
    try:
        await rounds.resume()
        assert rounds.is_open(record.round_id)
        # The first answer is sent again (its ack was lost in the move): a duplicate.
        for c in carriers:
            await rounds.on_result(c, results[c])
        await wait_until(lambda: store.get_round(record.round_id).state is RoundState.COMPLETE)
        stored = store.results(record.round_id)
        assert [r.carrier_id for r in stored] == carriers
        assert stored[0].result_bytes == bytes(results[carriers[0]].result)
        assert sorted(c for c, m in link.sent if m.HasField("ack")) == carriers
        assert all(link.acked_stored)
    finally:
        await rounds.close()
        store.close()
