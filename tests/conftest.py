"""Shared fixtures: the 65 synthetic carriers of the integration tests (written once per
session by the plugin's carrier_sets) and their oracle tables; round store backends."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from pydantic import SecretStr

from tests import postgres

# The package's pytest plugin (fedoversight.testing), which an install registers by its
# pytest11 entry point anyway; named here so a checkout whose install predates it has it too.
pytest_plugins = ["fedoversight.testing.plugin"]

if TYPE_CHECKING:
    from coordinator.store import Backend, RoundStore
    from fedoversight.testing.plugin import CarrierSets

BackendOpener = Callable[[], "Backend | Path"]
StoreOpener = Callable[[], "RoundStore"]

# A test worker of pytest-xdist starts with COLUMNS=80; the command lines' consoles, made when
# their modules are imported, would keep that width for good and ignore a test's own COLUMNS.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

#: The federation scale used by integration tests: 65 carriers of skewed sizes.
FEDERATION = {"carriers": 65, "members": 12_000, "seed": 11, "year": 2026, "months": 3}


@pytest.fixture(scope="session")
def federation_data(carrier_sets: CarrierSets) -> dict[str, Path]:
    from fedoversight.testing import scenario_from

    return dict(carrier_sets.get(scenario_from(FEDERATION)))


@pytest.fixture(scope="session")
def oracle_tables(carrier_sets: CarrierSets) -> dict[str, dict[str, pd.DataFrame]]:
    from fedoversight.testing import scenario_from

    return carrier_sets.carrier_tables(scenario_from(FEDERATION))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendOpener]:
    """Where a round store is, on each backend: each call gives what ``RoundStore`` opens
    (another connection to the same store): a SQLite file, or a fresh schema on the
    PostgreSQL server (dropped after)."""
    if request.param == "sqlite":
        yield lambda: tmp_path / "rounds.sqlite3"
        return
    from coordinator.config import PostgresStore
    from coordinator.store_postgres import PostgresBackend

    with postgres.fresh_schema() as schema:
        config = PostgresStore(url=SecretStr(postgres.DSN), schema_name=schema)
        yield lambda: PostgresBackend(config)


@pytest.fixture
def open_store(store_backend: BackendOpener) -> StoreOpener:
    """Opens the round store of ``store_backend`` (on each backend)."""
    from coordinator.store import RoundStore

    return lambda: RoundStore(store_backend())
