"""The PostgreSQL server the tests use (127.0.0.1:5432, trust auth, database ``test``).

Where none is reachable the tests needing it skip with the reason; with
FEDOVERSIGHT_REQUIRE_POSTGRES=1 (as in CI) an unreachable server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.sql
import pytest

DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5"


def connect() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the test server, or a skip (a failure in CI)."""
    try:
        return psycopg.connect(DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("FEDOVERSIGHT_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required here but unreachable: {type(exc).__name__}")
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432 (set up one to run these tests)")


@contextmanager
def fresh_schema(prefix: str = "fedoversight_test") -> Iterator[str]:
    """A schema name no one uses yet; the schema (made by whoever uses it) is dropped after."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    con = connect()
    try:
        yield schema
    finally:
        con.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(schema)
            )
        )
        con.close()
