"""The pytest plugin of fedoversight.testing, used as a user would: fixtures, the marker,
scenario files, typed frames, the oracle, faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from fedoversight.testing import Federation, oracle, scenario_from
from tests import postgres

if TYPE_CHECKING:
    from fedoversight.testing.plugin import CarrierSets

PERIOD = "2026-01:2026-03"


def test_a_round_through_the_fixtures_equals_the_oracle(
    federation: Federation, operator_client: object, carrier_tables: dict[str, object]
) -> None:
    frame = federation.client.run("enrollment.member_months", PERIOD, by=["month"])
    assert frame.attrs["state"] == "complete"
    program = frame[(frame["scope"] == "program") & (frame["statistic"] == "member_months")]
    want = oracle.expected("enrollment.member_months", federation.carriers, PERIOD, by=["month"])
    want = want[want["scope"] == "program"]
    # Perturbation is on by default: each month's value lies near the oracle's.
    assert len(program) == len(want) == 3
    for month, value in zip(program["month"], program["value"], strict=True):
        exact = int(want.loc[want["month"] == month.strftime("%Y-%m"), "member_months"].iloc[0])
        assert abs(value - exact) <= 0.05 * exact
    assert operator_client is federation.client


@pytest.mark.federation("scenarios/planted.toml")
def test_planted_groups_and_late_claims_from_a_scenario_file(
    federation: Federation, carrier_tables: dict[str, dict[str, pd.DataFrame]]
) -> None:
    assert federation.scenario.name == "planted groups and a late refresh"
    [refresh] = federation.carriers.refreshes
    assert (refresh.after_round, refresh.carrier) == (1, "c001")
    client = federation.client
    first = client.run("cost.pmpm", PERIOD, by=["state"], carriers=["c001"])
    rows = first[(first["scope"] == "c001") & (first["statistic"] == "members")]
    members = dict(zip(rows["state"], rows["value_int"], strict=True))
    withheld = dict(zip(rows["state"], rows["withheld"], strict=True))
    # The rare cell (3 members in WY) is withheld; the other groups are released whole.
    assert withheld["WY"]
    assert (members["ND"], members["SD"]) == (15, 12)
    want = oracle.expected("cost.pmpm", carrier_tables, PERIOD, by=["state"])
    want = want[want["scope"] == "c001"].set_index("state")
    assert members["SD"] == want.loc["SD", "members"]
    allowed = first[(first["scope"] == "c001") & (first["statistic"] == "allowed_cents")]
    allowed = allowed.set_index("state")
    # Perturbation off: the dominant claimant's state totals exactly what was planted.
    assert allowed.loc["ND", "value_int"] == want.loc["ND", "allowed_cents"]
    assert want.loc["ND", "allowed_cents"] == 200_000_000 + sum(
        15_000 + 100 * i for i in range(1, 15)
    )
    assert allowed.loc["SD", "value_int"] == want.loc["SD", "allowed_cents"]
    # After round 1 the carrier replaced its files: round 2 sees the late claim ($777).
    second = client.run("cost.pmpm", PERIOD, by=["state"], carriers=["c001"])
    late = second[(second["scope"] == "c001") & (second["statistic"] == "allowed_cents")]
    late = late.set_index("state")
    assert late.loc["SD", "value_int"] == want.loc["SD", "allowed_cents"] + 77_700
    refreshed = oracle.expected("cost.pmpm", {"c001": refresh.directory}, PERIOD, by=["state"])
    assert (
        late.loc["SD", "value_int"]
        == refreshed.set_index(["scope", "state"]).loc[("c001", "SD"), "allowed_cents"]
    )
    # results() reads a finished round again, as the operator API holds it.
    again = client.results(str(first.attrs["round_id"]))
    pd.testing.assert_frame_equal(again, first, check_like=True)


#: Three carriers; in round 1, c003 is killed as its request arrives and c002 answers late.
FAULTS = {
    "carriers": 3,
    "members": 1_500,
    "seed": 5,
    "deadline_seconds": 30,
    "faults": [
        {"carrier": "c003", "action": "kill", "round": 1, "moment": "request"},
        {"carrier": "c002", "action": "slow", "round": 1, "seconds": 1.5},
    ],
}


def _states(frame: pd.DataFrame) -> dict[str, str]:
    return {c["carrier_id"]: str(c["state"]) for c in frame.attrs["carriers"]}


@pytest.mark.parametrize("federation_config", [FAULTS], indirect=True)
def test_a_node_killed_mid_round_is_left_out_then_restarts(federation: Federation) -> None:
    client = federation.client
    first = client.run("enrollment.member_months", PERIOD)
    states = _states(first)
    assert states["c001"] == states["c002"] == "answered"  # c002 slow, but in time
    assert states["c003"] in ("disconnected", "timed_out")
    assert federation.nodes_up() == ["c001", "c002"]
    program = first[(first["scope"] == "program") & (first["statistic"] == "member_months")]
    assert bool(program["incomplete"].iloc[0])  # c003's value is missing from the total
    federation.start_node("c003")  # as after a reboot, on its state directory
    second = client.run("enrollment.member_months", PERIOD)
    assert set(_states(second).values()) == {"answered"}
    total = second[(second["scope"] == "program") & (second["statistic"] == "member_months")]
    assert not bool(total["incomplete"].iloc[0])


@pytest.mark.federation(
    carriers=2, members=800, seed=9, secure=False, policy={"perturbation": {"enabled": False}}
)
def test_the_marker_changes_the_scenario_and_files_can_be_replaced(
    federation: Federation,
) -> None:
    assert federation.scenario.carrier_count == 2 and not federation.scenario.secure
    client = federation.client
    before = client.run("enrollment.member_months", PERIOD)
    # c002 replaces its extract with c001's files: its next answer is c001's.
    federation.replace_files("c002", federation.carriers["c001"])
    after = client.run("enrollment.member_months", PERIOD)
    values = {
        (f.attrs["round_id"], s): v
        for f in (before, after)
        for s, v in f.loc[f["statistic"] == "members", ["scope", "value_int"]].itertuples(
            index=False
        )
    }
    r1, r2 = before.attrs["round_id"], after.attrs["round_id"]
    assert values[(r1, "c001")] != values[(r1, "c002")]
    assert values[(r2, "c002")] == values[(r2, "c001")] == values[(r1, "c001")]


@pytest.fixture
def warehouse_schema(carrier_sets: CarrierSets) -> Iterator[str]:
    """c002's files of the small scenario loaded into a fresh PostgreSQL schema."""
    from fedoversight.testing import load_directory

    data = carrier_sets.get(scenario_from(SMALL))
    with postgres.fresh_schema() as schema:
        with postgres.connect() as conn:
            load_directory(conn, schema, data["c002"])
        yield schema


#: Two exact carriers; the warehouse test puts c002 on PostgreSQL.
SMALL = {"carriers": 2, "members": 900, "seed": 12, "policy": {"perturbation": {"enabled": False}}}


@pytest.mark.postgres
def test_a_carrier_on_its_warehouse_answers_as_from_its_files(
    carrier_sets: CarrierSets, warehouse_schema: str, tmp_path: Path
) -> None:
    scenario = scenario_from(SMALL)
    on_files = carrier_sets.get(scenario)
    on_warehouse = scenario.with_changes(
        node_settings={"c002": {"warehouse": {"dbname": "test", "schema_name": warehouse_schema}}}
    )
    with Federation(on_warehouse, on_files, tmp_path / "run") as federation:
        assert federation.harness.nodes["c002"].config.warehouse is not None
        frame = federation.client.run("cost.pmpm", PERIOD, by=["month"])
    assert frame.attrs["carriers_answered"] == 2
    want = oracle.expected("cost.pmpm", on_files, PERIOD, by=["month"]).set_index(
        ["scope", "month"]
    )
    released = frame[(frame["kind"] != "figure") & ~frame["withheld"] & ~frame["incomplete"]]
    assert set(released["scope"]) == {"program", "c001", "c002"}
    for row in released.itertuples():
        key = (row.scope, row.month.strftime("%Y-%m"))
        assert row.value_int == want.loc[key, row.statistic], (key, row.statistic)
