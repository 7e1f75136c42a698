"""A whole round over real gRPC with the coordinator's round store in PostgreSQL, then read
back from the database by another store, as a coordinator started on another host would.

Needs the PostgreSQL server (see tests/postgres.py): skipped when unreachable, a failure with
FEDOVERSIGHT_REQUIRE_POSTGRES=1 (CI).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from carrier_node.policy import Policy
from coordinator.config import PostgresStore
from coordinator.store import CarrierRoundState, RoundState, RoundStore
from coordinator.store_postgres import PostgresBackend
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.periods import Period
from fedoversight.testing import SimulatedFederation, SynthConfig, oracle, write_carriers
from tests import postgres
from tests.integration.helpers import compare

PERIOD = Period.parse("2026-01:2026-02")


@pytest.mark.postgres
async def test_a_round_runs_with_its_store_in_postgresql(tmp_path: Path) -> None:
    dirs = write_carriers(
        tmp_path / "carriers", SynthConfig(carriers=3, members=900, seed=5, months=2)
    )
    carriers = {d.name: d for d in dirs}
    policy = Policy(perturbation={"enabled": False})
    query = wire.make_query("enrollment.member_months", group_by=[D.MONTH])
    with postgres.fresh_schema() as schema:
        store = PostgresStore(url=SecretStr(postgres.DSN), schema_name=schema)
        async with SimulatedFederation(
            carriers, tmp_path / "work", policy=policy, round_store=store
        ) as fed:
            assert fed.client is not None
            outcome = await fed.client.run_round(PERIOD, [query], deadline_seconds=120)
        assert outcome.state is RoundState.COMPLETE
        assert all(state is CarrierRoundState.ANSWERED for _, state, _ in outcome.carriers)
        compare(
            query,
            PERIOD,
            outcome.tables,
            {c: oracle.load_carrier(d) for c, d in carriers.items()},
            policy,
        )
        assert not (tmp_path / "work" / "rounds.sqlite3").exists()
        # What the coordinator stored, read by another store on the same database.
        with RoundStore(PostgresBackend(store)) as elsewhere:
            (record,) = elsewhere.list_rounds()
            assert record.round_id == outcome.round_id
            assert record.state is RoundState.COMPLETE and record.finished_at is not None
            assert [r.carrier_id for r in elsewhere.results(record.round_id)] == sorted(carriers)
            assert [c for c, _ in elsewhere.carriers()] == sorted(carriers)
