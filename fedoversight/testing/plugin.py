"""The pytest plugin: simulated carriers and a running federation as fixtures.

Loaded by pytest through the package's ``pytest11`` entry point (``-p
no:fedoversight.testing.plugin`` turns it off). Nothing heavy is imported until a test asks for
one of its fixtures, so test sessions that do not use it pay only for this module.

Configuration, most specific last (see ``docs/testing.md``):

1. the ``federation_config`` fixture (a :class:`~fedoversight.testing.Scenario`; three small
   secure carriers by default): override it in a ``conftest.py`` or a test module, or
   parametrise it (``@pytest.mark.parametrize("federation_config", [...], indirect=True)``,
   values: a Scenario, a mapping of its keys, or a scenario file);
2. the ``federation`` marker on a test, class or module: ``@pytest.mark.federation(
   scenario="scenarios/fault.toml", carriers=5)``: a scenario file (relative to the test's
   file) and/or changes to the scenario's keys.

Fixtures: ``federation_scenario`` (the scenario in force), ``carrier_sets`` (session: writes
and caches carrier data), ``carrier_data`` (the scenario's carriers: id -> directory),
``carrier_tables`` (each carrier's tables as the oracle reads them), ``federation`` (a running
:class:`~fedoversight.testing.Federation`, stopped after the test) and ``operator_client``
(its :class:`~fedoversight.testing.Client`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pandas as pd

    from oversight_sim.carrier_sets import CarrierSet
    from oversight_sim.runner import Client, Federation
    from oversight_sim.scenario import Scenario

MARKER = "federation"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(scenario=None, **changes): the simulated federation of this test: a "
        "scenario file (relative to the test file) and changes to its keys "
        "(fedoversight.testing)",
    )


class CarrierSets:
    """Carrier data written once per test session (per xdist worker) for each distinct
    scenario data, and the oracle's reading of it."""

    def __init__(self, root_factory: pytest.TempPathFactory) -> None:
        self._factory = root_factory
        self._sets: dict[str, CarrierSet] = {}
        self._tables: dict[str, dict[str, dict[str, pd.DataFrame]]] = {}

    def get(self, scenario: Scenario) -> CarrierSet:
        """``scenario``'s carriers (written on first use, then shared: never change them)."""
        from oversight_sim.carrier_sets import write_carrier_set

        key = scenario.data_key()
        if key not in self._sets:
            root = self._factory.mktemp("carriers")
            self._sets[key] = write_carrier_set(scenario, root)
        return self._sets[key]

    def carrier_tables(self, scenario: Scenario) -> dict[str, dict[str, pd.DataFrame]]:
        """Each carrier's tables as :func:`fedoversight.testing.oracle.load_carrier` reads
        them (a carrier set spread over a few datasets reads each dataset once)."""
        from fedoversight.testing import oracle

        key = scenario.data_key()
        if key not in self._tables:
            carriers = self.get(scenario)
            by_dir: dict[Path, dict[str, pd.DataFrame]] = {}
            for directory in sorted(set(carriers.values())):
                by_dir[directory] = oracle.load_carrier(directory)
            self._tables[key] = {c: by_dir[d] for c, d in carriers.items()}
        return self._tables[key]


def _as_scenario(value: Any, base: Path) -> Scenario:
    from oversight_sim.scenario import Scenario, load_scenario, scenario_from

    if isinstance(value, Scenario):
        return value
    if isinstance(value, (str, Path)):
        path = Path(value)
        return load_scenario(path if path.is_absolute() else base / path)
    if isinstance(value, Mapping):
        return scenario_from(value)
    raise TypeError(f"not a scenario: {value!r}")


@pytest.fixture(scope="session")
def carrier_sets(tmp_path_factory: pytest.TempPathFactory) -> CarrierSets:
    """Writes and caches carrier data per scenario for the whole session."""
    return CarrierSets(tmp_path_factory)


@pytest.fixture
def federation_config(request: pytest.FixtureRequest) -> Scenario:
    """The federation's scenario: override or parametrise (indirect) this fixture."""
    base = request.path.parent
    if hasattr(request, "param"):
        return _as_scenario(request.param, base)
    from oversight_sim.scenario import Scenario

    return Scenario()


@pytest.fixture
def federation_scenario(request: pytest.FixtureRequest, federation_config: Scenario) -> Scenario:
    """The scenario in force: ``federation_config`` with the ``federation`` markers applied
    (the closest marker last)."""
    scenario = _as_scenario(federation_config, request.path.parent)
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        changes = dict(marker.kwargs)
        if marker.args:
            changes.setdefault("scenario", marker.args[0])
        file = changes.pop("scenario", None)
        if file is not None:
            scenario = _as_scenario(file, request.path.parent)
        if changes:
            scenario = scenario.with_changes(**changes)
    return scenario


@pytest.fixture
def carrier_data(carrier_sets: CarrierSets, federation_scenario: Scenario) -> CarrierSet:
    """The scenario's carriers: carrier id -> data directory (shared: do not change them)."""
    return carrier_sets.get(federation_scenario)


@pytest.fixture
def carrier_tables(
    carrier_sets: CarrierSets, federation_scenario: Scenario
) -> dict[str, dict[str, pd.DataFrame]]:
    """Each carrier's tables for :func:`fedoversight.testing.oracle.compute`."""
    return carrier_sets.carrier_tables(federation_scenario)


@pytest.fixture
def federation(
    federation_scenario: Scenario, carrier_data: CarrierSet, tmp_path: Path
) -> Iterator[Federation]:
    """A running simulated federation of the scenario (stopped after the test)."""
    from oversight_sim.runner import Federation

    with Federation(federation_scenario, carrier_data, tmp_path / "federation") as running:
        yield running


@pytest.fixture
def operator_client(federation: Federation) -> Client:
    """The operator's client of the running federation: rounds in, typed frames out."""
    return federation.client
