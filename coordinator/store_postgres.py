"""The round store in a PostgreSQL database: for a coordinator whose state lives in a managed
database, so that it can be started on another host and go on where it stopped.

The statements are :class:`coordinator.store.RoundStore`'s; what differs is here. The tables
live in one schema of their own (``schema_name``, created when missing), which is all the
connection sees (``search_path``). Times are ``TIMESTAMPTZ`` and bytes ``BYTEA``; rounds are
ordered by insertion with an identity column, where SQLite has its ``rowid``.

One connection is kept, in autocommit mode with an explicit transaction per write, and every
commit is durable before it returns (``synchronous_commit=on`` for the session, whatever the
server's default). Writers of a round lock its row first (``FOR UPDATE``), so two connections
(a second process, an operator's command) never interleave their writes to one round; a
connection lost between calls (a failover, an idle timeout) is opened again by the next call.
No password is ever logged or put in an error message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from coordinator.config import PostgresStore
from coordinator.store import Backend, Connection
from fedoversight.errors import ConfigError, OversightError

log = logging.getLogger(__name__)

#: Serialises creating the schema between processes starting at once (any fixed number).
_SCHEMA_LOCK = 0x6F76_7273


def redacted(conninfo: str) -> str:
    """A connection string as it may be shown: host, port, database and user, no password."""
    params = conninfo_to_dict(conninfo)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{params.get('dbname') or ''}"


class _QmarkConnection:
    """A psycopg connection taking the store's ``?`` placeholders (its SQL has no other ``?``
    and no ``%``)."""

    def __init__(self, conn: psycopg.Connection[DictRow]) -> None:
        self.conn = conn

    def execute(self, query: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[DictRow]:
        return self.conn.execute(query.replace("?", "%s"), parameters)

    def executemany(
        self, query: str, parameters: Iterable[Sequence[Any]], /
    ) -> psycopg.Cursor[DictRow]:
        cur = self.conn.cursor()
        cur.executemany(query.replace("?", "%s"), parameters)
        return cur


class PostgresBackend(Backend):
    """The round store's tables in ``config.schema_name`` of a PostgreSQL database.

    Connects at once: an unreachable database or a refused login is a :class:`ConfigError`
    naming the server (never the password) and libpq's reason.
    """

    blob_type = "BYTEA"
    time_type = "TIMESTAMPTZ"
    insertion_order = "seq"
    insertion_column = ",\n    seq BIGINT GENERATED ALWAYS AS IDENTITY"
    for_update = " FOR UPDATE"

    def __init__(self, config: PostgresStore) -> None:
        super().__init__()
        self.config = config
        self._conninfo = config.url.get_secret_value()
        self._password: str | None = None
        if config.password_file is not None:
            try:
                self._password = config.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read round_store.password_file {config.password_file}: {exc.strerror}"
                ) from None
        if "password" in conninfo_to_dict(self._conninfo):
            log.warning(
                "the round store's URL holds a password: prefer round_store.password_file,"
                " PGPASSWORD or ~/.pgpass"
            )
        try:
            self._conn: psycopg.Connection[DictRow] | None = self._connect()
        except OversightError as exc:
            raise ConfigError(exc.detail) from None
        log.info("round store: %s", self.describe())

    def describe(self) -> str:
        return f"PostgreSQL {redacted(self._conninfo)}, schema {self.config.schema_name}"

    def _connect(self) -> psycopg.Connection[DictRow]:
        kwargs: dict[str, Any] = {
            "connect_timeout": self.config.connect_timeout_seconds,
            "options": "-c synchronous_commit=on -c TimeZone=UTC",
            "application_name": "fedoversight-coordinator",
        }
        if self._password is not None:
            kwargs["password"] = self._password
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row, **kwargs)
        except psycopg.Error as exc:
            raise OversightError(
                f"cannot connect to the round store at {redacted(self._conninfo)}:"
                f" {self._reason(exc)}"
            ) from None
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(self.config.schema_name))
        )
        return conn

    def _reason(self, exc: psycopg.Error) -> str:
        """libpq's reason on one line, with any password taken out."""
        reason = " ".join(str(exc).split()).removeprefix("connection failed: ")
        for secret in (self._password, conninfo_to_dict(self._conninfo).get("password")):
            if secret:
                reason = reason.replace(str(secret), "***")
        return reason or type(exc).__name__

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                log.warning("round store connection lost: connecting again")
                self._conn.close()
                self._conn = None
            self._conn = self._connect()
        return _QmarkConnection(self._conn)

    @contextmanager
    def _atomic(self, conn: Connection) -> Iterator[object]:
        assert self._conn is not None  # just opened by _connection()
        with self._conn.transaction():
            yield conn

    def prepare(self, conn: Connection) -> None:
        # Two coordinators starting at once would race to create the same tables.
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        schema = self.config.schema_name
        # A schema made beforehand by the database's owner needs no right to create one.
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,)).fetchone():
            return
        assert self._conn is not None
        self._conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
