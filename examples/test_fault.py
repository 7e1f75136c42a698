"""A fault scenario: a carrier's node is killed while the round's request reaches it, another
answers late; the round ends without the killed carrier, says so, and the node comes back."""

from __future__ import annotations

import pytest

PERIOD = "2026-01:2026-03"
pytestmark = pytest.mark.federation("scenarios/fault.toml")


def states(frame):
    return {c["carrier_id"]: c["state"] for c in frame.attrs["carriers"]}


def test_a_killed_node_is_left_out_and_the_total_says_so(federation, operator_client):
    frame = operator_client.run("enrollment.member_months", PERIOD, by=["state"])
    assert states(frame)["c004"] != "answered"
    assert states(frame)["c002"] == "answered"  # slow, but within the deadline
    total = frame[(frame["scope"] == "program") & (frame["statistic"] == "member_months")]
    assert total["incomplete"].any()
    # The rare cell (three members in WY) is withheld by its carrier.
    wy = frame[(frame["scope"] == "c001") & (frame["state"] == "WY")]
    assert wy.loc[wy["statistic"] == "members", "withheld"].all()

    federation.start_node("c004")  # as after a reboot
    again = operator_client.run("enrollment.member_months", PERIOD)
    assert set(states(again).values()) == {"answered"}
    assert again.attrs["complete"]
