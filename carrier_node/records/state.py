"""The node's own durable state: the outbox of answers not yet acknowledged, the nonces of
requests it has accepted (replay protection that survives restarts), and the results held for
a person's approval (manual release mode).

A held result moves through ``held`` → ``approved`` or ``rejected`` (the reviewer's decision,
recorded by ``carrier-node approve``, possibly in another process) → ``released`` or
``refused`` (the daemon wrote the audit entry and put the answer in the outbox, in one step).
Several processes may open the same state file: SQLite in WAL mode serialises the writes.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from carrier_node.records.audit import JsonValue
from fedoversight.domain import QuerySpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  request_id TEXT PRIMARY KEY,
  message BLOB NOT NULL,
  created_at TEXT NOT NULL,
  request_sha256 TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS nonces (
  nonce BLOB PRIMARY KEY,
  request_id TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  request_sha256 TEXT NOT NULL DEFAULT '',
  answered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS held_releases (
  request_id TEXT PRIMARY KEY,
  round_id TEXT NOT NULL,
  request_sha256 TEXT NOT NULL,
  message BLOB NOT NULL,
  period TEXT NOT NULL,
  queries TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  created_at TEXT NOT NULL,
  status TEXT NOT NULL,
  decided_at TEXT NOT NULL DEFAULT '',
  reviewer TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '',
  settled_at TEXT NOT NULL DEFAULT ''
);
"""


def node_state_path(state_dir: Path, carrier_id: str) -> Path:
    """Where a node keeps this state (the daemon and ``carrier-node approve`` agree on it)."""
    return state_dir / f"{carrier_id}.node.sqlite3"


class ReviewStatus(StrEnum):
    #: Evaluated, protected and signed; waiting for the reviewer.
    HELD = "held"
    #: The reviewer approved it; the daemon has not yet put it in the outbox.
    APPROVED = "approved"
    #: The reviewer rejected it; the daemon has not yet put the refusal in the outbox.
    REJECTED = "rejected"
    #: Approved and in the outbox (sent, or sent on the next connection).
    RELEASED = "released"
    #: Rejected, and the refusal is in the outbox.
    REFUSED = "refused"

    @property
    def unsettled(self) -> bool:
        return self in (ReviewStatus.HELD, ReviewStatus.APPROVED, ReviewStatus.REJECTED)


def query_record(query: QuerySpec) -> dict[str, JsonValue]:
    """A query as plain JSON: what a held or released table answers (to find the previous
    release of the same metric, grouping, filters and parameters)."""
    return {
        "metric": query.metric,
        "version": query.version,
        "group_by": [str(d) for d in query.group_by],
        "filters": {str(d): list(v) for d, v in query.filters},
        "parameters": {k: v for k, v in query.parameters},
    }


@dataclass(frozen=True)
class HeldRelease:
    """A signed result kept back for the reviewer, and what became of it."""

    request_id: str
    round_id: str
    request_sha256: str
    #: The serialized NodeMessage carrying the signed result, exactly as it would be sent.
    message: bytes
    period: str
    #: :func:`query_record` of each query, in the order of the result's tables.
    queries: tuple[dict[str, JsonValue], ...]
    expires_at: str
    created_at: str
    status: ReviewStatus = ReviewStatus.HELD
    decided_at: str = ""
    reviewer: str = ""
    reason: str = ""
    settled_at: str = ""


_HELD_COLUMNS = (
    "request_id, round_id, request_sha256, message, period, queries, expires_at, created_at,"
    " status, decided_at, reviewer, reason, settled_at"
)


def _held(row: Sequence[Any]) -> HeldRelease:
    return HeldRelease(
        request_id=str(row[0]),
        round_id=str(row[1]),
        request_sha256=str(row[2]),
        message=bytes(row[3]),
        period=str(row[4]),
        queries=tuple(json.loads(str(row[5]))),
        expires_at=str(row[6]),
        created_at=str(row[7]),
        status=ReviewStatus(str(row[8])),
        decided_at=str(row[9]),
        reviewer=str(row[10]),
        reason=str(row[11]),
        settled_at=str(row[12]),
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class NodeState:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "request_sha256" not in columns:  # a state file from before answers were keyed
            self._db.execute(
                "ALTER TABLE outbox ADD COLUMN request_sha256 TEXT NOT NULL DEFAULT ''"
            )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(nonces)")}
        if "request_sha256" not in columns:  # from before nonces named their request's bytes
            self._db.execute(
                "ALTER TABLE nonces ADD COLUMN request_sha256 TEXT NOT NULL DEFAULT ''"
            )
            self._db.execute("ALTER TABLE nonces ADD COLUMN answered INTEGER NOT NULL DEFAULT 0")
        # Writes that need not be durable on their own (acknowledgements) go through a
        # connection that does not sync; the next synced commit covers them (one WAL).
        self._lazy = self._db
        if str(path) != ":memory:":
            self._lazy = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._lazy.execute("PRAGMA synchronous=NORMAL")
        # The earliest expiry among the stored nonces (None: none stored), so expired ones
        # are purged when there are some rather than looked for on every request.
        row = self._db.execute("SELECT MIN(expires_at) FROM nonces").fetchone()
        self._next_expiry: str | None = row[0] if row is not None else None

    def put_outbox(
        self, request_id: str, message: bytes, request_sha256: str = "", *, replace: bool = True
    ) -> None:
        """Keep an answer until it is acknowledged; ``request_sha256`` names the exact request
        bytes it answers, so only a true duplicate of that request gets it again. Without
        ``replace``, an answer already kept under ``request_id`` stays."""
        now = dt.datetime.now(dt.UTC).isoformat()
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    f"{verb} INTO outbox (request_id, message, created_at, request_sha256)"
                    " VALUES (?, ?, ?, ?)",
                    (request_id, message, now, request_sha256),
                )
                # Answered: a delivery of these bytes again is a replay from now on, also
                # once the answer is acknowledged and forgotten.
                self._db.execute(
                    "UPDATE nonces SET answered = 1 WHERE request_id = ? AND request_sha256 = ?",
                    (request_id, request_sha256),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get_outbox(self, request_id: str, request_sha256: str | None = None) -> bytes | None:
        """The stored answer to a request id (to those exact request bytes, when given)."""
        with self._lock:
            row = self._db.execute(
                "SELECT message, request_sha256 FROM outbox WHERE request_id = ?", (request_id,)
            ).fetchone()
        if row is None or (request_sha256 is not None and row[1] != request_sha256):
            return None
        return bytes(row[0])

    def pending(self) -> list[tuple[str, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, message FROM outbox ORDER BY created_at"
            ).fetchall()
        return [(r[0], bytes(r[1])) for r in rows]

    def ack(self, request_id: str) -> None:
        """Forget an acknowledged answer. Not synced on its own (the next synced write makes
        it durable): lost in a crash, the answer is only sent again, and the coordinator
        takes a duplicate as the delivery it already stored."""
        with self._lock:
            self._lazy.execute("DELETE FROM outbox WHERE request_id = ?", (request_id,))

    def remember_nonce(
        self,
        nonce: bytes,
        request_id: str,
        expires_at: dt.datetime,
        now: dt.datetime,
        request_sha256: str = "",
        unanswered: bool = False,
    ) -> bool:
        """Record a nonce with the digest of its request's bytes; False when it was seen
        before (a replay).

        With ``unanswered`` (the caller found no answer kept for these bytes) the very
        request the nonce was first seen with, never answered (:meth:`put_outbox` marks it),
        is not a replay: the node admitted it and stopped before answering (a crash), and it
        is evaluated again.
        Nonces of requests that expired before ``now`` are forgotten: such a request is
        refused for its expiry anyway.
        """
        now_text, expires_text = now.isoformat(), expires_at.isoformat()
        with self._lock:
            if self._next_expiry is not None and self._next_expiry < now_text:
                self._db.execute("DELETE FROM nonces WHERE expires_at < ?", (now_text,))
                row = self._db.execute("SELECT MIN(expires_at) FROM nonces").fetchone()
                self._next_expiry = row[0] if row is not None else None
            # One statement: the nonce is new exactly when the insert adds a row.
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO nonces (nonce, request_id, expires_at, request_sha256)"
                " VALUES (?, ?, ?, ?)",
                (nonce, request_id, expires_text, request_sha256),
            )
            if cursor.rowcount != 1:
                row = self._db.execute(
                    "SELECT request_sha256, answered FROM nonces WHERE nonce = ?", (nonce,)
                ).fetchone()
                return (
                    unanswered
                    and bool(request_sha256)
                    and row is not None
                    and row[0] == request_sha256
                    and not row[1]
                )
            if self._next_expiry is None or expires_text < self._next_expiry:
                self._next_expiry = expires_text
            return True

    # --- results held for approval ---------------------------------------------------------

    def hold(self, held: HeldRelease) -> None:
        """Keep a signed result back for the reviewer (a request is held once)."""
        with self._lock:
            self._db.execute(
                f"INSERT INTO held_releases ({_HELD_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    held.request_id,
                    held.round_id,
                    held.request_sha256,
                    held.message,
                    held.period,
                    json.dumps(list(held.queries), sort_keys=True),
                    held.expires_at,
                    held.created_at or _now(),
                    str(held.status),
                    held.decided_at,
                    held.reviewer,
                    held.reason,
                    held.settled_at,
                ),
            )

    def held_release(self, request_id: str) -> HeldRelease | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_HELD_COLUMNS} FROM held_releases WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else _held(row)

    def held_releases(
        self, statuses: Sequence[ReviewStatus] | None = (ReviewStatus.HELD,)
    ) -> list[HeldRelease]:
        """Held results in the order they were held (every one when ``statuses`` is None)."""
        query = f"SELECT {_HELD_COLUMNS} FROM held_releases"
        params: tuple[str, ...] = ()
        if statuses is not None:
            params = tuple(str(s) for s in statuses)
            query += f" WHERE status IN ({', '.join('?' * len(params))})"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at, request_id", params).fetchall()
        return [_held(r) for r in rows]

    def awaiting_review(self, request_id: str, request_sha256: str) -> bool:
        """These exact request bytes were answered by a result that has not yet gone out."""
        held = self.held_release(request_id)
        return (
            held is not None and held.status.unsettled and (held.request_sha256 == request_sha256)
        )

    def decide(self, request_id: str, *, approve: bool, reviewer: str, reason: str = "") -> bool:
        """Record the reviewer's decision on a held result; False when it is not (or no
        longer) held."""
        status = ReviewStatus.APPROVED if approve else ReviewStatus.REJECTED
        with self._lock:
            cursor = self._db.execute(
                "UPDATE held_releases SET status = ?, decided_at = ?, reviewer = ?, reason = ?"
                " WHERE request_id = ? AND status = ?",
                (str(status), _now(), reviewer, reason, request_id, str(ReviewStatus.HELD)),
            )
        return cursor.rowcount == 1

    def decided(self) -> list[HeldRelease]:
        """Decisions the daemon has still to carry out."""
        return self.held_releases((ReviewStatus.APPROVED, ReviewStatus.REJECTED))

    def settle(self, request_id: str, answer: bytes) -> bool:
        """Carry out a decision: put the answer (the held result, or the refusal) in the outbox
        and mark the held result settled, in one transaction. False when there was nothing
        decided to settle."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT status, request_sha256 FROM held_releases WHERE request_id = ?",
                    (request_id,),
                ).fetchone()
                done = (
                    {
                        str(ReviewStatus.APPROVED): ReviewStatus.RELEASED,
                        str(ReviewStatus.REJECTED): ReviewStatus.REFUSED,
                    }.get(row[0])
                    if row is not None
                    else None
                )
                if done is None:
                    self._db.execute("ROLLBACK")
                    return False
                now = _now()
                self._db.execute(
                    "INSERT OR REPLACE INTO outbox (request_id, message, created_at,"
                    " request_sha256) VALUES (?, ?, ?, ?)",
                    (request_id, answer, now, row[1]),
                )
                self._db.execute(
                    "UPDATE held_releases SET status = ?, settled_at = ? WHERE request_id = ?",
                    (str(done), now, request_id),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def close(self) -> None:
        with self._lock:
            if self._lazy is not self._db:
                self._lazy.close()
            self._db.close()
