"""The default data source: a directory of Parquet or CSV files read with embedded DuckDB.

:meth:`FileSource.open` validates every table (see :mod:`carrier_node.validation`) and registers
one view per usable table, named as the table, with the canonical column types and the bad rows
left out. The views read the files on each query; nothing is materialised.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import duckdb
import pyarrow
from sqlglot import exp

from carrier_node.validation import (
    Problem,
    TableCheck,
    candidate_files,
    check_directory,
    check_tables,
)
from fedoversight.errors import DataSourceError
from fedoversight.schema import TABLES

__all__ = ["FileSource", "Problem", "check_directory"]

logger = logging.getLogger(__name__)


class _Session:
    """One DuckDB cursor; errors name their class only (see :meth:`FileSource.execute_arrow`)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor

    def _fail(self, exc: duckdb.Error) -> DataSourceError:
        logger.error("query failed on the file data source (%s)", type(exc).__name__)
        return DataSourceError(f"query failed on the file data source ({type(exc).__name__})")

    def execute_arrow(self, sql: str) -> pyarrow.Table:
        try:
            relation = self._cursor.sql(sql)
            if relation is None:
                raise DataSourceError("the query returned no result")
            table: pyarrow.Table = relation.to_arrow_table()
            return table
        except duckdb.Error as exc:
            raise self._fail(exc) from None

    def create_table(self, name: str, statement: str) -> None:
        try:
            self._cursor.execute(statement)
        except duckdb.Error as exc:
            raise self._fail(exc) from None

    def drop_table(self, name: str) -> None:
        drop = exp.Drop(tables=[exp.to_table(name)], kind="TABLE", exists=True)
        try:
            self._cursor.execute(drop.sql(dialect="duckdb"))
        except duckdb.Error as exc:
            raise self._fail(exc) from None


class FileSource:
    """A carrier's data directory, queried through DuckDB views named as the schema's tables."""

    dialect: ClassVar[str] = "duckdb"

    def __init__(
        self,
        directory: Path,
        *,
        memory_limit: str | None = None,
        threads: int | None = None,
        temp_directory: Path | None = None,
    ) -> None:
        """
        Args:
            directory: the directory holding ``NAME.parquet`` or ``NAME.csv`` per table.
            memory_limit: DuckDB's memory limit (e.g. ``"4GB"``); DuckDB's default when None.
            threads: DuckDB worker threads; DuckDB's default (all cores) when None.
            temp_directory: where DuckDB spills when a query exceeds the memory limit.
        """
        self.directory = Path(directory)
        # Results are aggregates the engine sorts itself: rows need not keep the order they
        # were read in, which lets DuckDB fill a batch's tables in parallel with less memory.
        self._config: dict[str, str | bool | int | float | list[str]] = {
            "preserve_insertion_order": False,
        }
        if memory_limit is not None:
            self._config["memory_limit"] = memory_limit
        if threads is not None:
            self._config["threads"] = threads
        if temp_directory is not None:
            self._config["temp_directory"] = str(temp_directory)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._checks: tuple[TableCheck, ...] = ()
        self._lock = threading.Lock()
        #: The tables available after :meth:`open`.
        self.tables: frozenset[str] = frozenset()

    def open(self) -> list[Problem]:
        """Validate the directory and register the views.

        Returns every problem found (warnings, and errors of optional tables, which are then
        left out of :attr:`tables`). Raises :class:`DataSourceError` when a required table is
        unusable; its message names tables, files and columns, never a value.
        """
        with self._lock:
            self._close_locked()
            try:
                con = duckdb.connect(":memory:", config=self._config)
            except duckdb.Error as exc:
                raise DataSourceError(
                    f"cannot start DuckDB with the configured settings ({type(exc).__name__})"
                ) from None
            try:
                checks = check_tables(con, self.directory)
                problems = [p for check in checks for p in check.problems]
                for p in problems:
                    log = logger.error if p.severity == "error" else logger.warning
                    log("%s", p.describe())
                unusable = [c for c in checks if c.table.required and not c.usable]
                if unusable:
                    reasons = [
                        p.describe() for c in unusable for p in c.problems if p.severity == "error"
                    ]
                    raise DataSourceError("required data unusable: " + "; ".join(reasons))
                for check in checks:
                    if check.view is not None:
                        self._create_view(con, check)
            except BaseException:
                con.close()
                raise
            self._con = con
            self._checks = checks
            self.tables = frozenset(c.table.name for c in checks if c.usable)
            logger.info("data source open: %d tables", len(self.tables))
            return problems

    @staticmethod
    def _create_view(con: duckdb.DuckDBPyConnection, check: TableCheck) -> None:
        assert check.view is not None
        # A persistent (not temporary) view, so every cursor of the connection sees it.
        create = exp.Create(
            this=exp.Table(this=exp.to_identifier(check.table.name, quoted=True)),
            kind="VIEW",
            expression=check.view,
            replace=True,
        )
        try:
            con.execute(create.sql(dialect="duckdb"))
        except duckdb.Error as exc:
            raise DataSourceError(
                f"cannot register table {check.table.name} ({type(exc).__name__})"
            ) from None

    def execute_arrow(self, sql: str) -> pyarrow.Table:
        """Run one query on a fresh cursor (safe to call from several threads at once).

        A failure raises :class:`DataSourceError` naming the error class only: DuckDB's
        message may quote the query or a value, so neither is kept.
        """
        with self.session() as session:
            return session.execute_arrow(sql)

    @contextmanager
    def session(self) -> Iterator[_Session]:
        """A cursor of its own for a batch of queries (see :class:`carrier_node.engine.Session`);
        its temporary tables are seen by nothing else and go with it."""
        con = self._con
        if con is None:
            raise DataSourceError("the file data source is not open")
        cursor = con.cursor()
        try:
            yield _Session(cursor)
        finally:
            cursor.close()

    def snapshot(self) -> str:
        """A digest of which files are present, their sizes and modification times.

        It describes the files without reading them: a changed file changes the digest.
        """
        digest = hashlib.sha256()
        for table in TABLES:
            for data_file in candidate_files(self.directory, table):
                try:
                    stat = data_file.path.stat()
                except OSError:
                    continue
                entry = f"{table.name}\0{data_file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                digest.update(entry.encode())
        return digest.hexdigest()

    def data_quality(self) -> dict[str, int]:
        """Rows excluded (or, for repeated keys, counted) per ``table.column.kind``.

        Table-level figures use ``*`` for the column: ``medical_claims.*.duplicate_key`` and
        ``TABLE.*.excluded``, the rows of a usable table left out of its view (a row failing
        several checks is counted once there, and once per check elsewhere).
        """
        counts: dict[str, int] = {}
        for check in self._checks:
            for p in check.problems:
                if p.severity == "warning" and p.rows > 0:
                    counts[f"{p.table}.{p.column or '*'}.{p.kind}"] = p.rows
            if check.usable:
                counts[f"{check.table.name}.*.excluded"] = check.excluded
        return counts

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._checks = ()
        self.tables = frozenset()

    def __enter__(self) -> FileSource:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
