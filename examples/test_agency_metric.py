"""The agency checks metrics across 65 simulated carriers before putting them in a schedule:
every value released (by a carrier, or for the program where no carrier's value is missing)
equals the oracle's, plain pandas over the carriers' files."""

from __future__ import annotations

import pytest

from fedoversight.testing import oracle

PERIOD = "2026-01:2026-03"
pytestmark = pytest.mark.federation("scenarios/agency_65.toml")
#: The metrics to check, each with the dimension it is grouped by (one round each: add yours).
METRICS = [("util.office_visits", "age_band")]


def test_released_values_equal_the_oracle(operator_client, carrier_tables):
    for metric, by in METRICS:
        frame = operator_client.run(metric, PERIOD, by=[by])
        assert frame.attrs["carriers_answered"] == 65
        want = oracle.expected(metric, carrier_tables, PERIOD, by=[by]).set_index(["scope", by])
        exact = frame[(frame["kind"] != "figure") & ~frame["withheld"] & ~frame["incomplete"]]
        assert exact["scope"].nunique() > 30, metric  # most carriers released something
        for row in exact.itertuples():
            cell = getattr(row, by)
            key = cell.strftime("%Y-%m") if hasattr(cell, "strftime") else cell
            assert row.value_int == want.loc[(row.scope, key), row.statistic], (metric, key)
        # A program value that leaves a carrier's withheld value out says how much it misses.
        partial = frame[(frame["scope"] == "program") & frame["incomplete"]]
        assert (partial["missing_carriers"] >= 1).all(), metric
