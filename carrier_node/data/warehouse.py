"""A carrier's SQL warehouse as a data source (PostgreSQL first): metrics run there by pushdown.

The node connects with read-only transactions and a statement timeout. On each connection it
creates temporary views named like the data schema's tables over the carrier's schema, with the
canonical column types (a column the warehouse lacks appears as a typed NULL), so the same
metric expressions run unchanged; only the dialect differs. View SQL is built as expressions:
the schema and table names are quoted identifiers, never pasted text. Another warehouse engine
is a new dialect and a connection here, not a new metric implementation.
"""

from __future__ import annotations

import decimal
import hashlib
import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from sqlglot import exp

from fedoversight.errors import ConfigError, DataSourceError
from fedoversight.schema import TABLES, ColumnType, Table

log = logging.getLogger(__name__)

#: The PostgreSQL type of each schema type (the views cast every column to it).
PG_TYPES = {
    ColumnType.CODE: "TEXT",
    ColumnType.DATE: "DATE",
    ColumnType.MONEY: "DECIMAL(18, 2)",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.INT: "BIGINT",
    ColumnType.NUMBER: "DOUBLE PRECISION",
}


class WarehouseConfig(BaseModel):
    """Where the carrier's tables live in its PostgreSQL warehouse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="server host")
    port: int = Field(default=5432, description="server port")
    dbname: str = Field(description="database")
    user: str = Field(default="postgres", description="a read-only role")
    password_file: Path | None = Field(
        default=None, description="file holding the password (else $PGPASSWORD, else none)"
    )
    schema_name: str = Field(default="public", description="schema holding the carrier's tables")
    sslmode: str = Field(default="prefer", description="libpq sslmode")
    statement_timeout_seconds: int = Field(default=1800, gt=0, description="per query")

    def connect_kwargs(self) -> dict[str, Any]:
        password = None
        if self.password_file is not None:
            try:
                password = self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {self.password_file.name}") from exc
        elif "PGPASSWORD" in os.environ:
            password = os.environ["PGPASSWORD"]
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "sslmode": self.sslmode,
            "connect_timeout": 10,
            "options": f"-c statement_timeout={self.statement_timeout_seconds * 1000}",
        }
        if password is not None:
            kwargs["password"] = password
        return kwargs


def _view(schema: str, table: Table, present: set[str]) -> str:
    columns = []
    for column in table.columns:
        typ = exp.DataType.build(PG_TYPES[column.type], dialect="postgres")
        source: exp.Expression = (
            exp.column(column.name, table="src") if column.name in present else exp.null()
        )
        typed: exp.Expr = exp.cast(source, typ)
        if column.type is ColumnType.CODE:
            # Codes compare byte by byte, as the catalogue reads them and DuckDB does: under
            # a language collation (a warehouse's default) a range such as E0100-E9999 would
            # take 'e0150', and the least of two member ids could be another row's.
            typed = exp.Collate(this=typed, expression=exp.to_identifier("C", quoted=True))
        columns.append(typed.as_(column.name))
    select = exp.select(*columns).from_(
        exp.alias_(exp.table_(table.name, db=schema, quoted=True), "src")
    )
    view = exp.Create(
        this=exp.table_(table.name, db="pg_temp"),
        kind="VIEW",
        expression=select,
        replace=True,
    )
    return view.sql(dialect="postgres")


def _arrow_value(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _fetch_arrow(con: psycopg.Connection[Any], sql: str) -> pa.Table:
    try:
        with con.cursor() as cur:
            cur.execute(sql)  # built from expressions
            names = [d.name for d in cur.description or ()]
            rows = cur.fetchall()
    except psycopg.Error as exc:
        # The server's message may quote the query or data: only the error class is kept.
        log.error("warehouse query failed: %s", type(exc).__name__)
        raise DataSourceError(f"warehouse query failed ({type(exc).__name__})") from None
    data = {n: [_arrow_value(r[i]) for r in rows] for i, n in enumerate(names)}
    return pa.table(data) if names else pa.table({})


class _Session:
    """One connection kept for a batch. The connection's transactions are read-only; the
    engine's temporary tables are made (and statistics gathered on them) in a transaction that
    asks to write, which a temporary table needs: nothing but the statement built by the
    engine runs in it, and the node's role needs no right beyond the database's TEMPORARY."""

    def __init__(self, con: psycopg.Connection[Any]) -> None:
        self._con = con
        self._tables: list[str] = []
        self._timeout = 0

    def execute_arrow(self, sql: str) -> pa.Table:
        return _fetch_arrow(self._con, sql)

    def interrupt(self) -> None:
        """Ask the server to cancel the statement running (from another thread)."""
        self._con.cancel_safe(timeout=5.0)

    def time_limit(self, seconds: float) -> None:
        """The server stops any later statement of the session running longer than this."""
        milliseconds = max(1, int(seconds * 1000)) if math.isfinite(seconds) else 0
        self._timeout = milliseconds
        try:
            with self._con.cursor() as cur:
                cur.execute(
                    psycopg.sql.SQL("SET statement_timeout = {}").format(
                        psycopg.sql.Literal(milliseconds)
                    )
                )
        except psycopg.Error as exc:
            log.error("warehouse statement failed: %s", type(exc).__name__)
            raise DataSourceError(f"warehouse statement failed ({type(exc).__name__})") from None

    def _write(self, *statements: str | psycopg.sql.Composed) -> None:
        try:
            with self._con.transaction(), self._con.cursor() as cur:
                cur.execute("SET TRANSACTION READ WRITE")
                for statement in statements:
                    cur.execute(statement)  # built from expressions
        except psycopg.Error as exc:
            log.error("warehouse statement failed: %s", type(exc).__name__)
            raise DataSourceError(f"warehouse statement failed ({type(exc).__name__})") from None

    def create_table(self, name: str, statement: str) -> None:
        self._write(statement, psycopg.sql.SQL("ANALYZE {}").format(psycopg.sql.Identifier(name)))
        self._tables.append(name)

    def drop_table(self, name: str) -> None:
        self._write(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(psycopg.sql.Identifier(name)))
        self._tables.remove(name)

    def close(self) -> None:
        """Drop what the batch left (a failed query leaves its readers' tables), and lift the
        session's time limit (the connection serves later batches)."""
        if self._timeout:
            try:
                self.time_limit(math.inf)
            except DataSourceError:
                self._con.close()
                return
        for name in list(self._tables):
            try:
                self.drop_table(name)
            except DataSourceError:
                self._con.close()  # the tables go with the connection
                return


class PostgresSource:
    """The warehouse data source; thread-safe (one connection per calling thread)."""

    dialect = "postgres"
    #: Every block a query's result reads is made an analysed temporary table, also for a
    #: request of one query (see :meth:`carrier_node.query.engine.Engine._min_uses`).
    block_min_uses = 1

    def __init__(self, config: WarehouseConfig) -> None:
        self.config = config
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self.tables: frozenset[str] = frozenset()
        self._columns: dict[str, set[str]] = {}

    def open(self) -> list[object]:
        """Check the warehouse has the required tables; nothing is read but the catalog."""
        self._connection()
        required = {t.name for t in TABLES if t.required}
        missing_tables = sorted(required - set(self._columns))
        if missing_tables:
            raise DataSourceError(
                f"warehouse schema {self.config.schema_name} lacks tables: "
                + ", ".join(missing_tables)
            )
        for table in TABLES:
            if table.name not in self._columns:
                continue
            missing = [
                c.name for c in table.required_columns if c.name not in self._columns[table.name]
            ]
            if missing:
                raise DataSourceError(
                    f"warehouse table {table.name} lacks columns: {', '.join(missing)}"
                )
        self.tables = frozenset(self._columns)
        return []

    def catalog(self) -> dict[str, set[str]]:
        """The schema's tables of the warehouse and their columns (from the catalog only)."""
        self._connection()
        names = {t.name for t in TABLES}
        return {t: set(c) for t, c in self._columns.items() if t in names}

    def _connection(self) -> psycopg.Connection[Any]:
        con: psycopg.Connection[Any] | None = getattr(self._local, "con", None)
        if con is not None and not con.closed:
            return con
        try:
            con = psycopg.connect(**self.config.connect_kwargs(), autocommit=True)
        except psycopg.Error as exc:
            raise DataSourceError(
                f"cannot connect to the warehouse ({type(exc).__name__})"
            ) from None
        with con.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = %s",
                (self.config.schema_name,),
            )
            columns: dict[str, set[str]] = {}
            for table_name, column_name in cur.fetchall():
                columns.setdefault(table_name, set()).add(column_name)
            self._columns = columns
            for table in TABLES:
                if table.name in columns:
                    cur.execute(_view(self.config.schema_name, table, columns[table.name]))
            # Temporary views exist now; from here on the session only reads.
            cur.execute("SET default_transaction_read_only = on")
        self._local.con = con
        with self._lock:
            self._connections.append(con)
        return con

    def execute_arrow(self, sql: str) -> pa.Table:
        return _fetch_arrow(self._connection(), sql)

    @contextmanager
    def session(self) -> Iterator[_Session]:
        """The calling thread's connection for a batch of queries (see
        :class:`carrier_node.query.engine.Session`); its temporary tables are dropped at the end."""
        session = _Session(self._connection())
        try:
            yield session
        finally:
            session.close()

    def snapshot(self) -> str:
        """Describes the warehouse tables (row estimates, last analyze), never their content."""
        con = self._connection()
        with con.cursor() as cur:
            cur.execute(
                "SELECT relname, n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables"
                " WHERE schemaname = %s ORDER BY relname",
                (self.config.schema_name,),
            )
            rows = cur.fetchall()
        text = repr((self.config.host, self.config.dbname, self.config.schema_name, rows))
        return hashlib.sha256(text.encode()).hexdigest()

    def close(self) -> None:
        with self._lock:
            for con in self._connections:
                con.close()
            self._connections.clear()


__all__ = ["PG_TYPES", "PostgresSource", "WarehouseConfig"]
