"""The round store: rounds, each carrier's part in them, signed results and the carrier registry.

Every write is committed before the method returns, so a caller may acknowledge what it stored
as soon as the call is back: a coordinator restart resumes from here, and a duplicate delivery
is recognised instead of stored twice.

:class:`RoundStore` holds the statements; a :class:`Backend` holds the database under them: the
connection, its transactions and the few places where the SQL differs. The embedded default is
one SQLite file (:class:`SqliteBackend`: WAL, ``synchronous=FULL``); a PostgreSQL database is
the other (:mod:`coordinator.store_postgres`), chosen by the config's ``round_store``
(:func:`open_round_store`).

Methods are synchronous and short; asyncio callers run them with :func:`asyncio.to_thread`.
One connection is shared between threads behind a lock. Timestamps are UTC (SQLite: ISO text
with a fixed width, so they sort as text); naive datetimes are refused rather than guessed at.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence, Sized
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from fedoversight.errors import ConfigError, InvalidRequestError, NotFoundError, OversightError

if TYPE_CHECKING:
    from coordinator.config import CoordinatorConfig

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

T = TypeVar("T")


class RoundState(StrEnum):
    CREATED = "created"
    DISPATCHED = "dispatched"
    COLLECTING = "collecting"
    COMPLETE = "complete"
    PARTIAL = "partial"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        return self in _OPEN_ROUND_STATES


_OPEN_ROUND_STATES = frozenset({RoundState.CREATED, RoundState.DISPATCHED, RoundState.COLLECTING})


class CarrierRoundState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ANSWERED = "answered"
    REFUSED = "refused"
    DISCONNECTED = "disconnected"
    TIMED_OUT = "timed_out"
    NOT_CONNECTED = "not_connected"

    @property
    def terminal(self) -> bool:
        """A carrier's answer or refusal is final; nothing later replaces it."""
        return self in (CarrierRoundState.ANSWERED, CarrierRoundState.REFUSED)


@dataclass(frozen=True)
class RoundRecord:
    round_id: str
    #: The serialized MetricRequest: exactly the bytes the operator key signed.
    request_bytes: bytes
    signature: bytes
    key_id: str
    state: RoundState
    #: Carriers that must answer for the round to be complete rather than partial.
    quorum: int
    deadline_at: dt.datetime
    created_at: dt.datetime
    finished_at: dt.datetime | None = None
    #: Client-chosen key making round creation idempotent.
    idempotency_key: str | None = None
    #: For a round a schedule ran: its suite, and the time it was due.
    suite: str | None = None
    scheduled_for: dt.datetime | None = None


@dataclass(frozen=True)
class CarrierRound:
    round_id: str
    carrier_id: str
    state: CarrierRoundState
    #: A wire ErrorCode (0 when none).
    error_code: int
    #: A fixed public message, never text a carrier holds.
    message: str
    updated_at: dt.datetime
    #: When a result arrived after the round finished (kept apart, not in its tables).
    late_answer_at: dt.datetime | None = None


@dataclass(frozen=True)
class StoredResult:
    round_id: str
    carrier_id: str
    #: The serialized MetricResult: exactly the bytes the node key signed.
    result_bytes: bytes
    signature: bytes
    key_id: str
    received_at: dt.datetime


#: The schema, with the types and the insertion-order column each backend fills in.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round_id TEXT PRIMARY KEY,
    request_bytes {blob} NOT NULL,
    signature {blob} NOT NULL,
    key_id TEXT NOT NULL,
    state TEXT NOT NULL,
    quorum INTEGER NOT NULL,
    deadline_at {time} NOT NULL,
    created_at {time} NOT NULL,
    finished_at {time},
    idempotency_key TEXT UNIQUE{sequence}
);
CREATE INDEX IF NOT EXISTS rounds_by_created ON rounds (created_at);
CREATE INDEX IF NOT EXISTS rounds_by_state ON rounds (state);
CREATE TABLE IF NOT EXISTS carrier_rounds (
    round_id TEXT NOT NULL REFERENCES rounds (round_id),
    carrier_id TEXT NOT NULL,
    state TEXT NOT NULL,
    error_code INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    updated_at {time} NOT NULL,
    PRIMARY KEY (round_id, carrier_id)
);
CREATE TABLE IF NOT EXISTS results (
    round_id TEXT NOT NULL REFERENCES rounds (round_id),
    carrier_id TEXT NOT NULL,
    result_bytes {blob} NOT NULL,
    signature {blob} NOT NULL,
    key_id TEXT NOT NULL,
    received_at {time} NOT NULL,
    PRIMARY KEY (round_id, carrier_id)
);
CREATE TABLE IF NOT EXISTS late_results (
    round_id TEXT NOT NULL REFERENCES rounds (round_id),
    carrier_id TEXT NOT NULL,
    result_bytes {blob} NOT NULL,
    signature {blob} NOT NULL,
    key_id TEXT NOT NULL,
    received_at {time} NOT NULL,
    PRIMARY KEY (round_id, carrier_id)
);
CREATE TABLE IF NOT EXISTS carriers (
    carrier_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL DEFAULT '',
    registered_at {time} NOT NULL
);
CREATE TABLE IF NOT EXISTS scheduled_rounds (
    round_id TEXT PRIMARY KEY REFERENCES rounds (round_id),
    suite TEXT NOT NULL,
    scheduled_for {time} NOT NULL,
    UNIQUE (suite, scheduled_for)
);
"""
# scheduled_rounds came after schema version 1 was fixed: it is created (empty) in a store
# made before it, and a coordinator that does not know it leaves it alone, so the version stays.

_ROUND_COLUMNS = (
    "round_id, request_bytes, signature, key_id, state, quorum, deadline_at, created_at,"
    " finished_at, idempotency_key"
)
#: A round's columns, with the suite and due time of a scheduled round (rounds are ``r``).
_ROUND_SELECT = (
    "SELECT "
    + ", ".join(f"r.{c.strip()}" for c in _ROUND_COLUMNS.split(","))
    + ", s.suite, s.scheduled_for FROM rounds AS r"
    " LEFT JOIN scheduled_rounds AS s ON s.round_id = r.round_id"
)
_RESULT_COLUMNS = "round_id, carrier_id, result_bytes, signature, key_id, received_at"


def utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive datetime is refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("the round store takes timezone-aware datetimes only")
    return value.astimezone(dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: Rows per statement when a statement names many carriers (stays under SQLite's limit of
#: 999 bound values in older versions).
_CHUNK = 100


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(items: Sized) -> str:
    return ", ".join("?" * len(items))


class Cursor(Protocol):
    """What the statements use of a cursor: rows are read by column name."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection taking SQL with ``?`` placeholders (as :mod:`sqlite3` does)."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class Backend(ABC):
    """The database under a :class:`RoundStore`: one connection behind a lock, transactions
    committed durably before they return, and the dialect's few differences."""

    #: Column types of the schema: bytes, and a point in time.
    blob_type: ClassVar[str]
    time_type: ClassVar[str]
    #: A column ordering rows of ``rounds`` by insertion (declared in the schema when given).
    insertion_order: ClassVar[str]
    insertion_column: ClassVar[str] = ""
    #: Ends a SELECT whose rows stay locked until the transaction ends (where writers are not
    #: already serialised by the database).
    for_update: ClassVar[str] = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for logs and messages (never a password)."""

    @abstractmethod
    def _connection(self) -> Connection:
        """The open connection (opened again if it was lost)."""

    @abstractmethod
    def _atomic(self, conn: Connection) -> AbstractContextManager[object]:
        """One transaction on ``conn``: committed at the end of the block, rolled back on
        an exception."""

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def prepare(self, conn: Connection) -> None:
        """Run first in the transaction that creates the schema."""

    def to_db(self, value: dt.datetime) -> object:
        return utc(value)

    def from_db(self, value: Any) -> dt.datetime:
        return utc(value)

    def schema_statements(self) -> list[str]:
        text = _SCHEMA.format(
            blob=self.blob_type, time=self.time_type, sequence=self.insertion_column
        )
        return [statement for statement in text.split(";") if statement.strip()]

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction, committed (durably) before the block's caller goes on."""
        with self._lock:
            conn = self._open()
            with self._atomic(conn):
                yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self._lock:
            yield self._open()

    def _open(self) -> Connection:
        if self._closed:
            raise OversightError("the round store is closed")
        return self._connection()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close()


class SqliteBackend(Backend):
    """One SQLite file (WAL, ``synchronous=FULL``); ``path`` may be ``":memory:"`` (tests)."""

    blob_type = "BLOB"
    time_type = "TEXT"
    insertion_order = "rowid"

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = str(path)
        # isolation_level=None: transactions are begun and committed explicitly.
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def prepare(self, conn: Connection) -> None:
        """Nothing: the transaction's write lock keeps any other process out."""

    def _connection(self) -> Connection:
        return self._conn

    @contextmanager
    def _atomic(self, conn: Connection) -> Iterator[object]:
        # IMMEDIATE: the write lock is taken at once, so transactions never interleave.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _close(self) -> None:
        self._conn.close()

    def to_db(self, value: dt.datetime) -> object:
        return utc(value).isoformat(timespec="microseconds")

    def from_db(self, value: Any) -> dt.datetime:
        return dt.datetime.fromisoformat(value)


def open_round_store(config: CoordinatorConfig) -> RoundStore:
    """The store the config names: PostgreSQL with ``round_store``, else the SQLite file at
    ``store_path``. An unreachable database is a :class:`ConfigError`."""
    if config.round_store is None:
        return RoundStore(config.store_path)
    from coordinator.store_postgres import PostgresBackend

    return RoundStore(PostgresBackend(config.round_store))


class RoundStore:
    """The coordinator's durable state, on a :class:`Backend` (a path: a SQLite file)."""

    def __init__(self, backend: Backend | Path | str) -> None:
        if not isinstance(backend, Backend):
            backend = SqliteBackend(backend)
        self._db = backend
        try:
            with backend.transaction() as conn:
                backend.prepare(conn)
                for statement in backend.schema_statements():
                    conn.execute(statement)
                row = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
                version = row["v"]
                if version is None:
                    conn.execute(
                        "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                    )
                elif version != SCHEMA_VERSION:
                    raise ConfigError(
                        f"round store schema version {version} is not {SCHEMA_VERSION}"
                    )
        except BaseException:
            backend.close()
            raise

    @property
    def backend(self) -> Backend:
        return self._db

    def _round_from_row(self, row: Any) -> RoundRecord:
        finished = row["finished_at"]
        return RoundRecord(
            round_id=row["round_id"],
            request_bytes=bytes(row["request_bytes"]),
            signature=bytes(row["signature"]),
            key_id=row["key_id"],
            state=RoundState(row["state"]),
            quorum=int(row["quorum"]),
            deadline_at=self._db.from_db(row["deadline_at"]),
            created_at=self._db.from_db(row["created_at"]),
            finished_at=self._db.from_db(finished) if finished is not None else None,
            idempotency_key=row["idempotency_key"],
            suite=row["suite"],
            scheduled_for=self._db.from_db(row["scheduled_for"])
            if row["scheduled_for"] is not None
            else None,
        )

    def _lock_round(self, conn: Connection, round_id: str) -> Any:
        """The round's row (None when there is none), locked until the transaction ends: every
        write to a round's carriers or results takes it first, so concurrent writers of one
        round (other connections, other processes) go one after the other."""
        return conn.execute(
            f"SELECT finished_at FROM rounds WHERE round_id = ?{self._db.for_update}",
            (round_id,),
        ).fetchone()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RoundStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- rounds --------------------------------------------------------------------------------

    def create_round(self, record: RoundRecord, carriers: Sequence[str]) -> RoundRecord:
        """Store a round and a pending entry per carrier; return what is stored.

        When ``record.idempotency_key`` was used before, nothing is written and the round
        created with it is returned. A record with ``suite`` and ``scheduled_for`` is stored
        as that suite's run due then (in the same transaction).
        """
        if (record.suite is None) != (record.scheduled_for is None):
            raise InvalidRequestError("a scheduled round has both a suite and a due time")
        if len(set(carriers)) != len(carriers):
            raise InvalidRequestError("a carrier is named twice in a round")
        with self._db.transaction() as conn:
            # Nothing is inserted when the id or the key is taken; a concurrent creation with
            # the same key is waited for (PostgreSQL) or cannot happen (SQLite), then found.
            inserted = conn.execute(
                f"INSERT INTO rounds ({_ROUND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (
                    record.round_id,
                    record.request_bytes,
                    record.signature,
                    record.key_id,
                    str(record.state),
                    record.quorum,
                    self._db.to_db(record.deadline_at),
                    self._db.to_db(record.created_at),
                    self._db.to_db(record.finished_at) if record.finished_at is not None else None,
                    record.idempotency_key,
                ),
            ).rowcount
            if not inserted:
                if record.idempotency_key is not None:
                    row = conn.execute(
                        f"{_ROUND_SELECT} WHERE r.idempotency_key = ?",
                        (record.idempotency_key,),
                    ).fetchone()
                    if row is not None:
                        return self._round_from_row(row)
                raise InvalidRequestError("a round with this id exists")
            now = self._db.to_db(_now())
            conn.executemany(
                "INSERT INTO carrier_rounds (round_id, carrier_id, state, updated_at)"
                " VALUES (?, ?, ?, ?)",
                [(record.round_id, c, str(CarrierRoundState.PENDING), now) for c in carriers],
            )
            if record.suite is not None and record.scheduled_for is not None:
                conn.execute(
                    "INSERT INTO scheduled_rounds (round_id, suite, scheduled_for)"
                    " VALUES (?, ?, ?)",
                    (record.round_id, record.suite, self._db.to_db(record.scheduled_for)),
                )
            row = conn.execute(
                f"{_ROUND_SELECT} WHERE r.round_id = ?", (record.round_id,)
            ).fetchone()
        logger.info(
            "round %s stored with %d carriers",
            record.round_id,
            len(carriers),
            extra={"round_id": record.round_id},
        )
        return self._round_from_row(row)

    def get_round(self, round_id: str) -> RoundRecord:
        with self._db.reading() as conn:
            row = conn.execute(f"{_ROUND_SELECT} WHERE r.round_id = ?", (round_id,)).fetchone()
        if row is None:
            raise NotFoundError("no such round")
        return self._round_from_row(row)

    def list_rounds(self, limit: int = 50, *, suite: str | None = None) -> list[RoundRecord]:
        """The ``limit`` most recently created rounds, newest first (only those a schedule
        ran for ``suite``, when given)."""
        where, args = ("", ()) if suite is None else (" WHERE s.suite = ?", (suite,))
        with self._db.reading() as conn:
            rows = conn.execute(
                f"{_ROUND_SELECT}{where}"
                f" ORDER BY r.created_at DESC, r.{self._db.insertion_order} DESC LIMIT ?",
                (*args, max(0, limit)),
            ).fetchall()
        return [self._round_from_row(r) for r in rows]

    def suite_rounds(self, suite: str) -> list[RoundRecord]:
        """Every round a schedule ran for ``suite``, in order of the times they were due."""
        with self._db.reading() as conn:
            rows = conn.execute(
                f"{_ROUND_SELECT} WHERE s.suite = ? ORDER BY s.scheduled_for, r.round_id",
                (suite,),
            ).fetchall()
        return [self._round_from_row(r) for r in rows]

    def last_scheduled(self, suite: str) -> dt.datetime | None:
        """When the suite's latest run was due (None when it never ran)."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT MAX(scheduled_for) AS due FROM scheduled_rounds WHERE suite = ?",
                (suite,),
            ).fetchone()
        return self._db.from_db(row["due"]) if row["due"] is not None else None

    def open_rounds(self) -> list[RoundRecord]:
        """Rounds not yet finished (created, dispatched or collecting), oldest first."""
        states = sorted(str(s) for s in _OPEN_ROUND_STATES)
        with self._db.reading() as conn:
            rows = conn.execute(
                f"{_ROUND_SELECT} WHERE r.state IN (?, ?, ?)"
                f" ORDER BY r.created_at, r.{self._db.insertion_order}",
                states,
            ).fetchall()
        return [self._round_from_row(r) for r in rows]

    def set_round_state(
        self, round_id: str, state: RoundState, finished_at: dt.datetime | None = None
    ) -> None:
        """Move a round to ``state``; ``finished_at`` is recorded when given, kept otherwise."""
        finished = self._db.to_db(finished_at) if finished_at is not None else None
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE rounds SET state = ?, finished_at = COALESCE(?, finished_at)"
                " WHERE round_id = ?",
                (str(state), finished, round_id),
            )
            if cur.rowcount == 0:
                raise NotFoundError("no such round")

    # --- carriers in a round -------------------------------------------------------------------

    def carrier_rounds(self, round_id: str) -> list[CarrierRound]:
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT c.round_id, c.carrier_id, c.state, c.error_code, c.message,"
                " c.updated_at, l.received_at AS late_at"
                " FROM carrier_rounds AS c LEFT JOIN late_results AS l"
                " ON l.round_id = c.round_id AND l.carrier_id = c.carrier_id"
                " WHERE c.round_id = ? ORDER BY c.carrier_id",
                (round_id,),
            ).fetchall()
        return [
            CarrierRound(
                round_id=r["round_id"],
                carrier_id=r["carrier_id"],
                state=CarrierRoundState(r["state"]),
                error_code=int(r["error_code"]),
                message=r["message"],
                updated_at=self._db.from_db(r["updated_at"]),
                late_answer_at=self._db.from_db(r["late_at"]) if r["late_at"] else None,
            )
            for r in rows
        ]

    def set_carrier_state(
        self,
        round_id: str,
        carrier_id: str,
        state: CarrierRoundState,
        error_code: int = 0,
        message: str = "",
    ) -> bool:
        """Record a carrier's state in a round; False (and no change) once it is terminal."""
        with self._db.transaction() as conn:
            self._lock_round(conn, round_id)
            row = conn.execute(
                "SELECT state FROM carrier_rounds WHERE round_id = ? AND carrier_id = ?",
                (round_id, carrier_id),
            ).fetchone()
            if row is None:
                raise NotFoundError("the carrier is not part of this round")
            if CarrierRoundState(row["state"]).terminal:
                return False
            conn.execute(
                "UPDATE carrier_rounds SET state = ?, error_code = ?, message = ?, updated_at = ?"
                " WHERE round_id = ? AND carrier_id = ?",
                (str(state), error_code, message, self._db.to_db(_now()), round_id, carrier_id),
            )
        return True

    def set_carriers_state(
        self, round_id: str, states: Sequence[tuple[str, CarrierRoundState]]
    ) -> list[str]:
        """:meth:`set_carrier_state` for several carriers of a round in one transaction (one
        sync); returns the carriers whose state changed (those not yet terminal)."""
        if not states:
            return []
        wanted = dict(states)  # the last state given for a carrier wins
        with self._db.transaction() as conn:
            self._lock_round(conn, round_id)
            current = {
                r["carrier_id"]: CarrierRoundState(r["state"])
                for r in conn.execute(
                    "SELECT carrier_id, state FROM carrier_rounds WHERE round_id = ?",
                    (round_id,),
                )
            }
            if any(c not in current for c in wanted):
                raise NotFoundError("the carrier is not part of this round")
            changed = [c for c in wanted if not current[c].terminal]
            # One statement per target state (not one per carrier): few round trips.
            now = self._db.to_db(_now())
            for state in dict.fromkeys(wanted[c] for c in changed):
                ids = [c for c in changed if wanted[c] is state]
                for chunk in _chunks(ids):
                    conn.execute(
                        "UPDATE carrier_rounds SET state = ?, error_code = 0, message = '',"
                        f" updated_at = ? WHERE round_id = ? AND carrier_id IN ({_marks(chunk)})",
                        (str(state), now, round_id, *chunk),
                    )
        return changed

    # --- results -------------------------------------------------------------------------------

    def save_result(self, result: StoredResult) -> bool:
        """Store a carrier's signed result and mark it answered, in one transaction.

        A second result for the same round and carrier is a duplicate delivery: the first is
        kept and False returned. While the round is open a result is final, so it marks the
        carrier answered whatever state it was in (an answer after a disconnection is still an
        answer). Once the round has finished its tables are frozen: a result arriving then is
        kept apart as late (see :meth:`late_results`), changes nothing of the round, and False
        is returned.
        """
        outcome = self.save_results([result])[0]
        if isinstance(outcome, OversightError):
            raise outcome
        return outcome

    def save_results(self, results: Sequence[StoredResult]) -> list[bool | OversightError]:
        """:meth:`save_result` for several results in one transaction (one sync): per result,
        True when stored, False for a duplicate, or the error it raises on its own (a result
        for a carrier not in its round is not stored; the others are)."""
        by_round: dict[str, list[StoredResult]] = {}
        for result in results:
            by_round.setdefault(result.round_id, []).append(result)
        stored: set[int] = set()  # id() of each result stored now
        members: set[tuple[str, str]] = set()
        with self._db.transaction() as conn:
            # In order of round id: two writers lock the rounds they share in the same order.
            for round_id, some in sorted(by_round.items()):
                fresh, in_round = self._insert_results(conn, round_id, some)
                stored.update(id(r) for r in fresh)
                members.update((round_id, c) for c in in_round)
        outcomes: list[bool | OversightError] = []
        for result in results:
            if id(result) in stored:
                outcomes.append(True)
            elif (result.round_id, result.carrier_id) in members:
                outcomes.append(False)  # a duplicate delivery
            else:
                outcomes.append(NotFoundError("the carrier is not part of this round"))
        return outcomes

    def _insert_results(
        self, conn: Connection, round_id: str, results: Sequence[StoredResult]
    ) -> tuple[list[StoredResult], set[str]]:
        """Insert the new results of one round, with a few statements for the lot; return
        them and which of the carriers named are part of the round (a finished round's go to
        the late results, and none is new)."""
        finished = self._lock_round(conn, round_id)
        carriers = list(dict.fromkeys(r.carrier_id for r in results))
        members: set[str] = set()
        stored: set[str] = set()
        for chunk in _chunks(carriers):
            marks = _marks(chunk)
            members.update(
                row["carrier_id"]
                for row in conn.execute(
                    "SELECT carrier_id FROM carrier_rounds"
                    f" WHERE round_id = ? AND carrier_id IN ({marks})",
                    (round_id, *chunk),
                )
            )
            stored.update(
                row["carrier_id"]
                for row in conn.execute(
                    "SELECT carrier_id FROM results"
                    f" WHERE round_id = ? AND carrier_id IN ({marks})",
                    (round_id, *chunk),
                )
            )
        new: dict[str, StoredResult] = {}
        for r in results:  # the first delivery of each carrier's result; later ones duplicate
            if r.carrier_id in members and r.carrier_id not in stored:
                new.setdefault(r.carrier_id, r)
        if finished is not None and finished["finished_at"] is not None:
            if new:
                conn.executemany(
                    f"INSERT INTO late_results ({_RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    [self._result_values(r) for r in new.values()],
                )
            return [], members
        fresh = list(new.values())
        for rows in _chunks(fresh):
            conn.execute(
                f"INSERT INTO results ({_RESULT_COLUMNS}) VALUES "
                + ", ".join("(?, ?, ?, ?, ?, ?)" for _ in rows),
                [value for r in rows for value in self._result_values(r)],
            )
        now = self._db.to_db(_now())
        for ids in _chunks(list(new)):
            conn.execute(
                "UPDATE carrier_rounds SET state = ?, error_code = 0, message = '', updated_at = ?"
                f" WHERE round_id = ? AND carrier_id IN ({_marks(ids)})",
                (str(CarrierRoundState.ANSWERED), now, round_id, *ids),
            )
        return fresh, members

    def _result_values(self, result: StoredResult) -> tuple[object, ...]:
        """A result's values in the order of ``_RESULT_COLUMNS``."""
        return (
            result.round_id,
            result.carrier_id,
            result.result_bytes,
            result.signature,
            result.key_id,
            self._db.to_db(result.received_at),
        )

    def results(self, round_id: str, *, late: bool = False) -> list[StoredResult]:
        """A round's results, by carrier (with ``late``: those that arrived after it
        finished, kept apart)."""
        table = "late_results" if late else "results"
        with self._db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_RESULT_COLUMNS} FROM {table} WHERE round_id = ? ORDER BY carrier_id",
                (round_id,),
            ).fetchall()
        return [
            StoredResult(
                round_id=r["round_id"],
                carrier_id=r["carrier_id"],
                result_bytes=bytes(r["result_bytes"]),
                signature=bytes(r["signature"]),
                key_id=r["key_id"],
                received_at=self._db.from_db(r["received_at"]),
            )
            for r in rows
        ]

    def result_keys(self, round_id: str) -> list[tuple[str, dt.datetime]]:
        """(carrier id, received at) of each of a round's results, by carrier: which results
        :meth:`results` would return, without reading them (late results are not among them)."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT carrier_id, received_at FROM results WHERE round_id = ?"
                " ORDER BY carrier_id",
                (round_id,),
            ).fetchall()
        return [(r["carrier_id"], self._db.from_db(r["received_at"])) for r in rows]

    # --- the carrier registry ------------------------------------------------------------------

    def upsert_carrier(self, carrier_id: str, display_name: str = "") -> None:
        """Register a carrier; a non-empty ``display_name`` replaces the stored one."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO carriers (carrier_id, display_name, registered_at) VALUES (?, ?, ?)"
                " ON CONFLICT (carrier_id) DO UPDATE SET display_name ="
                " CASE WHEN excluded.display_name = '' THEN carriers.display_name"
                " ELSE excluded.display_name END",
                (carrier_id, display_name, self._db.to_db(_now())),
            )

    def carriers(self) -> list[tuple[str, str]]:
        """Registered carriers as (carrier id, display name), by id."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT carrier_id, display_name FROM carriers ORDER BY carrier_id"
            ).fetchall()
        return [(r["carrier_id"], r["display_name"]) for r in rows]
