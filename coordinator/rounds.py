"""The round lifecycle: create, dispatch, collect, finish (complete / partial / failed).

A round is one signed MetricRequest sent to every carrier asked. Everything is persisted in
the round store before it is acknowledged (to the operator on creation, to the node on a
result), so a coordinator restart resumes open rounds. A carrier that is not connected gets
the request when it connects; one that drops mid-round may come back within a grace period;
at the deadline every carrier without an answer is marked and the round finishes with the
rest, so a round never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from coordinator.combine import ScopedTable
from coordinator.monitoring import CoordinatorMetrics, error_code_name
from coordinator.receipts import check_answers, check_result_shape, verify_result
from coordinator.results import TABLES_KEPT, ResultsKey, TableCache, round_tables
from coordinator.store import (
    CarrierRound,
    CarrierRoundState,
    RoundRecord,
    RoundState,
    RoundStore,
    StoredResult,
)
from fedoversight import catalogue, wire
from fedoversight.domain import QuerySpec, RequestSpec, ResultSpec
from fedoversight.errors import AuthenticationError, InvalidRequestError, OversightError
from fedoversight.logs import log_fields
from fedoversight.periods import Period
from fedoversight.signing import Signer, Verifier
from fedoversight.v1 import federation_pb2, types_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

_ANSWER_STATES = (CarrierRoundState.ANSWERED, CarrierRoundState.REFUSED)

#: Clock skew tolerated for requests operators signed on their own machines.
CLOCK_SKEW = dt.timedelta(minutes=5)

#: Decoded requests of rounds kept (beside the open rounds' own), the least recently used
#: dropped first: above the most rounds one ListRounds call returns.
REQUESTS_KEPT = 2048

__all__ = ["RoundManager", "check_result_shape", "new_request"]


class NodeLink(Protocol):
    """What the round manager needs of the node hub."""

    def is_connected(self, carrier_id: str) -> bool: ...

    def send(self, carrier_id: str, message: federation_pb2.CoordinatorMessage) -> bool: ...


@dataclass
class _OpenRound:
    record: RoundRecord
    #: ``record.request_bytes`` decoded (or the request as built, before it was signed).
    request: RequestSpec
    signed: types_pb2.SignedRequest
    states: dict[str, CarrierRoundState]
    disconnected_at: dict[str, float] = field(default_factory=dict)
    timer: asyncio.Task[None] | None = None
    #: Each stored result decoded, by carrier: as verified on arrival (or, for results stored
    #: before a restart, as first decoded for the round's tables).
    results: dict[str, ResultSpec] = field(default_factory=dict)
    #: Each carrier's part as stored (kept in step with every write of it: what watchers of
    #: the open round read, rather than the store).
    carriers: dict[str, CarrierRound] = field(default_factory=dict)
    #: The carriers without an answer or refusal yet (what finishing the round waits for).
    unsettled: set[str] = field(default_factory=set)
    #: ``wire.digest`` of the request bytes (each result must name it).
    request_digest: bytes = b""

    def __post_init__(self) -> None:
        self.unsettled = {c for c, s in self.states.items() if s not in _ANSWER_STATES}
        self.request_digest = wire.digest(self.record.request_bytes)

    def set(
        self, carrier_id: str, state: CarrierRoundState, error_code: int = 0, message: str = ""
    ) -> None:
        """A carrier's state, once it is stored."""
        self.states[carrier_id] = state
        self.carriers[carrier_id] = CarrierRound(
            round_id=self.record.round_id,
            carrier_id=carrier_id,
            state=state,
            error_code=error_code,
            message=message,
            updated_at=_now(),
        )
        if state in _ANSWER_STATES:
            self.unsettled.discard(carrier_id)
        else:
            self.unsettled.add(carrier_id)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_request(
    period: Period,
    queries: Sequence[QuerySpec],
    ttl: dt.timedelta,
    now: dt.datetime | None = None,
    carriers: Sequence[str] = (),
    deadline: dt.timedelta | None = None,
) -> RequestSpec:
    """A fresh request (new round id, nonce and validity window) addressed to ``carriers``,
    ready to be signed; ``deadline``: the round's, which nodes take as their time budget."""
    issued = now or _now()
    round_id = f"r-{issued:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
    return RequestSpec(
        request_id=f"{round_id}.q",
        round_id=round_id,
        catalogue_version=catalogue.CATALOGUE_VERSION,
        period=period,
        queries=tuple(queries),
        issued_at=issued,
        expires_at=issued + ttl,
        nonce=os.urandom(16),
        carriers=tuple(sorted(set(carriers))),
        answer_by=issued + deadline if deadline is not None else None,
    )


def sign_request(request: RequestSpec, signer: Signer) -> types_pb2.SignedRequest:
    data = wire.request_to_pb(request).SerializeToString()
    return types_pb2.SignedRequest(request=data, signature=signer.sign(data), key_id=signer.key_id)


class RoundManager:
    def __init__(
        self,
        store: RoundStore,
        link: NodeLink,
        *,
        signer: Signer | None,
        node_verifiers: Mapping[str, Verifier] | None = None,
        operator_verifier: Verifier | None = None,
        allow_unsigned: bool = False,
        request_ttl: dt.timedelta = dt.timedelta(hours=1),
        default_deadline: dt.timedelta = dt.timedelta(minutes=5),
        disconnect_grace: float = 5.0,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        """``node_verifiers`` hold each carrier's result key: with them every result must be
        signed by its carrier's key (a carrier without one has all its results rejected);
        ``None`` (insecure demos only) accepts unsigned results. ``allow_unsigned`` lets the
        coordinator dispatch unsigned requests when it holds no operator key (demos only).
        ``metrics``: where rounds, results and refusals are counted (a registry of its own
        when not given)."""
        self._metrics = metrics if metrics is not None else CoordinatorMetrics()
        self._store = store
        self._link = link
        self._signer = signer
        self._node_verifiers = dict(node_verifiers) if node_verifiers is not None else None
        self._operator_verifier = operator_verifier or (
            signer.verifier if signer is not None else None
        )
        self._allow_unsigned = allow_unsigned
        self._request_ttl = request_ttl
        self._default_deadline = default_deadline
        self._grace = disconnect_grace
        self._open: dict[str, _OpenRound] = {}
        # Bumped on every change of a round or of a carrier's part in one, so a watcher can
        # tell whether something changed while it was not waiting (see wait_for_change).
        self._changes = 0
        self._changed = asyncio.Condition()
        # The store gets a thread of its own: its short writes must never queue behind other
        # blocking work sharing the process (the simulated federation runs nodes beside it).
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="round-store")
        self._later: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Results waiting to be stored: whatever arrives while one batch is being committed
        # goes into the next, so a burst of answers costs a few syncs rather than one each.
        self._unsaved: list[tuple[StoredResult, asyncio.Future[bool]]] = []
        self._saver: asyncio.Task[None] | None = None
        # Each round's request decoded once (or kept as built): the signed bytes stay what is
        # stored and verified; this is what the coordinator itself reads of them.
        self._requests: OrderedDict[str, RequestSpec] = OrderedDict()
        self._tables = TableCache()
        # A finished round's results as decoded on arrival, until its tables are computed
        # from them (the most recently finished rounds).
        self._finished: OrderedDict[str, dict[str, ResultSpec]] = OrderedDict()

    async def db(self, call: Callable[..., T], *args: object) -> T:
        """Run a round-store call on the store's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store_thread, functools.partial(call, *args))

    # --- creating and dispatching ---------------------------------------------------------

    def build_request(
        self,
        period: Period,
        queries: Sequence[QuerySpec],
        carriers: Sequence[str],
        deadline_seconds: int = 0,
    ) -> RequestSpec:
        """A request for a round with this deadline (the default one when 0)."""
        deadline = (
            dt.timedelta(seconds=deadline_seconds) if deadline_seconds else self._default_deadline
        )
        return new_request(period, queries, self._request_ttl, carriers=carriers, deadline=deadline)

    def sign(self, request: RequestSpec) -> types_pb2.SignedRequest:
        """Sign a request the coordinator built with the operator key it holds."""
        if self._signer is not None:
            return sign_request(request, self._signer)
        if not self._allow_unsigned:
            raise AuthenticationError(
                "the coordinator holds no operator signing key: sign requests on the operator's"
                " side"
            )
        return types_pb2.SignedRequest(request=wire.request_to_pb(request).SerializeToString())

    def check_signed_request(
        self, signed: types_pb2.SignedRequest, now: dt.datetime | None = None
    ) -> RequestSpec:
        """Admit a request an operator signed on their side: signature, decoding, validity."""
        if self._operator_verifier is None:
            raise AuthenticationError("the coordinator has no operator key to check requests")
        data = bytes(signed.request)
        self._operator_verifier.verify(data, bytes(signed.signature), signed.key_id)
        request = wire.decode_request_bytes(data)
        now = now or _now()
        if request.expires_at <= now or request.issued_at > now + CLOCK_SKEW:
            raise AuthenticationError("the signed request is outside its validity window")
        return request

    async def launch(
        self,
        period: Period,
        queries: Sequence[QuerySpec],
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline_seconds: int = 0,
        idempotency_key: str | None = None,
        scheduled: tuple[str, dt.datetime] | None = None,
    ) -> RoundRecord:
        """A round whose request the coordinator builds and signs with the operator key it
        holds (CreateRound without a signed request, and the schedule's runs); ``carriers``
        empty: every registered carrier. See :meth:`create_round`."""
        registered = [c for c, _ in await self.db(self._store.carriers)]
        carriers = list(carriers) or registered
        check_registered(carriers, registered)
        spec = self.build_request(period, queries, carriers, deadline_seconds)
        return await self.create_round(
            self.sign(spec),
            carriers,
            quorum=quorum,
            deadline_seconds=deadline_seconds,
            idempotency_key=idempotency_key,
            request=spec,
            scheduled=scheduled,
        )

    async def create_round(
        self,
        signed: types_pb2.SignedRequest,
        carriers: Sequence[str],
        *,
        quorum: int = 0,
        deadline_seconds: int = 0,
        idempotency_key: str | None = None,
        request: RequestSpec | None = None,
        scheduled: tuple[str, dt.datetime] | None = None,
    ) -> RoundRecord:
        """Store a round for ``signed`` and dispatch it. ``request`` is ``signed.request`` as
        :meth:`build_request` built it or :meth:`check_signed_request` decoded it (the bytes
        are then not decoded again); without it the bytes are decoded here. ``scheduled``:
        (suite, due time) of a round a schedule runs, stored with it."""
        if request is None:
            request = wire.decode_request_bytes(bytes(signed.request))
        else:
            _check_addressed(request)
        if not carriers:
            raise InvalidRequestError("a round needs at least one carrier")
        if sorted(set(carriers)) != list(request.carriers):
            raise InvalidRequestError("the round's carriers are not those its request names")
        quorum = quorum or 1
        if quorum > len(carriers):
            raise InvalidRequestError("quorum larger than the carriers asked")
        deadline = (
            dt.timedelta(seconds=deadline_seconds) if deadline_seconds else self._default_deadline
        )
        created = _now()
        record = RoundRecord(
            round_id=request.round_id,
            request_bytes=bytes(signed.request),
            signature=bytes(signed.signature),
            key_id=signed.key_id,
            state=RoundState.CREATED,
            quorum=quorum,
            deadline_at=created + deadline,
            created_at=created,
            idempotency_key=idempotency_key or None,
            suite=scheduled[0] if scheduled is not None else None,
            scheduled_for=scheduled[1] if scheduled is not None else None,
        )
        stored = await self.db(self._store.create_round, record, list(carriers))
        if stored.round_id != record.round_id:
            before = self.request_of(stored)
            if (before.period, before.queries, before.carriers) != (
                request.period,
                request.queries,
                request.carriers,
            ):
                raise InvalidRequestError(
                    "this idempotency key was used for another round: a different period,"
                    " queries or carriers"
                )
            log.info(
                "idempotent create: round %s exists",
                stored.round_id,
                extra={"round_id": stored.round_id},
            )
            return stored
        self._keep_request(request)
        self._metrics.rounds_created.inc()
        await self._open_round(stored, request)
        return stored

    @property
    def open_count(self) -> int:
        """How many rounds are open."""
        return len(self._open)

    def request_of(self, record: RoundRecord) -> RequestSpec:
        """The round's request, decoded from its stored bytes once (a round this coordinator
        created keeps the request it built or checked)."""
        live = self._open.get(record.round_id)
        if live is not None:
            return live.request
        request = self._requests.get(record.round_id)
        if request is None:
            request = wire.decode_request_bytes(record.request_bytes)
            self._keep_request(request)
        else:
            self._requests.move_to_end(record.round_id)
        return request

    def _keep_request(self, request: RequestSpec) -> None:
        self._requests[request.round_id] = request
        self._requests.move_to_end(request.round_id)
        while len(self._requests) > REQUESTS_KEPT:
            self._requests.popitem(last=False)

    async def _open_round(self, record: RoundRecord, request: RequestSpec) -> None:
        signed = types_pb2.SignedRequest(
            request=record.request_bytes, signature=record.signature, key_id=record.key_id
        )
        carrier_rounds = await self.db(self._store.carrier_rounds, record.round_id)
        live = _OpenRound(
            record=record,
            request=request,
            signed=signed,
            states={c.carrier_id: c.state for c in carrier_rounds},
            carriers={c.carrier_id: c for c in carrier_rounds},
        )
        self._open[record.round_id] = live
        message = federation_pb2.CoordinatorMessage(request=signed)
        # Every connected carrier gets the request at once; their states are then recorded
        # in one transaction (not one sync per carrier before the next one is sent).
        sent = [
            carrier_id
            for carrier_id, state in live.states.items()
            if state not in _ANSWER_STATES and self._link.send(carrier_id, message)
        ]
        await self._set_states(live, [(c, CarrierRoundState.SENT) for c in sent])
        if record.state is RoundState.CREATED:
            await self._set_round_state(live, RoundState.DISPATCHED)
        live.timer = asyncio.create_task(self._deadline(live))
        await self._maybe_finish(live)

    async def resume(self) -> None:
        """Reopen rounds left open by a previous run (after a restart)."""
        for record in await self.db(self._store.open_rounds):
            log.info("resuming round %s", record.round_id, extra={"round_id": record.round_id})
            await self._open_round(record, self.request_of(record))

    async def close(self) -> None:
        self._closed = True
        for handle in self._later:
            handle.cancel()
        for live in list(self._open.values()):
            if live.timer is not None:
                live.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._store_thread.shutdown(wait=True)

    # --- events from nodes ----------------------------------------------------------------

    async def on_connect(self, carrier_id: str) -> None:
        for live in list(self._open.values()):
            state = live.states.get(carrier_id)
            if state is None or state in _ANSWER_STATES:
                continue
            live.disconnected_at.pop(carrier_id, None)
            if self._link.send(carrier_id, federation_pb2.CoordinatorMessage(request=live.signed)):
                await self._set_state(live, carrier_id, CarrierRoundState.SENT)

    async def on_disconnect(self, carrier_id: str) -> None:
        loop = asyncio.get_running_loop()
        for live in list(self._open.values()):
            if live.states.get(carrier_id) in (CarrierRoundState.SENT, CarrierRoundState.PENDING):
                live.disconnected_at[carrier_id] = loop.time()
                await self._set_state(live, carrier_id, CarrierRoundState.DISCONNECTED)
                self._later.add(loop.call_later(self._grace, self._recheck, live))

    def _recheck(self, live: _OpenRound) -> None:
        if not self._closed:
            task = asyncio.ensure_future(self._maybe_finish(live))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def on_result(self, carrier_id: str, signed: types_pb2.SignedResult) -> None:
        try:
            result = self._verify_result(carrier_id, signed)
            if result.round_id not in self._open:
                await self._check_late(result)
        except OversightError as exc:
            log.warning("rejected a result from %s: %s", carrier_id, exc.detail)
            self._metrics.result_rejected(exc.code)
            return
        ids = {"round_id": result.round_id}
        live = self._open.get(result.round_id)
        stored = StoredResult(
            round_id=result.round_id,
            carrier_id=carrier_id,
            result_bytes=bytes(signed.result),
            signature=bytes(signed.signature),
            key_id=signed.key_id,
            received_at=_now(),
        )
        try:
            fresh = await self._save_result(stored)
        except OversightError as exc:
            log.warning(
                "result from %s for an unknown round: %s", carrier_id, exc.detail, extra=ids
            )
            self._metrics.result_rejected(exc.code)
            return
        if fresh:
            self._metrics.results_received.inc()
        if live is None:
            log.info(
                "a late result from %s for round %s, which has finished: kept apart",
                carrier_id,
                result.round_id,
                extra=ids,
            )
        # Persisted: the node may forget it now.
        self._link.send(
            carrier_id,
            federation_pb2.CoordinatorMessage(ack=federation_pb2.Ack(request_id=result.request_id)),
        )
        if live is not None and fresh:
            live.results[carrier_id] = result  # what is stored, decoded and verified
            live.set(carrier_id, CarrierRoundState.ANSWERED)
            if live.record.state is RoundState.DISPATCHED:
                await self._set_round_state(live, RoundState.COLLECTING)
            await self._notify()
            await self._maybe_finish(live)

    async def _save_result(self, stored: StoredResult) -> bool:
        """Store a result (committed when this returns), in a batch with the results that
        arrive meanwhile; True when it was new."""
        saved: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._unsaved.append((stored, saved))
        if self._saver is None or self._saver.done():
            self._saver = asyncio.create_task(self._save_batches())
            self._tasks.add(self._saver)
            self._saver.add_done_callback(self._tasks.discard)
        return await saved

    async def _save_batches(self) -> None:
        while self._unsaved:
            batch, self._unsaved = self._unsaved, []
            try:
                outcomes = await self.db(self._store.save_results, [s for s, _ in batch])
            except asyncio.CancelledError:  # closing: nobody waits for these any more
                for _, saved in [*batch, *self._unsaved]:
                    saved.cancel()
                self._unsaved = []
                raise
            except Exception as exc:
                for _, saved in batch:
                    if not saved.done():
                        saved.set_exception(exc)
                continue
            for (_, saved), outcome in zip(batch, outcomes, strict=True):
                if saved.done():
                    continue
                if isinstance(outcome, BaseException):
                    saved.set_exception(outcome)
                else:
                    saved.set_result(outcome)

    async def on_refusal(self, carrier_id: str, refusal: types_pb2.Refusal) -> None:
        live = self._open.get(refusal.round_id) or next(
            (lv for lv in self._open.values() if lv.request.request_id == refusal.request_id),
            None,
        )
        if live is None or carrier_id not in live.states:
            log.info("refusal from %s for no open round", carrier_id)
            if wire.ID_RE.fullmatch(refusal.request_id):
                # Nothing will change (the round is closed, or was never the node's), so the
                # node may stop resending it.
                self._link.send(
                    carrier_id,
                    federation_pb2.CoordinatorMessage(
                        ack=federation_pb2.Ack(request_id=refusal.request_id)
                    ),
                )
            return
        text = refusal.public_message[:200]
        if live.states[carrier_id] not in _ANSWER_STATES:
            # The code's name only: the message is the carrier's own words.
            log.info(
                "round %s: %s refused (%s)",
                live.record.round_id,
                carrier_id,
                error_code_name(refusal.code),
                extra={"round_id": live.record.round_id},
            )
            self._metrics.refusal(refusal.code)
        await self._set_state(live, carrier_id, CarrierRoundState.REFUSED, refusal.code, text)
        self._link.send(
            carrier_id,
            federation_pb2.CoordinatorMessage(
                ack=federation_pb2.Ack(request_id=live.request.request_id)
            ),
        )
        await self._maybe_finish(live)

    def _verify_result(self, carrier_id: str, signed: types_pb2.SignedResult) -> ResultSpec:
        """The receipt check: the carrier's signature, then that it answers its request."""
        verifiers = self._node_verifiers
        result = verify_result(
            carrier_id,
            bytes(signed.result),
            bytes(signed.signature),
            signed.key_id,
            verifier=verifiers.get(carrier_id) if verifiers is not None else None,
            require_signature=verifiers is not None,
        )
        live = self._open.get(result.round_id)
        if live is not None:
            check_answers(result, live.record.request_bytes, live.request, live.request_digest)
        return result

    async def _check_late(self, result: ResultSpec) -> None:
        """A result for a round that is not open must answer that round's request all the
        same (a carrier-signed answer to another request is never stored)."""
        try:
            record = await self.db(self._store.get_round, result.round_id)
        except OversightError:
            raise InvalidRequestError("a result for no known round") from None
        check_answers(result, record.request_bytes, self.request_of(record))

    # --- finishing ------------------------------------------------------------------------

    async def _deadline(self, live: _OpenRound) -> None:
        delay = (live.record.deadline_at - _now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        finals = [
            (
                carrier_id,
                {
                    CarrierRoundState.PENDING: CarrierRoundState.NOT_CONNECTED,
                    CarrierRoundState.SENT: CarrierRoundState.TIMED_OUT,
                }.get(state, state),
            )
            for carrier_id, state in live.states.items()
            if state not in _ANSWER_STATES
        ]
        await self._set_states(live, finals)
        await self._finish(live)

    def _settled(self, live: _OpenRound, carrier_id: str, now: float) -> bool:
        state = live.states[carrier_id]
        if state in _ANSWER_STATES:
            return True
        if state is CarrierRoundState.DISCONNECTED:
            return now - live.disconnected_at.get(carrier_id, now) >= self._grace
        return False

    async def _maybe_finish(self, live: _OpenRound) -> None:
        if live.record.round_id not in self._open:
            return
        now = asyncio.get_running_loop().time()
        if all(self._settled(live, c, now) for c in live.unsettled):
            await self._finish(live)

    async def _finish(self, live: _OpenRound) -> None:
        if self._open.pop(live.record.round_id, None) is None:
            return
        if live.results:
            self._finished[live.record.round_id] = live.results
            while len(self._finished) > TABLES_KEPT:
                self._finished.popitem(last=False)
        if live.timer is not None and live.timer is not asyncio.current_task():
            live.timer.cancel()
        answered = sum(1 for s in live.states.values() if s is CarrierRoundState.ANSWERED)
        if answered == len(live.states):
            state = RoundState.COMPLETE
        elif answered >= live.record.quorum:
            state = RoundState.PARTIAL
        else:
            state = RoundState.FAILED
        # Counted before watchers are told: whoever sees the outcome finds it counted.
        self._metrics.round_finished(state, (_now() - live.record.created_at).total_seconds())
        await self._set_round_state(live, state, finished=True)
        # The round's line, though it may be logged while one carrier's result is handled.
        with log_fields(round_id=live.record.round_id, carrier_id=""):
            log.info(
                "round %s %s: %d of %d carriers answered",
                live.record.round_id,
                state,
                answered,
                len(live.states),
            )

    # --- state and watchers ---------------------------------------------------------------

    async def _set_state(
        self,
        live: _OpenRound,
        carrier_id: str,
        state: CarrierRoundState,
        error_code: int = 0,
        message: str = "",
    ) -> None:
        changed = await self.db(
            self._store.set_carrier_state,
            live.record.round_id,
            carrier_id,
            state,
            error_code,
            message,
        )
        if changed:
            live.set(carrier_id, state, error_code, message)
            await self._notify()

    async def _set_states(
        self, live: _OpenRound, states: Sequence[tuple[str, CarrierRoundState]]
    ) -> None:
        """Several carriers' states in one store transaction (answers and refusals stay)."""
        if not states:
            return
        wanted = dict(states)
        changed = await self.db(self._store.set_carriers_state, live.record.round_id, states)
        for carrier_id in changed:
            if live.states.get(carrier_id) not in _ANSWER_STATES:
                live.set(carrier_id, wanted[carrier_id])
        if changed:
            await self._notify()

    async def _set_round_state(
        self, live: _OpenRound, state: RoundState, finished: bool = False
    ) -> None:
        finished_at = _now() if finished else None
        # In memory first: results arriving while this is written see the new state (and do
        # not each write it again); the store thread writes in call order.
        live.record = RoundRecord(
            **{**live.record.__dict__, "state": state, "finished_at": finished_at}
        )
        await self.db(self._store.set_round_state, live.record.round_id, state, finished_at)
        await self._notify()

    async def _notify(self) -> None:
        self._changes += 1
        async with self._changed:
            self._changed.notify_all()

    @property
    def changes(self) -> int:
        """A counter of changes; read it before looking at a round, then pass it to
        :meth:`wait_for_change` so a change made meanwhile is not missed."""
        return self._changes

    async def wait_for_change(self, timeout: float, since: int | None = None) -> None:
        """Return at the next change, or at once when there was a change after ``since`` (a
        value of :attr:`changes`); at the latest after ``timeout`` seconds."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                if since is None:
                    await asyncio.wait_for(self._changed.wait(), timeout)
                else:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._changes != since), timeout
                    )

    async def wait_until_closed(self, round_id: str, timeout: float) -> None:
        """Return once the round is no longer open, at the latest after ``timeout`` seconds."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: round_id not in self._open), timeout
                )

    def is_open(self, round_id: str) -> bool:
        return round_id in self._open

    async def snapshot(self, round_id: str) -> tuple[RoundRecord, list[CarrierRound]]:
        """The round and each carrier's part in it, as stored (an open round's as kept in
        memory in step with the store: watching a large round does not read it back)."""
        live = self._open.get(round_id)
        if live is not None:
            return live.record, list(live.carriers.values())
        record = await self.db(self._store.get_round, round_id)
        carriers = await self.db(self._store.carrier_rounds, round_id)
        return record, carriers

    async def tables(self, record: RoundRecord) -> Sequence[ScopedTable]:
        """The round's tables (program first, then each carrier's, per query), computed once
        per set of stored results: until another result is stored for the round the same
        tables are returned (a result kept apart as late changes nothing of them). Results are
        the ones decoded on arrival; only those not in memory (after a restart) are decoded."""
        round_id = record.round_id
        key: ResultsKey = tuple(await self.db(self._store.result_keys, round_id))
        cached = self._tables.get(round_id, key)
        if cached is not None:
            return cached
        request = self.request_of(record)
        wanted = {carrier_id for carrier_id, _ in key}
        live = self._open.get(round_id)
        known = live.results if live is not None else self._finished.get(round_id, {})
        decoded = {c: r for c, r in known.items() if c in wanted}
        undecoded: list[StoredResult] = []
        if len(decoded) < len(wanted):
            undecoded = [
                r
                for r in await self.db(self._store.results, round_id)
                if r.carrier_id in wanted and r.carrier_id not in decoded
            ]
        tables, fresh = await asyncio.to_thread(_compute_tables, request, decoded, undecoded)
        live = self._open.get(round_id)
        if live is not None:
            for carrier_id, result in fresh.items():
                live.results.setdefault(carrier_id, result)
        elif self._finished.get(round_id, {}).keys() <= wanted:
            self._finished.pop(round_id, None)  # all in the tables now cached
        return self._tables.put(round_id, key, tables)


def _compute_tables(
    request: RequestSpec, decoded: Mapping[str, ResultSpec], undecoded: Sequence[StoredResult]
) -> tuple[list[ScopedTable], dict[str, ResultSpec]]:
    """The round's tables from its results, decoding those not decoded yet (returned too)."""
    fresh = {r.carrier_id: wire.decode_result_bytes(r.result_bytes) for r in undecoded}
    return round_tables(request, {**decoded, **fresh}), fresh


def check_registered(carriers: Sequence[str], registered: Sequence[str]) -> None:
    """Refuse carriers that are not registered (naming a few, those of a well-formed id)."""
    unknown = sorted(set(carriers) - set(registered))
    if unknown:
        shown = [c for c in unknown if wire.ID_RE.fullmatch(c)][:5]
        raise InvalidRequestError(f"unknown carriers: {', '.join(shown) or '(malformed)'}")


def _check_addressed(request: RequestSpec) -> None:
    """What decoding a built request's bytes would check and building does not: the carriers
    it is addressed to are of the wire's form."""
    if len(request.carriers) > wire.MAX_CARRIERS:
        raise InvalidRequestError("a request names its carriers once each, sorted")
    if not all(wire.ID_RE.fullmatch(c) for c in request.carriers):
        raise InvalidRequestError("carrier id is not of the expected form")
