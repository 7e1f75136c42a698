"""The PostgreSQL pushdown path gives the same cells as the DuckDB path for every metric.

Needs the PostgreSQL server (127.0.0.1:5432, trust auth, database ``test``). Where none is
reachable the tests skip with the reason; with FEDOVERSIGHT_REQUIRE_POSTGRES=1 (as in CI) an
unreachable server is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg.sql
import pytest

from carrier_node.cells import RawTable
from carrier_node.data.files import FileSource
from carrier_node.data.warehouse import PostgresSource, WarehouseConfig
from carrier_node.query.engine import Engine
from fedoversight import wire
from fedoversight.catalogue import METRICS
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec
from fedoversight.errors import DataSourceError
from fedoversight.periods import Period
from fedoversight.testing import load_directory
from tests import postgres
from tests.postgres import fresh_schema

PERIOD = Period.parse("2026-01:2026-03")


@pytest.fixture(scope="module")
def warehouse(federation_data: dict[str, Path]) -> Iterator[tuple[Path, str]]:
    directory = federation_data["c003"]
    with fresh_schema() as schema:
        con = postgres.connect()
        try:
            load_directory(con, schema, directory)
            yield directory, schema
        finally:
            con.close()


#: One record secret for both engines: the same data gives the same record keys, so the
#: disclosure columns of the cells (supports, largest contributions, keys) compare too.
SECRET = "2b7e151628aed2a6abf7158809cf4f3c"


def queries() -> list[QuerySpec]:
    out = []
    for spec in METRICS:
        group: list[D] = []
        if spec.one_of:
            group.append(min(spec.one_of))
        for extra in (D.MONTH, D.QUARTER, D.AGE_BAND, D.DRUG_CLASS):
            if extra in spec.dimensions and len(group) < 2:
                group.append(extra)
        out.append(wire.make_query(spec.name, spec.version, group))
    return out


def evaluate_both(
    directory: Path, schema: str, carrier: str, period: Period, query: QuerySpec
) -> tuple[RawTable, RawTable]:
    """``query`` over the files of ``directory`` (DuckDB) and over the warehouse ``schema``
    loaded from them (PostgreSQL), with the same record secret."""
    files = FileSource(directory)
    files.open()
    pg = PostgresSource(WarehouseConfig(dbname="test", schema_name=schema))
    pg.open()
    try:
        expected = Engine(files, carrier, record_secret=SECRET).evaluate(period, query)
        got = Engine(pg, carrier, record_secret=SECRET).evaluate(period, query)
    finally:
        pg.close()
        files.close()
    return expected, got


@pytest.mark.postgres
@pytest.mark.parametrize("query", queries(), ids=lambda q: q.metric)
def test_postgres_and_duckdb_give_identical_cells(
    warehouse: tuple[Path, str], query: QuerySpec
) -> None:
    directory, schema = warehouse
    expected, got = evaluate_both(directory, schema, "c003", PERIOD, query)
    assert expected.cells, "the metric has data to compare"
    assert got.cells == expected.cells


@pytest.mark.postgres
def test_hostile_values_are_bound_never_executed(warehouse: tuple[Path, str]) -> None:
    _, schema = warehouse
    for hostile in ("VA'; DROP TABLE eligibility; --", "x' OR '1'='1"):
        with pytest.raises(Exception) as refused:
            wire.make_query("cost.pmpm", filters={D.STATE: [hostile]})
        assert "DROP" not in str(refused.value)
    # Even a value that got past the wire would only ever be a literal in the query.
    query = QuerySpec("cost.pmpm", 1, (), ((D.STATE, ("VA'); DROP TABLE eligibility; --",)),))
    pg = PostgresSource(WarehouseConfig(dbname="test", schema_name=schema))
    pg.open()
    try:
        result = Engine(pg, "c003", record_secret=SECRET).evaluate(PERIOD, query)
        assert all(c.value("members") == 0 for c in result.cells)  # nobody has that state
        assert "eligibility" in pg.tables
        rows = pg.execute_arrow("SELECT COUNT(*) AS n FROM eligibility").column("n")[0].as_py()
        assert rows > 0
    except DataSourceError:
        pytest.fail("a hostile literal broke the query")
    finally:
        pg.close()


@pytest.mark.postgres
def test_a_batch_on_postgres_gives_the_duckdb_cells_and_leaves_nothing_behind(
    warehouse: tuple[Path, str],
) -> None:
    directory, schema = warehouse
    batch = queries()
    files = FileSource(directory)
    files.open()
    pg = PostgresSource(WarehouseConfig(dbname="test", schema_name=schema))
    pg.open()
    try:
        expected = [Engine(files, "c003", record_secret=SECRET).evaluate(PERIOD, q) for q in batch]
        engine = Engine(pg, "c003", record_secret=SECRET)
        got = engine.evaluate_many(PERIOD, batch)
        assert engine.last_batch.shared_blocks >= 5
        left = pg.execute_arrow(
            "SELECT COUNT(*) AS n FROM pg_class WHERE relpersistence = 't'"
            " AND relname LIKE 'shared%' AND pg_table_is_visible(oid)"
        )
        read_only = pg.execute_arrow("SHOW transaction_read_only").column(0)[0].as_py()
    finally:
        pg.close()
        files.close()
    assert [t.cells for t in got] == [t.cells for t in expected]
    assert left.column("n")[0].as_py() == 0, "the batch's tables are dropped"
    assert read_only == "on", "queries still run read-only after the batch"


@pytest.mark.postgres
def test_a_failed_batch_drops_its_tables_and_the_connection_goes_on(
    warehouse: tuple[Path, str],
) -> None:
    _, schema = warehouse
    pg = PostgresSource(WarehouseConfig(dbname="test", schema_name=schema))
    pg.open()
    try:
        with pytest.raises(DataSourceError), pg.session() as session:
            session.create_table(
                "shared_probe", "CREATE TEMPORARY TABLE shared_probe AS SELECT 1 AS x"
            )
            assert session.execute_arrow("SELECT x FROM shared_probe").num_rows == 1
            session.execute_arrow("SELECT x FROM shared_no_such_table")
        gone = pg.execute_arrow("SELECT to_regclass('pg_temp.shared_probe') IS NULL AS gone")
        assert gone.column("gone")[0].as_py() is True
        with pytest.raises(DataSourceError):  # writes outside the engine's tables still refused
            pg.execute_arrow("CREATE TEMPORARY TABLE shared_other AS SELECT 1 AS x")
    finally:
        pg.close()


def test_a_statement_is_cancelled_or_timed_out_and_the_connection_goes_on(
    warehouse: tuple[Path, str],
) -> None:
    """The engine's two guards on the warehouse: a cancel from another thread at the
    deadline, and statement_timeout set to what is left of the budget."""
    import threading
    import time

    _, schema = warehouse
    pg = PostgresSource(WarehouseConfig(dbname="test", schema_name=schema))
    pg.open()
    try:
        with pg.session() as session:
            started = time.monotonic()
            timer = threading.Timer(0.3, session.interrupt)
            timer.start()
            with pytest.raises(DataSourceError):
                session.execute_arrow("SELECT pg_sleep(20)")
            assert time.monotonic() - started < 5.0
            session.time_limit(0.3)
            started = time.monotonic()
            with pytest.raises(DataSourceError):
                session.execute_arrow("SELECT pg_sleep(20)")
            assert time.monotonic() - started < 5.0
        # The limit went with the session: a later statement may take its time.
        assert pg.execute_arrow("SHOW statement_timeout").column(0)[0].as_py() == "0"
        assert pg.execute_arrow("SELECT 1 AS one").column("one")[0].as_py() == 1
    finally:
        pg.close()


@pytest.mark.postgres
def test_codes_compare_byte_by_byte_whatever_the_warehouse_collation(tmp_path: Path) -> None:
    """A warehouse whose text columns sort by a language (ICU en-US here) gives the cells of
    the DuckDB path: a code range takes no lower-case code, and a fill of two members' rows
    goes to the member whose id is least byte by byte ('A4' before 'a_3'), as in DuckDB."""
    from tests.unit.test_metrics_engine import Data, _write_csv

    data = (
        Data()
        .member("A4", sex="F")
        .member("a_3", sex="M")
        .fill("a_3", "2026-01-10", claim_id="f1")
        .fill("A4", "2026-01-10", claim_id="f1")
        .medical("A4", "2026-01-12", hcpcs="e0150", allowed_amount="50.00", paid_amount="40.00")
        .medical("A4", "2026-01-13", hcpcs="E0150", allowed_amount="70.00", paid_amount="60.00")
    )
    for table, rows in data.rows.items():
        _write_csv(tmp_path, table, rows)
    period = Period.parse("2026-01")
    requests = [
        wire.make_query("util.scripts", group_by=[D.SEX]),
        wire.make_query("cost.pmpm_by_service_category", group_by=[D.SERVICE_CATEGORY_2]),
    ]
    with fresh_schema() as schema:
        con = postgres.connect()
        try:
            collation = con.execute(
                "SELECT 1 FROM pg_collation WHERE collname = 'en-US-x-icu'"
            ).fetchone()
            if collation is None:
                if os.environ.get("FEDOVERSIGHT_REQUIRE_POSTGRES"):
                    pytest.fail("the PostgreSQL required here has no ICU collation en-US-x-icu")
                pytest.skip("this PostgreSQL has no ICU collation en-US-x-icu")
            load_directory(con, schema, tmp_path)
            columns = con.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND data_type = 'text'",
                (schema,),
            ).fetchall()
            for table, column in columns:
                con.execute(
                    psycopg.sql.SQL(
                        'ALTER TABLE {}.{} ALTER COLUMN {} TYPE text COLLATE "en-US-x-icu"'
                    ).format(
                        *(psycopg.sql.Identifier(n) for n in (schema, str(table), str(column)))
                    )
                )
            files = FileSource(tmp_path)
            files.open()
            pg = PostgresSource(WarehouseConfig(dbname="test", schema_name=schema))
            pg.open()
            try:
                expected = Engine(files, "c001", record_secret=SECRET).evaluate_many(
                    period, requests
                )
                got = Engine(pg, "c001", record_secret=SECRET).evaluate_many(period, requests)
            finally:
                pg.close()
                files.close()
        finally:
            con.close()
    scripts = {c.key: c.value("fills") for c in expected[0].cells}
    assert scripts == {((D.SEX, "F"),): 1, ((D.SEX, "M"),): 0}
    allowed = {
        dict(c.key)[D.SERVICE_CATEGORY_2]: c.value("allowed_cents")
        for c in expected[1].cells
        if c.value("allowed_cents")
    }
    assert allowed == {"durable medical equipment": 7000, "office-based other": 5000}
    assert [t.cells for t in got] == [t.cells for t in expected]


@pytest.mark.postgres
def test_long_code_lists_are_matched_as_an_array_on_postgres(tmp_path: Path) -> None:
    """PostgreSQL matches a long code list (revenue codes, MS-DRGs, places of service) as
    ``column = ANY(array)``, a hashed test with no subplan, and counts the same unknown codes
    as DuckDB's subquery form: a missing or empty code is not unknown, a listed one is not,
    an unlisted one is."""
    from carrier_node.query import render
    from carrier_node.query.render import Keying
    from tests.unit.test_metrics_engine import Data, _write_csv

    data = (
        Data()
        .member("m1", sex="F")
        .member("m2", sex="M")
        .medical("m1", "2026-01-05", revenue_code="0450", drg="470", place_of_service="11")
        .medical("m1", "2026-01-06", revenue_code="9999", drg="000", place_of_service="98")
        .medical("m2", "2026-01-07", revenue_code="", drg="", place_of_service="")
        .medical("m2", "2026-01-08", revenue_code="ABCD", drg="471")
    )
    for table, rows in data.rows.items():
        _write_csv(tmp_path, table, rows)
    period = Period.parse("2026-01")
    query = wire.make_query("ops.data_quality", group_by=[D.MONTH])
    text = render.render("postgres", None, None, period, query, Keying(SECRET))
    assert "= ANY(STRING_TO_ARRAY(" in text and "code_list" not in text
    assert "code_list" in render.render("duckdb", None, None, period, query, Keying(SECRET))
    with fresh_schema() as schema:
        con = postgres.connect()
        try:
            load_directory(con, schema, tmp_path)
        finally:
            con.close()
        expected, got = evaluate_both(tmp_path, schema, "c001", period, query)
    (cell,) = expected.cells
    counts = {
        name: cell.value(name)
        for name in ("invalid_revenue_code", "invalid_drg", "invalid_place_of_service")
    }
    assert counts == {"invalid_revenue_code": 2, "invalid_drg": 1, "invalid_place_of_service": 1}
    assert got.cells == expected.cells
