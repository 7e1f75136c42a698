"""docs/adding-a-metric.md's worked example, done for real.

``rx.ninety_day_supply`` is written in one module (tests/example/ninety_day_supply.py): its
catalogue declaration, its builder and its oracle. Declared (here with
:func:`fedoversight.catalogue.extended`, as a metric under development is tried), it is
answered by a real federation through the operator API and the CLI, matches its oracle to the
unit in every released cell, and nothing else in the project had to change for it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from carrier_node.policy import Policy
from carrier_node.query.registry import implemented
from coordinator.store import RoundState
from fedoversight import catalogue, wire
from fedoversight.dimensions import Dimension as D
from fedoversight.errors import UnknownMetricError
from fedoversight.periods import Period
from fedoversight.testing import SimulatedFederation, oracle
from tests.example import ninety_day_supply as example
from tests.integration.helpers import compare, query_tables
from tests.integration.test_operator_api import cli, run_cli, wide_terminal  # noqa: F401
from tests.integration.test_trust import small

PERIOD = Period.parse("2026-01:2026-03")
EXACT = Policy(perturbation={"enabled": False})
ROOT = Path(__file__).resolve().parents[2]
#: Where the project's code lives (the example's three parts go to one place each of these).
SOURCES = ("fedoversight", "coordinator", "carrier_node", "oversight_sim")


@pytest.mark.usefixtures("wide_terminal")
async def test_a_metric_written_in_one_module_is_answered_and_matches_its_oracle(
    federation_data: dict[str, Path],
    oracle_tables: dict[str, dict[str, pd.DataFrame]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = example.SPEC
    # The largest carriers: enough long fills in a month to release.
    dirs = {
        c: federation_data[c]
        for c in sorted(federation_data)
        if c not in small(federation_data, len(federation_data) - 3)
    }
    monkeypatch.setitem(oracle.METRICS, spec.name, example.ORACLE)
    with catalogue.extended(spec):
        assert spec.key in implemented()
        queries = [
            wire.make_query(spec.name),
            wire.make_query(spec.name, group_by=[D.MONTH]),
            wire.make_query(spec.name, group_by=[D.AGE_BAND, D.SEX]),
        ]
        async with SimulatedFederation(dirs, tmp_path, policy=EXACT) as fed:
            assert fed.client is not None
            outcome = await fed.client.run_round(PERIOD, queries)
            # The operator's CLI knows it from the declaration alone.
            code, out = await run_cli(["metrics", "describe", spec.name])
            assert code == 0 and "90-day supply share" in out and "long_fills" in out, out
            code, out = await run_cli(
                cli(
                    fed,
                    "round",
                    "run",
                    "--metric",
                    spec.name,
                    "--period",
                    str(PERIOD),
                    "--by",
                    "month",
                    "--output",
                    str(tmp_path / "long.csv"),
                )
            )
            assert code == 0, out
            assert "ninety day share" in out and "withheld" not in out, out
        assert outcome.state is RoundState.COMPLETE
        totals = {"released": 0, "withheld": 0, "perturbed": 0, "program_incomplete": 0}
        tables = {c: oracle_tables[c] for c in dirs}
        for index, query in enumerate(queries):
            counts = compare(query, PERIOD, query_tables(outcome.tables, index), tables, EXACT)
            for k, v in counts.items():
                totals[k] += v
        assert totals["released"] > 50 and totals["perturbed"] == 0
        exported = pd.read_csv(tmp_path / "long.csv")
        assert set(exported["metric"]) == {spec.name}
    # Undeclared again: the node's builder is not used, the operator API does not know it.
    assert spec.key not in implemented()
    with pytest.raises(UnknownMetricError):
        catalogue.get_metric(spec.name)
    # One module: nothing of the project names the metric.
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            assert spec.name not in path.read_text(encoding="utf-8"), path


def test_a_declared_metric_needs_its_builder_and_an_undeclared_one_is_refused() -> None:
    from carrier_node.query.registry import implements, missing

    lone = catalogue.MetricSpec(
        name="rx.undeclared_example",
        version=1,
        title="t",
        definition="d",
        dimensions=frozenset(),
        statistics=example.SPEC.statistics,
    )
    with catalogue.extended(lone):
        assert missing() == (lone.key,)  # declared, but no node builds it
    with pytest.raises(UnknownMetricError):
        implements("rx.no_such_metric")
    with pytest.raises(RuntimeError, match="two builders"):
        implements(example.SPEC)(example.ninety_day_supply)
    with (
        pytest.raises(ValueError, match="declared already"),
        catalogue.extended(catalogue.get_metric("cost.pmpm")),
    ):
        pass
