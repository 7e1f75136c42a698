"""The pytest plugin of fedoversight.testing, used as a user would: fixtures, the marker,
scenario files, typed frames, the oracle, faults."""

from __future__ import annotations

import pandas as pd
import pytest

from fedoversight.testing import Federation, oracle

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
