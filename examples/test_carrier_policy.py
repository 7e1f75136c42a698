"""A carrier checks its policy on its own extract before joining the federation.

The node runs on the carrier's extract (set ``CARRIER_EXTRACT`` to its directory; without it
a synthetic extract stands in) under the carrier's policy file, as one carrier of a simulated
federation. The test asserts what the policy promises: no released cell rests on fewer
members than ``min_cell_size``, metrics outside the policy are refused, and what is released
is exactly what the oracle computes from the same files (perturbation is off in this policy:
validation mode).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedoversight.testing import Scenario, oracle

HERE = Path(__file__).parent
POLICY = HERE / "carrier_policy.toml"
PERIOD = "2026-01:2026-03"
CARRIER = "my-carrier"


@pytest.fixture
def extract(carrier_sets) -> Path:
    """The carrier's extract directory (the data schema's tables)."""
    if os.environ.get("CARRIER_EXTRACT"):
        return Path(os.environ["CARRIER_EXTRACT"])
    return carrier_sets.get(Scenario(carriers=1, members=1500, seed=21, months=3))["c001"]


@pytest.fixture
def federation_config(extract: Path) -> Scenario:
    """A federation of one: this carrier, on its extract, under its policy file."""
    return Scenario(data_dirs={CARRIER: extract}, policy=POLICY)


def test_no_released_cell_rests_on_fewer_members_than_the_policy_says(operator_client):
    frame = operator_client.run("enrollment.member_months", PERIOD, by=["plan_code", "age_band"])
    mine = frame[(frame["scope"] == CARRIER) & (frame["statistic"] == "members")]
    released = mine[~mine["withheld"]]
    assert len(released) > 0
    assert (released["value_int"] >= 20).all()


def test_released_values_are_the_oracles(operator_client, federation):
    frame = operator_client.run("cost.pmpm", PERIOD, by=["month"])
    want = oracle.expected("cost.pmpm", federation.carriers, PERIOD, by=["month"])
    want = want[want["scope"] == CARRIER].set_index("month")
    mine = frame[(frame["scope"] == CARRIER) & ~frame["withheld"] & frame["value_int"].notna()]
    assert len(mine) > 0
    for row in mine.itertuples():
        assert row.value_int == want.loc[row.month.strftime("%Y-%m"), row.statistic]


def test_a_metric_outside_the_policy_is_refused(operator_client):
    frame = operator_client.run("util.ed_visits", PERIOD)
    [carrier] = frame.attrs["carriers"]
    assert carrier["state"] == "refused"
    assert len(frame[frame["scope"] == CARRIER]) == 0
