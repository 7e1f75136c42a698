"""What the query layer needs of a data source: run SQL text and hand back Arrow tables, in
one session when a batch's queries share temporary tables. :mod:`carrier_node.data.files`
(embedded DuckDB over files) and :mod:`carrier_node.data.warehouse` (PostgreSQL) provide it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import pyarrow as pa


class Session(Protocol):
    """One connection of a data source, kept for the queries of a batch: temporary tables made
    on it are seen by its later queries and by nothing else."""

    def create_table(self, name: str, statement: str) -> None:
        """Run ``statement``, a ``CREATE TEMPORARY TABLE name AS SELECT ...`` built by the
        engine, and make the table ready to be read (e.g. its statistics gathered)."""
        ...

    def drop_table(self, name: str) -> None: ...

    def execute_arrow(self, sql: str) -> pa.Table: ...

    # A session may also have ``interrupt()``, called from another thread to stop the
    # statement it runs (the statement then fails), and ``time_limit(seconds)``, a limit the
    # source itself enforces on each later statement. The engine uses them where present.


class DataSource(Protocol):
    """Where a carrier's tables live: an embedded DuckDB over files, or a SQL warehouse."""

    @property
    def dialect(self) -> str:
        """sqlglot dialect the source executes."""
        ...

    def execute_arrow(self, sql: str) -> pa.Table: ...

    def session(self) -> AbstractContextManager[Session]: ...

    def snapshot(self) -> str: ...
