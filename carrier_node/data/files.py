"""The default data source: a directory of Parquet or CSV files read with embedded DuckDB.

A table is one file (``NAME.parquet``, ``NAME.csv``, ``NAME.csv.gz``, ``NAME.csv.zst``) or a
directory ``NAME/`` of such files, at any depth (Hive-style ``year=2026/month=01/`` folders
included), read as one table (see :mod:`carrier_node.data.validation`).

:meth:`FileSource.open` validates every table (see :mod:`carrier_node.data.validation`) and
registers one view per usable table, named as the table, with the canonical column types and
the bad rows left out. The views read the files on each query; nothing is materialised. A view
is valid for its file as validated (it filters only by the checks some row failed): when a file
changes, every table is validated again before the next batch reads them, and a batch during
which a file changed fails rather than return what it read.

Opening does not count repeated claim keys: they change nothing the views read (every row is
kept, and the catalogue counts rows tied on a line's greatest version alike), and counting
them means grouping every claim line (at 2M members, more than the rest of the checks
together). :meth:`FileSource.data_quality` counts them when first asked, and
``carrier-node check`` reports them with the rows they are on.
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

from carrier_node.data.validation import (
    CsvEncoding,
    Problem,
    TableCheck,
    candidate_files,
    check_directory,
    check_tables,
    count_repeats,
    directory_problem,
    money_sums_fit_int64,
)
from fedoversight.errors import DataSourceError
from fedoversight.schema import TABLES

__all__ = ["FileSource", "Problem", "check_directory"]

logger = logging.getLogger(__name__)


class _Session:
    """One DuckDB cursor; errors name their class only (see :meth:`FileSource.execute_arrow`)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, money_sums_fit_int64: bool) -> None:
        self._cursor = cursor
        #: Whether every sum of one table's cents fits a 64-bit integer, for the files this
        #: session reads (see :func:`carrier_node.data.validation.money_sums_fit_int64`).
        self.money_sums_fit_int64 = money_sums_fit_int64

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

    def interrupt(self) -> None:
        """Stop the statement running on this cursor (from another thread)."""
        self._cursor.interrupt()

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


def _define(con: duckdb.DuckDBPyConnection, statement: exp.Expr, failure: str) -> None:
    """Run a view definition; a failure names the error class only (DuckDB's text may quote
    a file's value)."""
    try:
        con.execute(statement.sql(dialect="duckdb"))
    except duckdb.Error as exc:
        raise DataSourceError(f"{failure} ({type(exc).__name__})") from None


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
        csv_encoding: CsvEncoding = "auto",
    ) -> None:
        """
        Args:
            directory: the directory holding each table as a file or a directory of files.
            memory_limit: DuckDB's memory limit (e.g. ``"4GB"``); DuckDB's default when None.
            threads: DuckDB worker threads; DuckDB's default (all cores) when None.
            temp_directory: where DuckDB spills when a query exceeds the memory limit.
            csv_encoding: how CSV text is decoded; ``auto`` detects UTF-8, UTF-16 or Latin-1.
        """
        self.directory = Path(directory)
        self.csv_encoding: CsvEncoding = csv_encoding
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
        #: Repeated keys per table, counted when first asked (see :meth:`data_quality`).
        self._repeats: dict[str, int | None] = {}
        self._lock = threading.Lock()
        #: The :meth:`snapshot` of the files the views were made for, and why they are unusable
        #: when the last validation found them so (raised until the files change again).
        self._validated: str | None = None
        self._unusable: DataSourceError | None = None
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
                problems = self._validate_locked(con, self.snapshot())
            except BaseException:
                con.close()
                self._validated = self._unusable = None
                raise
            self._con = con
            logger.info("data source open: %d tables", len(self.tables))
            return problems

    def _validate_locked(self, con: duckdb.DuckDBPyConnection, snapshot: str) -> list[Problem]:
        """Check every table and make the views of the usable ones, valid for the files of
        ``snapshot`` (taken before the checks: a change during them is seen at the next use)."""
        missing = directory_problem(self.directory)
        if missing is not None:
            logger.error("%s", missing.describe())
            raise DataSourceError("required data unusable: " + missing.describe())
        checks = check_tables(con, self.directory, self.csv_encoding, count_repeats=False)
        problems = [p for check in checks for p in check.problems]
        for p in problems:
            log = logger.error if p.severity == "error" else logger.warning
            log("%s", p.describe())
        unusable = [c for c in checks if c.table.required and not c.usable]
        if unusable:
            reasons = [p.describe() for c in unusable for p in c.problems if p.severity == "error"]
            raise DataSourceError("required data unusable: " + "; ".join(reasons))
        for check in checks:
            if check.view is not None:
                self._create_view(con, check)
            else:
                self._drop_view(con, check.table.name)
        self._checks = checks
        self._repeats = {}
        self.tables = frozenset(c.table.name for c in checks if c.usable)
        self._validated, self._unusable = snapshot, None
        return problems

    def _connection_locked(self) -> tuple[duckdb.DuckDBPyConnection, str]:
        """The connection, its views valid for the files as they are now: when a file changed
        since it was validated, every table is validated again first (a table now unusable
        raises, and keeps raising until the files change again). Also the files' snapshot."""
        con = self._con
        if con is None:
            raise DataSourceError("the file data source is not open")
        current = self.snapshot()
        if current != self._validated:
            logger.info("data files changed since they were validated: validating them again")
            try:
                self._validate_locked(con, current)
            except DataSourceError as exc:
                for table in TABLES:  # nothing is read from files that failed their checks
                    self._drop_view(con, table.name)
                self._checks, self.tables = (), frozenset()
                self._validated, self._unusable = current, exc
        if self._unusable is not None:
            raise self._unusable
        assert self._validated is not None
        return con, self._validated

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
        _define(con, create, f"cannot register table {check.table.name}")

    @staticmethod
    def _drop_view(con: duckdb.DuckDBPyConnection, name: str) -> None:
        view = exp.Table(this=exp.to_identifier(name, quoted=True))
        drop = exp.Drop(tables=[view], kind="VIEW", exists=True)
        _define(con, drop, f"cannot unregister table {name}")

    def execute_arrow(self, sql: str) -> pyarrow.Table:
        """Run one query on a fresh cursor (safe to call from several threads at once).

        A failure raises :class:`DataSourceError` naming the error class only: DuckDB's
        message may quote the query or a value, so neither is kept.
        """
        with self.session() as session:
            return session.execute_arrow(sql)

    @contextmanager
    def session(self) -> Iterator[_Session]:
        """A cursor of its own for a batch of queries (see
        :class:`carrier_node.data.source.Session`); its temporary tables are seen by nothing
        else and go with it.

        The batch reads the files as validated: a file changed since is validated again before
        it starts, and a file that changes while it runs fails it at the end (its results mix
        two versions of the data, some read past the checks), with a :class:`DataSourceError`.
        """
        with self._lock:
            con, validated = self._connection_locked()
            int64_sums = money_sums_fit_int64(self._checks)
        cursor = con.cursor()
        try:
            yield _Session(cursor, int64_sums)
        finally:
            cursor.close()
        if self.snapshot() != validated:
            logger.error("data files changed while a batch read them: its results are dropped")
            raise DataSourceError(
                "the data files changed during the evaluation; nothing of it is kept, and the "
                "files are validated again before the next one"
            )

    def snapshot(self) -> str:
        """A digest of which files are present (each file of a table's directory too), their
        sizes and modification times.

        It describes the files without reading them: a changed file changes the digest.
        """
        digest = hashlib.sha256()
        for table in TABLES:
            for data_file in candidate_files(self.directory, table):
                for path in data_file.files:
                    try:
                        stat = path.stat()
                    except OSError:
                        continue
                    name = data_file.file_name(path)
                    entry = f"{table.name}\0{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                    digest.update(entry.encode())
        return digest.hexdigest()

    @property
    def money_sums_fit_int64(self) -> bool:
        """Whether every sum of one table's cents fits a 64-bit integer, for the files as
        last validated (a session tells for the files it reads)."""
        return money_sums_fit_int64(self._checks)

    @property
    def checks(self) -> tuple[TableCheck, ...]:
        """Each table's check as last validated: its problems, its view and
        :attr:`~carrier_node.data.validation.TableCheck.located` (its rows with file and row
        number). Empty while the source is closed or its data unusable."""
        return self._checks

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
            if check.usable and check.repeats is not None:
                repeated = self._repeated_keys(check)
                if repeated:
                    counts[f"{check.table.name}.*.duplicate_key"] = repeated
        return counts

    def _repeated_keys(self, check: TableCheck) -> int | None:
        """The rows of a table repeating an earlier key, counted once per validation (None
        when the files could not be read for it)."""
        with self._lock:
            name = check.table.name
            if name not in self._repeats and self._con is not None:
                repeated = count_repeats(self._con.cursor(), check)
                if repeated:
                    logger.warning(
                        "%s: %d rows repeat an earlier key; kept, counted",
                        name,
                        repeated,
                    )
                self._repeats[name] = repeated
            return self._repeats.get(name)

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._checks = ()
        self._repeats = {}
        self.tables = frozenset()
        self._validated = self._unusable = None

    def __enter__(self) -> FileSource:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
