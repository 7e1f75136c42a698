"""Answering one request: admit it, evaluate it where the data lives, protect, sign, keep, send.

Every request is read once on arrival (:class:`~carrier_node.daemon.gate.Arrival`). A duplicate
delivery of a request already answered gets the stored answer; anything else passes every
check before anything runs (:meth:`Answering.admit`: the gate's signature, validity, address
and replay checks, the data source, the policy), is evaluated off the event loop, protected by
:mod:`carrier_node.disclosure`, signed, written to the audit log and kept in the outbox until
the coordinator acknowledges it — each durable before it is sent. A failure anywhere becomes a
refusal with a fixed public message, logged and kept the same way.

Each answer's time is accounted for by stage (:class:`AnswerTiming`: the gate, the engine's
compute, disclosure control, signing, persistence), handed to an optional ``on_answered``
callback and logged at debug level.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import hashlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from carrier_node.budget import Budget
from carrier_node.daemon import cost
from carrier_node.daemon.gate import Arrival, RequestGate
from carrier_node.daemon.io import IoThread
from carrier_node.daemon.manual import ManualRelease
from carrier_node.daemon.results import ResultMaker, purpose_entry, refusal, released_entry
from carrier_node.daemon.scheduler import Scheduler
from carrier_node.daemon.sources import DataAccess
from carrier_node.disclosure import Discloser
from carrier_node.policy import Policy
from carrier_node.records.audit import AuditKind, AuditLog, JsonValue
from carrier_node.records.state import NodeState, query_record
from fedoversight.domain import QuerySpec, QueryTable, RequestSpec
from fedoversight.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    NodeStoppingError,
    OversightError,
    RecordsUnavailableError,
    RequestTooLargeError,
    error_code,
    public_message,
)
from fedoversight.logs import log_fields
from fedoversight.v1 import federation_pb2, types_pb2

log = logging.getLogger(__name__)

_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")


P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class AnswerTiming:
    """Where one delivery's answer spent its time: per stage, wall seconds and the CPU seconds
    of the thread that ran it (waits for the I/O thread or an evaluation slot excluded).

    ``gate``: reading the request, the outbox and replay look-ups, signature, validity, policy
    and their audit entries; ``compute``: the engine (SQL and decoding into raw cells);
    ``disclosure``: disclosure control; ``signing``: the data snapshot, encoding and signing the
    result; ``persistence``: its audit entry and the outbox. ``outcome``: ``released``,
    ``refused``, ``resent`` or ``held``.
    """

    request_id: str = ""
    outcome: str = ""
    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, wall: float, cpu: float) -> None:
        self.wall[stage] = self.wall.get(stage, 0.0) + wall
        self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu

    def timed(self, stage: str, call: Callable[P, T]) -> Callable[P, T]:
        """``call``, its time added to ``stage`` on whatever thread it runs."""

        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - wall, time.thread_time() - cpu)

        return run

    def overhead(self, cpu: bool = False) -> float:
        """Seconds of every stage but the engine's compute."""
        times = self.cpu if cpu else self.wall
        return sum(v for k, v in times.items() if k != "compute")


#: The answer under way in this task (and the threads it hands work to).
_TIMING: contextvars.ContextVar[AnswerTiming | None] = contextvars.ContextVar(
    "answer_timing", default=None
)


def _stage(stage: str, call: Callable[P, T]) -> Callable[P, T]:
    """``call`` timed into the current answer's ``stage`` (as is, outside an answer)."""
    timing = _TIMING.get()
    return call if timing is None else timing.timed(stage, call)


class OutboxError(RecordsUnavailableError):
    """A released result could not be kept in the outbox: it is not sent (the refusal for
    records that cannot be written is, see :meth:`Answering.answer`)."""


#: What the node's records (state database, audit log, secrets) raise when they cannot be
#: written: a read-only or full state directory, a damaged file.
RECORDS_ERRORS = (OSError, sqlite3.Error, RecordsUnavailableError)


class Answering:
    def __init__(
        self,
        *,
        policy: Policy,
        state: NodeState,
        audit: AuditLog,
        io: IoThread,
        gate: RequestGate,
        data: DataAccess,
        discloser: Discloser,
        results: ResultMaker,
        manual: ManualRelease,
        send: Callable[[federation_pb2.NodeMessage], None],
        scheduler: Scheduler,
        max_seconds: float,
        margin_seconds: float = 0.0,
        executor: Executor | None = None,
        on_answered: Callable[[AnswerTiming], None] | None = None,
    ) -> None:
        """``send`` puts an answer on the stream; ``scheduler`` gives evaluations their slots
        (one evaluation thread each); an evaluation gets the time to the request's deadline
        less ``margin_seconds`` (kept for signing, keeping and sending), at most
        ``max_seconds``; ``executor``: evaluation threads shared with other nodes of the same
        process (simulated federations) instead of the node's own; ``on_answered`` is called
        with each delivery's :class:`AnswerTiming`."""
        self._on_answered = on_answered
        self.policy = policy
        self._state = state
        self._audit = audit
        self._io = io
        self._gate = gate
        self._data = data
        self._discloser = discloser
        self._results = results
        self._manual = manual
        self._send = send
        self.scheduler = scheduler
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=scheduler.slots, thread_name_prefix="evaluation"
        )
        self._max_seconds = max_seconds
        self._margin_seconds = margin_seconds
        #: The budgets of the evaluations under way (cancelled when the node stops).
        self._budgets: set[Budget] = set()
        #: Ids of the requests being answered now (a delivery of one again is let go).
        self._in_flight: set[str] = set()

    async def answer(self, signed: types_pb2.SignedRequest) -> None:
        """Answer one delivery of a signed request (the answer goes to ``send``).

        Never raises: what cannot be answered is refused, and a refusal that cannot be kept
        (the records cannot be written) is still sent."""
        timing = AnswerTiming()
        _TIMING.set(timing)  # this task's context, and the threads it hands work to
        arrival = timing.timed("gate", Arrival.of)(signed)
        timing.request_id = arrival.request_id
        # The ids it claims are of the expected form (or empty): safe to log before checks.
        with log_fields(request_id=arrival.request_id, round_id=arrival.round_id):
            try:
                await self._answer(arrival)
            except asyncio.CancelledError:
                raise
            except RECORDS_ERRORS as exc:
                log.error(
                    "request %s: the node's records cannot be written (%s); refused",
                    arrival.request_id or "?",
                    type(exc).__name__,
                )
                self._send(refusal(arrival.request_id, arrival.round_id, RecordsUnavailableError()))
            except Exception:
                log.exception("request %s: unexpected failure; refused", arrival.request_id or "?")
                self._send(refusal(arrival.request_id, arrival.round_id, OversightError()))

    async def _answer(self, arrival: Arrival) -> None:
        request_id = arrival.request_id
        if request_id in self._in_flight:
            # Delivered again (a reconnection) while it is being answered: that answer goes.
            log.info("request %s: delivered again while it is answered", request_id)
            return
        if request_id:
            self._in_flight.add(request_id)
        try:
            await self._answer_once(arrival)
        finally:
            self._in_flight.discard(request_id)

    async def _answer_once(self, arrival: Arrival) -> None:
        if self._data.error is not None:
            await self._data.open()  # unusable so far: perhaps fixed since
        # The look-ups, the checks and their audit entries in one trip to the I/O thread.
        outcome = await self._io.run(_stage("gate", self._receive), arrival)
        if outcome is None:  # its result awaits the carrier's reviewer
            self._answered("held")
            return
        if isinstance(outcome, federation_pb2.NodeMessage):  # stored answer, or the refusal
            self._send(outcome)
            self._answered("resent" if outcome.HasField("result") else "refused")
            return
        answer = await self._evaluate_and_release(outcome, arrival)
        if answer is not None:  # None: held for the reviewer, nothing is stored or sent
            self._send(answer)
        self._answered(
            "held" if answer is None else "released" if answer.HasField("result") else "refused"
        )

    def _answered(self, outcome: str) -> None:
        timing = _TIMING.get()
        if timing is None:
            return
        timing.outcome = outcome
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request %s %s: %s",
                timing.request_id or "?",
                outcome,
                ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timing.wall.items()),
            )
        if self._on_answered is not None:
            self._on_answered(timing)

    def _receive(self, arrival: Arrival) -> RequestSpec | federation_pb2.NodeMessage | None:
        """On the I/O thread: the stored answer to a duplicate delivery (logged as resent);
        None while the request's result awaits the reviewer; the refusal of a request that
        fails a check (kept in the outbox); else the admitted request."""
        request_id, round_id = arrival.request_id, arrival.round_id
        # A duplicate delivery of a request already answered (the very same bytes, not just
        # the same claimed id) gets the stored answer.
        stored = self._state.get_outbox(request_id, arrival.sha256) if request_id else None
        if stored is not None:
            self._audit.append(
                AuditKind.RESENT,
                request_id=request_id,
                round_id=round_id,
                message_sha256=hashlib.sha256(stored).hexdigest(),
            )
            return federation_pb2.NodeMessage.FromString(stored)
        if request_id and self._state.awaiting_review(request_id, arrival.sha256):
            # Delivered again (after a reconnect) while its result waits for the reviewer.
            log.info("request %s: its result awaits the carrier's reviewer", request_id)
            return None
        try:
            # No answer is kept for these bytes: one admitted before a crash is admitted again.
            return self.admit(arrival, unanswered=True)
        except OversightError as exc:
            message = refusal(request_id, round_id, exc)
        if request_id:
            # The refusal of a request that never passed the checks must not displace an
            # answer kept under the same (claimed) id.
            self._state.put_outbox(
                request_id, message.SerializeToString(), arrival.sha256, replace=False
            )
        return message

    def admit(
        self,
        arrival: Arrival | types_pb2.SignedRequest,
        now: dt.datetime | None = None,
        *,
        unanswered: bool = False,
    ) -> RequestSpec:
        """Every check before anything runs: signature, expiry, address, replay, strict
        decoding, the data source, the policy. Each request is in the audit log with the
        decision on it.

        Raises :class:`~fedoversight.errors.OversightError` (the refusal) and nothing else.
        """
        if isinstance(arrival, types_pb2.SignedRequest):
            arrival = Arrival.of(arrival)
        signed = arrival.signed
        request_id, round_id = arrival.request_id, arrival.round_id
        received: tuple[AuditKind, str, str, dict[str, JsonValue]] = (
            AuditKind.RECEIVED,
            request_id,
            round_id,
            {
                "request_sha256": arrival.sha256,
                "key_id": signed.key_id if _KEY_ID_RE.fullmatch(signed.key_id) else "?",
                "signed": bool(signed.signature),
                "bytes": len(arrival.data),
            },
        )
        stage = "gate"
        request: RequestSpec | None = None
        try:
            request = self._gate.admit(arrival, now=now, unanswered=unanswered)
            stage = "data source"
            if self._data.error is not None:
                raise self._data.error
            stage = "purpose"
            self.policy.check_purpose(request.purpose)
            stage = "policy"
            for query in request.queries:
                self.policy.check(query)
                self.policy.check_for_purpose(request.purpose, query)
            stage = "cost"
            cells = cost.estimate(request).cells
            if cells > self.policy.max_request_cells:
                raise RequestTooLargeError(cells, self.policy.max_request_cells)
        except OversightError as exc:
            self._audit_refusal(received, stage, exc, request)
            log.warning(
                "request %s refused at the %s: %s", request_id or "?", stage, type(exc).__name__
            )
            raise
        except Exception as exc:  # nothing above should raise anything else; refuse anyway
            self._audit_refusal(received, stage, exc, request)
            log.error(
                "request %s: unexpected %s at the %s", request_id or "?", type(exc).__name__, stage
            )
            raise InvalidRequestError("request could not be checked") from None
        self._audit.append_many(
            [
                received,
                (
                    AuditKind.ADMITTED,
                    request.request_id,
                    request.round_id,
                    {
                        "period": f"{request.period.first}:{request.period.last}",
                        "queries": [describe(q) for q in request.queries],
                        "expires_at": request.expires_at.isoformat(),
                        "purpose": purpose_entry(request),
                    },
                ),
            ]
        )
        return request

    def _audit_refusal(
        self,
        received: tuple[AuditKind, str, str, dict[str, JsonValue]],
        stage: str,
        exc: BaseException,
        request: RequestSpec | None = None,
    ) -> None:
        """Log a refusal; ``request``: the request once it passed the gate (its purpose and
        queries are then recorded too)."""
        _, request_id, round_id, _ = received
        reason = exc.detail if isinstance(exc, OversightError) else type(exc).__name__
        fields: dict[str, JsonValue] = {
            "stage": stage,
            "code": types_pb2.ErrorCode.Name(error_code(exc)),  # type: ignore[arg-type]
            "reason": reason,
            "public_message": public_message(exc),
        }
        if request is not None:
            fields["purpose"] = purpose_entry(request)
            fields["period"] = f"{request.period.first}:{request.period.last}"
            fields["queries"] = [describe(q) for q in request.queries]
        self._audit.append_many([received, (AuditKind.REFUSED, request_id, round_id, fields)])

    def budget_for(self, request: RequestSpec, now: dt.datetime | None = None) -> Budget:
        """The request's time budget: to its deadline less the margin (a fifth of the time
        left when that is shorter), at most the cap."""
        now = now or dt.datetime.now(dt.UTC)
        left = (request.deadline - now).total_seconds()
        # The margin, or a fifth of the time left when that is shorter (a short deadline).
        seconds = left - min(self._margin_seconds, left / 5)
        return Budget(max(0.0, min(seconds, self._max_seconds)))

    async def _evaluate_and_release(
        self, request: RequestSpec, arrival: Arrival
    ) -> federation_pb2.NodeMessage | None:
        """The signed result, or a refusal, each logged and kept in the outbox before it is
        returned to be sent; None when nothing is to be sent now (held for the reviewer, or
        refused at the deadline and sent then)."""
        budget = self.budget_for(request)
        self._budgets.add(budget)
        try:
            async with self.scheduler.slot(cost.estimate(request).cells, budget):
                tables = await self._evaluate_in_slot(request, arrival, budget)
            if tables is None:
                return None
            if self.policy.release_mode == "manual":
                await self._io.run(
                    _stage("persistence", self._manual.hold), request, arrival, tables
                )
                return None
            return await self._io.run(self._release_and_keep, request, arrival, tables, budget)
        except RECORDS_ERRORS:
            raise  # the records cannot be written: answer() sends a refusal saying so
        except Exception as exc:
            if isinstance(exc, OversightError):
                log.warning(
                    "request %s refused in evaluation: %s (%s)",
                    request.request_id,
                    type(exc).__name__,
                    exc.detail,
                )
            else:
                log.exception("request %s failed", request.request_id)
            return await self._io.run(self._refuse_evaluation, request, exc, arrival.sha256)
        finally:
            self._budgets.discard(budget)

    async def _evaluate_in_slot(
        self, request: RequestSpec, arrival: Arrival, budget: Budget
    ) -> list[QueryTable] | None:
        """Evaluate on an evaluation thread, within the budget. At the deadline the
        evaluation is cancelled (the engine's statement interrupted) and the refusal kept and
        sent at once (None); the slot stays taken until the evaluation has stopped."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the answer's timing goes along
        future = loop.run_in_executor(
            self._executor, functools.partial(context.run, self.evaluate, request, budget)
        )
        try:
            return await asyncio.wait_for(asyncio.shield(future), budget.timeout())
        except TimeoutError:
            budget.cancel(DeadlineExceededError("past the deadline in evaluation"))
            assert budget.error is not None
            log.warning("request %s: past its deadline; evaluation stopped", request.request_id)
            self._send(
                await self._io.run(self._refuse_evaluation, request, budget.error, arrival.sha256)
            )
            await asyncio.gather(future, return_exceptions=True)
            return None
        except asyncio.CancelledError:
            budget.cancel(NodeStoppingError("the evaluation was cancelled"))
            future.add_done_callback(_settled)  # its error, when it stops, is expected
            raise

    def stop(self) -> None:
        """The node is stopping: refuse waiting requests, stop every evaluation under way
        (each then refused, the refusal kept for the next start)."""
        self.scheduler.stop()
        for budget in list(self._budgets):
            budget.cancel(NodeStoppingError("the node is stopping"))

    def close(self) -> None:
        """Let go of the evaluation threads (without waiting for one that will not stop)."""
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _refuse_evaluation(
        self, request: RequestSpec, exc: BaseException, request_sha256: str
    ) -> federation_pb2.NodeMessage:
        """Log a refusal in evaluation and keep it in the outbox (on the I/O thread)."""
        self._audit.append(
            AuditKind.REFUSED,
            request_id=request.request_id,
            round_id=request.round_id,
            stage="evaluation",
            code=types_pb2.ErrorCode.Name(error_code(exc)),  # type: ignore[arg-type]
            reason=exc.detail if isinstance(exc, OversightError) else type(exc).__name__,
        )
        message = refusal(request.request_id, request.round_id, exc)
        # A verified request's answer replaces whatever was kept under its id.
        self._state.put_outbox(request.request_id, message.SerializeToString(), request_sha256)
        return message

    def evaluate(self, request: RequestSpec, budget: Budget | None = None) -> list[QueryTable]:
        """The protected tables of an admitted request (off the event loop), within
        ``budget``."""
        budget = budget or Budget.unlimited()
        engine = self._data.engine
        assert engine is not None
        _stage("disclosure", self._discloser.check)(request)
        raws = _stage("compute", engine.evaluate_many)(request.period, request.queries, budget)
        tables, decisions = _stage("disclosure", self._discloser.protect)(request, raws, budget)
        for decision in decisions:
            counts = decision.counts()
            if counts:
                log.info(
                    "request %s %s: withheld statistics %s",
                    request.request_id,
                    decision.metric,
                    counts,
                )
        return tables

    def _release(
        self, request: RequestSpec, arrival: Arrival, tables: list[QueryTable]
    ) -> federation_pb2.NodeMessage:
        """Sign the result and record what is released before it is sent."""
        data_snapshot = _stage("signing", self._data.snapshot)()
        # On the I/O thread, which writes every audit entry: the head read here is the entry
        # just before this result's release entry.
        message = _stage("signing", self._results.result_message)(
            request, arrival.data, tables, data_snapshot, self._audit.head()
        )
        _stage("persistence", self._audit.append)(
            AuditKind.RELEASED,
            request_id=request.request_id,
            round_id=request.round_id,
            **released_entry(
                message.result,
                request_sha256=arrival.sha256,
                data_snapshot=data_snapshot,
                tables=tables,
                period=str(request.period),
                queries=[query_record(q) for q in request.queries],
            ),
        )
        return message

    def _release_and_keep(
        self,
        request: RequestSpec,
        arrival: Arrival,
        tables: list[QueryTable],
        budget: Budget | None = None,
    ) -> federation_pb2.NodeMessage:
        """:meth:`_release`, then keep the result in the outbox until it is acknowledged (on
        the I/O thread; both durable before the result is sent). Nothing is signed past the
        budget; once signed, a result is kept and sent."""
        if budget is not None:
            budget.check("signing")
        message = self._release(request, arrival, tables)
        try:
            _stage("persistence", self._state.put_outbox)(
                request.request_id, message.SerializeToString(), arrival.sha256
            )
        except Exception as exc:
            log.error(
                "request %s: the result could not be kept in the outbox: %s",
                request.request_id,
                type(exc).__name__,
            )
            raise OutboxError from exc
        return message


def describe(query: QuerySpec) -> str:
    """A query as the audit log names it (no filter values)."""
    text = f"{query.metric}@{query.version}"
    if query.group_by:
        text += " by " + ",".join(str(d) for d in query.group_by)
    if query.filters:
        text += " where " + ";".join(f"{d}:{len(v)} values" for d, v in query.filters)
    return text


def _settled(future: asyncio.Future[list[QueryTable]]) -> None:
    """Take an abandoned evaluation's outcome (so asyncio does not report it unread)."""
    if not future.cancelled():
        future.exception()
