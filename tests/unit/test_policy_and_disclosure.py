"""The carrier policy and primary suppression."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrier_node.disclosure import protect
from carrier_node.engine import RawCell, RawTable
from carrier_node.policy import Policy
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import Status
from fedoversight.errors import ConfigError, PolicyRefusedError


def test_policy_floor_and_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text("min_cell_size = 5\n")
    with pytest.raises(ConfigError):
        Policy.load(bad)
    bad.write_text("min_cel_size = 20\n")
    with pytest.raises(ConfigError):
        Policy.load(bad)
    good = tmp_path / "g.toml"
    good.write_text('min_cell_size = 20\nmetrics = ["cost.pmpm"]\ndimensions = ["month"]\n')
    policy = Policy.load(good)
    assert policy.min_cell_size == 20
    assert policy.answered_metrics() == ["cost.pmpm@1"]
    policy.check(wire.make_query("cost.pmpm", group_by=[D.MONTH]))
    with pytest.raises(PolicyRefusedError):
        policy.check(wire.make_query("enrollment.member_months"))
    with pytest.raises(PolicyRefusedError):
        policy.check(wire.make_query("cost.pmpm", group_by=[D.STATE]))


def cell(month: str, members: int, claimants: int) -> RawCell:
    return RawCell(
        key=((D.MONTH, month),),
        values=(
            ("member_months", members), ("members", members), ("claimants", claimants),
            ("allowed_cents", 1000 * claimants), ("paid_cents", 800 * claimants),
        ),
    )


@pytest.mark.parametrize(
    ("members", "claimants", "released"),
    [(11, 11, True), (10, 10, False), (500, 10, False), (500, 1, False), (500, 0, True),
     (1, 0, False), (0, 0, True)],
)
def test_primary_suppression(members: int, claimants: int, released: bool) -> None:
    raw = RawTable(wire.make_query("cost.pmpm", group_by=[D.MONTH]), (cell("2026-01", members,
                                                                            claimants),))
    table = protect(raw, Policy())
    (out,) = table.cells
    assert (out.status is Status.RELEASED) is released
    if not released:
        assert out.status is Status.SUPPRESSED_PRIMARY
        assert all(s.value is None for s in out.stats)
        assert table.disclosure.cells_suppressed_primary == 1
    else:
        assert out.stat("allowed_cents").value == 1000 * claimants


def test_a_stricter_policy_suppresses_more() -> None:
    raw = RawTable(wire.make_query("cost.pmpm", group_by=[D.MONTH]), (cell("2026-01", 15, 15),))
    assert protect(raw, Policy()).cells[0].status is Status.RELEASED
    assert protect(raw, Policy(min_cell_size=20)).cells[0].status is Status.SUPPRESSED_PRIMARY
