"""The node's own durable state: the outbox of answers not yet acknowledged, and the nonces
of requests it has accepted (replay protection that survives restarts)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

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
  expires_at TEXT NOT NULL
);
"""


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

    def put_outbox(
        self, request_id: str, message: bytes, request_sha256: str = "", *, replace: bool = True
    ) -> None:
        """Keep an answer until it is acknowledged; ``request_sha256`` names the exact request
        bytes it answers, so only a true duplicate of that request gets it again. Without
        ``replace``, an answer already kept under ``request_id`` stays."""
        now = dt.datetime.now(dt.UTC).isoformat()
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            self._db.execute(
                f"{verb} INTO outbox (request_id, message, created_at, request_sha256)"
                " VALUES (?, ?, ?, ?)",
                (request_id, message, now, request_sha256),
            )

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
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE request_id = ?", (request_id,))

    def remember_nonce(
        self, nonce: bytes, request_id: str, expires_at: dt.datetime, now: dt.datetime
    ) -> bool:
        """Record a nonce; False when it was seen before (a replay).

        Nonces of requests that expired before ``now`` are forgotten: such a request is
        refused for its expiry anyway.
        """
        with self._lock:
            self._db.execute("DELETE FROM nonces WHERE expires_at < ?", (now.isoformat(),))
            row = self._db.execute(
                "SELECT request_id FROM nonces WHERE nonce = ?", (nonce,)
            ).fetchone()
            if row is not None:
                return False
            self._db.execute(
                "INSERT INTO nonces VALUES (?, ?, ?)", (nonce, request_id, expires_at.isoformat())
            )
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()
