"""Manual release: results held for the carrier's reviewer, and the reviewer's decisions.

In manual release mode (the policy's ``release_mode = "manual"``) a signed result is not sent:
it is held in the node's state and the coordinator is told nothing (its round waits for this
carrier, or closes without it at its deadline). ``carrier-node approve`` records the reviewer's
decision; the daemon picks decisions up every few seconds and on each connection, logs them,
and sends the result, or a refusal saying the carrier's reviewer rejected it. A held result is
perturbed like any other: its noise is a function of its contents, so the reviewer sees
exactly what would go out, and a later release of the same contents goes out the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence

from carrier_node.daemon.gate import Arrival
from carrier_node.daemon.io import IoThread
from carrier_node.daemon.results import (
    ResultMaker,
    purpose_entry,
    released_entry,
    table_summary,
)
from carrier_node.records.audit import AuditKind, AuditLog, JsonValue
from carrier_node.records.state import HeldRelease, NodeState, ReviewStatus, query_record
from fedoversight import wire
from fedoversight.domain import QueryTable, RequestSpec
from fedoversight.errors import REVIEWER_REJECTED, OversightError
from fedoversight.v1 import federation_pb2, types_pb2

log = logging.getLogger(__name__)


class ManualRelease:
    def __init__(
        self,
        *,
        state: NodeState,
        audit: AuditLog,
        io: IoThread,
        results: ResultMaker,
        snapshot: Callable[[], str],
        send: Callable[[federation_pb2.NodeMessage], None],
        poll_seconds: float,
    ) -> None:
        """``snapshot``: the data source's description for a result; ``send``: puts an answer
        on the stream; ``poll_seconds``: how often the reviewer's decisions are looked for."""
        self._state = state
        self._audit = audit
        self._io = io
        self._results = results
        self._snapshot = snapshot
        self._send = send
        self._poll_seconds = poll_seconds

    def hold(self, request: RequestSpec, arrival: Arrival, tables: Sequence[QueryTable]) -> None:
        """Sign the result and keep it back for the reviewer (logged as held, not sent; on the
        I/O thread)."""
        message = self._results.result_message(
            request, arrival.data, tables, self._snapshot(), self._audit.head()
        )
        result = message.result
        queries = [query_record(q) for q in request.queries]
        self._audit.append(
            AuditKind.HELD,
            request_id=request.request_id,
            round_id=request.round_id,
            result_sha256=hashlib.sha256(result.result).hexdigest(),
            request_sha256=arrival.sha256,
            key_id=result.key_id,
            tables=[table_summary(t) for t in tables],
            period=str(request.period),
            queries=list[JsonValue](queries),
            purpose=purpose_entry(request),
        )
        self._state.hold(
            HeldRelease(
                request_id=request.request_id,
                round_id=request.round_id,
                request_sha256=arrival.sha256,
                message=message.SerializeToString(),
                period=str(request.period),
                queries=tuple(queries),
                expires_at=request.expires_at.isoformat(),
                created_at=dt.datetime.now(dt.UTC).isoformat(),
            )
        )
        log.info(
            "request %s: result held for the carrier's reviewer (carrier-node approve)",
            request.request_id,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Carry out the reviewer's decisions until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                for message in await self.settle_all():
                    self._send(message)
            except OversightError:  # shutting down
                return
            except Exception:
                log.exception("carrying out the reviewer's decisions failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._poll_seconds)

    async def settle_all(self) -> list[federation_pb2.NodeMessage]:
        """Log every decided held result and put its answer in the outbox; return the
        answers (to send now when connected; the outbox has them for the next connection)."""
        answers = []
        for held in await self._io.run(self._state.decided):
            answer = await self._io.run(self._settle, held.request_id)
            if answer is not None:
                answers.append(answer)
        return answers

    def _settle(self, request_id: str) -> federation_pb2.NodeMessage | None:
        # Read again on the I/O thread, which runs every settlement: each is logged once.
        held = self._state.held_release(request_id)
        if held is None or held.status not in (ReviewStatus.APPROVED, ReviewStatus.REJECTED):
            return None
        queries: list[JsonValue] = list(held.queries)
        if held.status is ReviewStatus.APPROVED:
            message = federation_pb2.NodeMessage.FromString(held.message)
            spec = wire.decode_result_bytes(bytes(message.result.result))
            self._audit.append(
                AuditKind.RELEASED,
                request_id=held.request_id,
                round_id=held.round_id,
                **released_entry(
                    message.result,
                    request_sha256=held.request_sha256,
                    data_snapshot=spec.data_snapshot,
                    tables=spec.tables,
                    period=held.period,
                    queries=queries,
                ),
                approved_by=held.reviewer,
                approved_at=held.decided_at,
                held_at=held.created_at,
            )
            log.info("request %s: released on the reviewer's approval", held.request_id)
        else:
            message = federation_pb2.NodeMessage(
                refusal=types_pb2.Refusal(
                    request_id=held.request_id,
                    round_id=held.round_id,
                    code=types_pb2.ERROR_CODE_POLICY_REFUSED,
                    public_message=REVIEWER_REJECTED,
                )
            )
            held_message = federation_pb2.NodeMessage.FromString(held.message)
            self._audit.append(
                AuditKind.REJECTED,
                request_id=held.request_id,
                round_id=held.round_id,
                result_sha256=hashlib.sha256(held_message.result.result).hexdigest(),
                rejected_by=held.reviewer,
                rejected_at=held.decided_at,
                held_at=held.created_at,
                reason=held.reason,
                code=types_pb2.ErrorCode.Name(types_pb2.ERROR_CODE_POLICY_REFUSED),
                public_message=REVIEWER_REJECTED,
            )
            log.info("request %s: rejected by the reviewer; refusal sent", held.request_id)
        self._state.settle(held.request_id, message.SerializeToString())
        return message
