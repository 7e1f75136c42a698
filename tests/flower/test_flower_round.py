"""A round on Flower's simulation runtime, 10 simulated carriers: the same released cells and
statuses as the native transport on the same data, and the round stored and exported as the
coordinator stores and exports it."""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytest

from carrier_node.policy import Policy
from coordinator.client import RoundOutcome
from coordinator.combine import ScopedTable
from coordinator.receipts import verify_round
from coordinator.server import load_result_keys
from coordinator.store import CarrierRoundState, RoundState, RoundStore
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.periods import Period
from fedoversight.signing import Verifier
from fedoversight.testing import SimulatedFederation

# Flower pins typer < 0.21, which uses what click 8.5 deprecates (the Flower venv's pair).
pytestmark = pytest.mark.filterwarnings("ignore:'click.utils.:DeprecationWarning")

PERIOD = Period.parse("2026-01:2026-03")
CARRIERS = 10
QUERIES = [
    wire.make_query("enrollment.member_months", group_by=[D.MONTH]),
    wire.make_query("enrollment.member_months", group_by=[D.PLAN_CODE, D.AGE_BAND]),
    wire.make_query("cost.pmpm", group_by=[D.AGE_BAND, D.SEX]),
    wire.make_query("cost.pmpm_by_service_category", group_by=[D.SERVICE_CATEGORY]),
]
#: Perturbation off on both sides: each released value is exact, so both transports must
#: give the very same numbers (the cell-key noise rests on each node's own secret).
POLICY_TOML = "[perturbation]\nenabled = false\n"


@pytest.fixture(scope="module")
def carriers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fedoversight.testing import SynthConfig, write_carriers

    root = tmp_path_factory.mktemp("flower-carriers")
    config = SynthConfig(carriers=CARRIERS, members=3_000, seed=7, year=2026, months=3)
    return {d.name: d for d in write_carriers(root, config)}


def cells(tables: Sequence[ScopedTable]) -> dict[tuple[object, ...], object]:
    """Every table's cells: each cell's status and each statistic's status, value and what
    it leaves out, by (scope, metric, version, grouping, cell key)."""
    out: dict[tuple[object, ...], object] = {}
    for table in tables:
        for cell in table.cells:
            key = (table.scope, table.metric, table.version, table.group_by, cell.key)
            assert key not in out, key
            out[key] = (
                cell.status,
                tuple((s.name, s.status, s.value, s.missing) for s in cell.stats),
            )
    return out


async def native_round(carriers: dict[str, Path], work: Path, policy: Policy) -> RoundOutcome:
    async with SimulatedFederation(carriers, work, policy=policy) as fed:
        assert fed.client is not None
        return await fed.client.run_round(PERIOD, QUERIES, deadline_seconds=120)


async def test_a_flower_round_gives_the_native_rounds_cells(
    carriers: dict[str, Path], tmp_path: Path
) -> None:
    from oversight_sim.flower_sim import run_flower_round

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY_TOML, encoding="utf-8")
    policy = Policy.load(policy_file)
    native = await native_round(carriers, tmp_path / "native", policy)
    export = tmp_path / "flower" / "round.json"
    fed = SimulatedFederation(carriers, tmp_path / "flower")
    flower = await asyncio.to_thread(
        run_flower_round,
        fed,
        PERIOD,
        QUERIES,
        policy_file=policy_file,
        deadline_seconds=120,
        output=export,
    )
    with warnings.catch_warnings():  # Ray's processes, ended, their Popen objects not waited
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()

    for outcome in (native, flower):
        assert outcome.state is RoundState.COMPLETE
        assert [c for c, _, _ in outcome.carriers] == sorted(carriers)
        assert all(s is CarrierRoundState.ANSWERED for _, s, _ in outcome.carriers)
    native_cells, flower_cells = cells(native.tables), cells(flower.tables)
    assert flower_cells.keys() == native_cells.keys()
    assert flower_cells == native_cells
    # Real work on both sides: program and carrier tables, released and withheld values.
    statuses = {s for _, stats in native_cells.values() for _, s, _, _ in stats}  # type: ignore[attr-defined]
    assert len(native_cells) > 200
    assert {"released", "withheld"} <= {str(s) for s in statuses}

    # Stored as the coordinator stores a round: the signed request and every receipt check
    # out with the federation's keys.
    config = fed.coordinator_config()
    keys = load_result_keys(config)
    assert keys is not None and config.operator_public_key is not None
    with RoundStore(config.store_path) as store:
        record = store.get_round(flower.round_id)
        assert record.state is RoundState.COMPLETE
        assert len(store.results(flower.round_id)) == CARRIERS
        checked = verify_round(
            store,
            flower.round_id,
            operator_verifier=Verifier.load(config.operator_public_key),
            node_verifiers=keys,
        )
    assert checked.ok, checked
    # Exported as `oversight round run --output` exports.
    written = json.loads(export.read_text(encoding="utf-8"))
    assert written["round"]["round_id"] == flower.round_id
    assert written["round"]["carriers_answered"] == CARRIERS
