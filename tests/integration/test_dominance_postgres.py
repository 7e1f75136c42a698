"""The PostgreSQL pushdown path measures the same member contributions to dollar totals as the
DuckDB path, so the p% rule decides alike on both.

Needs the PostgreSQL server (127.0.0.1:5432, trust auth, database ``test``). Where none is
reachable the tests skip with the reason; with FEDOVERSIGHT_REQUIRE_POSTGRES=1 (as in CI) an
unreachable server is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from carrier_node.datasource import FileSource
from carrier_node.engine import Engine, RawTable
from carrier_node.policy import Policy
from carrier_node.protect import DOMINANCE
from carrier_node.warehouse import PostgresSource, WarehouseConfig
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec
from oversight_sim.pgload import load_directory
from tests.integration.test_warehouse import _server
from tests.unit.test_dominance import (
    CARRIER,
    DOLLAR_QUERIES,
    PERIOD,
    PLANTED_ALLOWED,
    _protect,
    planted_carrier,
)

BY_MONTH = QuerySpec("cost.pmpm", 1, (D.MONTH,))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    directory, _ = planted_carrier(tmp_path_factory.mktemp("dominance_pg"))
    schema = f"fedoversight_dominance_{uuid.uuid4().hex[:8]}"
    con = _server()
    try:
        load_directory(con, schema, directory)
        yield directory, schema
    finally:
        with con.cursor() as cur:
            cur.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(schema)
                )
            )
        con.close()


def _both(warehouse: tuple[Path, str], query: QuerySpec) -> tuple[RawTable, RawTable]:
    directory, schema = warehouse
    files = FileSource(directory)
    files.open()
    pg = PostgresSource(WarehouseConfig(dbname="test", schema_name=schema))
    pg.open()
    try:
        return (
            Engine(files, CARRIER).evaluate(PERIOD, query),
            Engine(pg, CARRIER).evaluate(PERIOD, query),
        )
    finally:
        pg.close()
        files.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query", [BY_MONTH, *DOLLAR_QUERIES], ids=lambda q: f"{q.metric}-{len(q.group_by)}"
)
def test_postgres_measures_the_same_contributions(
    warehouse: tuple[Path, str], query: QuerySpec
) -> None:
    duck, pg = _both(warehouse, query)
    assert any(top1 > 0 for c in duck.cells for _, (_, top1, _) in c.contributions)
    assert [c.key for c in pg.cells] == [c.key for c in duck.cells]
    for mine, theirs in zip(pg.cells, duck.cells, strict=True):
        assert mine.contributions == theirs.contributions, mine.key
        assert mine.values == theirs.values, mine.key


@pytest.mark.postgres
def test_postgres_cells_are_withheld_for_dominance_alike(warehouse: tuple[Path, str]) -> None:
    _, pg = _both(warehouse, BY_MONTH)
    months = [c.key[0][1] for c in pg.cells]
    january = dict(pg.cells[months.index("2026-01")].contributions)["allowed_cents"]
    assert january[1] >= int(PLANTED_ALLOWED * 100)
    _, decision = _protect(pg, Policy(differencing_guard=False))
    dominance = {
        i: sorted(n for n, reason in stats.items() if reason == DOMINANCE)
        for i, stats in decision.withheld.items()
    }
    assert {i: names for i, names in dominance.items() if names} == {
        months.index("2026-01"): ["allowed_cents", "paid_cents"]
    }
