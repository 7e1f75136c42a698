"""Shared fixtures: synthetic carriers (written once per session) and their oracle tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests import oracle

#: The federation scale used by integration tests: 65 carriers of skewed sizes.
FEDERATION = {"carriers": 65, "members": 12_000, "seed": 11, "year": 2026, "months": 3}


@pytest.fixture(scope="session")
def federation_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from oversight_sim.synth import SynthConfig, write_carriers

    root = tmp_path_factory.mktemp("carriers")
    dirs = write_carriers(root, SynthConfig(**FEDERATION))  # type: ignore[arg-type]
    return {d.name: d for d in dirs}


@pytest.fixture(scope="session")
def oracle_tables(federation_data: dict[str, Path]) -> dict[str, dict[str, pd.DataFrame]]:
    return {c: oracle.load_carrier(d) for c, d in federation_data.items()}
