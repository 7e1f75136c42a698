"""The typed tidy frame of a round: dtypes, markers, documented noise and reliability flags."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from coordinator import frames
from coordinator.combine import carrier_table, combine
from coordinator.export import RoundInfo, tidy_rows
from fedoversight.dimensions import Dimension
from fedoversight.domain import (
    CellResult,
    DisclosureSummary,
    Method,
    Missing,
    NoiseScale,
    Perturbation,
    QueryTable,
    Status,
    StatValue,
    Withheld,
)
from fedoversight.periods import Period

M = Dimension.MONTH
PERIOD = Period.parse("2026-01:2026-02")
NOISY = DisclosureSummary(min_cell_size=11, perturbation=Perturbation(5, 3.0, 10, 0.5, 1))
EXACT = DisclosureSummary(min_cell_size=11, method=Method.NONE)
INFO = RoundInfo(
    round_id="r1",
    period=str(PERIOD),
    state="finished",
    carriers_asked=3,
    carriers_answered=2,
    carriers=(("acme", "answered", ""), ("bolt", "answered", ""), ("cove", "timed_out", "x")),
)


def _stat(name: str, value: int | None, status: Status = Status.PERTURBED) -> StatValue:
    if value is None:
        return StatValue(name, Status.WITHHELD, None, Missing(1, 10, 10, Withheld.SMALL))
    return StatValue(name, status, value)


def _pmpm_cell(
    month: str, mm: int | None, members: int, claimants: int, cents: int, status: Status
) -> CellResult:
    return CellResult(
        ((M, month),),
        (
            _stat("member_months", mm, status),
            _stat("members", members, status),
            _stat("claimants", claimants, status),
            _stat("allowed_cents", cents, status),
            _stat("paid_cents", cents // 2, status),
        ),
    )


def _tables() -> list:
    acme = QueryTable(
        "cost.pmpm",
        1,
        (M,),
        (
            _pmpm_cell("2026-01", 1200, 100, 60, 9_007_199_254_740_993, Status.PERTURBED),
            _pmpm_cell("2026-02", None, 8, 5, 40_000, Status.PERTURBED),
        ),
        NOISY,
    )
    bolt = QueryTable(
        "cost.pmpm",
        1,
        (M,),
        (
            _pmpm_cell("2026-01", 15, 12, 12, 50_000, Status.RELEASED),
            _pmpm_cell("2026-02", 900, 80, 40, 70_000, Status.RELEASED),
        ),
        EXACT,
    )
    carriers = {"acme": acme, "bolt": bolt}
    program = combine(carriers, PERIOD)
    return [program, *(carrier_table(c, t, PERIOD) for c, t in carriers.items())]


def _row(frame: pd.DataFrame, scope: str, month: str, statistic: str) -> pd.Series:
    hit = frame[
        (frame["scope"] == scope)
        & (frame["month"] == pd.Timestamp(month))
        & (frame["statistic"] == statistic)
    ]
    assert len(hit) == 1, (scope, month, statistic)
    return hit.iloc[0]


def test_columns_are_typed_and_attrs_describe_the_round() -> None:
    frame = frames.frame_of(_tables(), INFO)
    assert list(frame.columns) == list(frames.columns([M]))
    for column in frame.columns:
        assert str(frame[column].dtype) == frames.dtype_of(column), column
    assert str(frame["month"].dtype) == "datetime64[ns]"
    assert frame.attrs["round_id"] == "r1"
    assert frame.attrs["carriers_asked"] == 3
    assert frame.attrs["complete"] is False
    assert [c["carrier_id"] for c in frame.attrs["carriers"]] == ["acme", "bolt", "cove"]
    assert frame.attrs["carriers"][2]["state"] == "timed_out"


def test_values_match_the_tidy_export_and_integers_stay_exact() -> None:
    tables = _tables()
    frame = frames.frame_of(tables, INFO)
    tidy = tidy_rows(tables, INFO)
    assert len(frame) == len(tidy)
    for (_, typed), (_, plain) in zip(frame.iterrows(), tidy.iterrows(), strict=True):
        assert typed["statistic"] == plain["statistic"]
        if plain["value"] is None:
            assert pd.isna(typed["value"])
        elif isinstance(plain["value"], int):
            assert typed["value_int"] == plain["value"]
        else:
            assert typed["value"] == pytest.approx(plain["value"])
    big = _row(frame, "acme", "2026-01", "allowed_cents")
    assert big["value_int"] == 9_007_199_254_740_993  # beyond float64's exact integers


def test_withheld_and_incomplete_are_marked() -> None:
    frame = frames.frame_of(_tables(), INFO)
    withheld = _row(frame, "acme", "2026-02", "member_months")
    assert withheld["withheld"] and withheld["status"] == "withheld"
    assert pd.isna(withheld["value"])
    program = _row(frame, frames.PROGRAM, "2026-02", "member_months")
    assert program["incomplete"] and not program["withheld"]
    assert program["status"] == "incomplete"
    assert program["missing_carriers"] == 1
    pmpm = _row(frame, frames.PROGRAM, "2026-02", "allowed_pmpm")
    assert pmpm["incomplete"] and pmpm["status"] == "incomplete"


def test_noise_sd_is_the_documented_one() -> None:
    frame = frames.frame_of(_tables(), INFO)
    root_v = math.sqrt(3.0)
    assert _row(frame, "acme", "2026-01", "members")["noise_sd"] == pytest.approx(root_v)
    assert _row(frame, "bolt", "2026-01", "members")["noise_sd"] == 0.0
    # The program's sum: acme's noise plus bolt's exact value.
    assert _row(frame, frames.PROGRAM, "2026-01", "members")["noise_sd"] == pytest.approx(root_v)
    # Dollar noise under cell-key perturbation is not published.
    assert pd.isna(_row(frame, "acme", "2026-01", "allowed_cents")["noise_sd"])
    assert pd.isna(_row(frame, "acme", "2026-01", "allowed_pmpm")["noise_sd"])
    # An exact carrier's figure carries no noise.
    assert _row(frame, "bolt", "2026-02", "allowed_pmpm")["noise_sd"] == 0.0


def test_noise_of_a_figure_follows_its_formula_under_differential_privacy() -> None:
    dp = DisclosureSummary(
        min_cell_size=11,
        method=Method.DIFFERENTIAL_PRIVACY,
        noise_scales=(
            NoiseScale("member_months", 4.0, 0.1),
            NoiseScale("allowed_cents", 5000.0, 0.1),
        ),
    )
    cell = CellResult(
        ((M, "2026-01"),),
        (
            StatValue("member_months", Status.PERTURBED, 1000),
            StatValue("allowed_cents", Status.PERTURBED, 500_000),
        ),
    )
    table = carrier_table("acme", QueryTable("cost.pmpm", 1, (M,), (cell,), dp), PERIOD)
    frame = frames.frame_of([table], INFO)
    pmpm = _row(frame, "acme", "2026-01", "allowed_pmpm")
    # allowed_pmpm = cents / member months / 100: d/dcents = 1e-5, d/dmm ≈ -0.005 per month.
    expected = math.hypot(5000.0 / 1000 / 100, 500_000 / 100 * (1 / 1004 - 1 / 1000))
    assert pmpm["noise_sd"] == pytest.approx(expected, rel=1e-9)
    assert pmpm["status"] == "perturbed"


def test_small_rates_are_flagged_unreliable_not_withheld() -> None:
    frame = frames.frame_of(_tables(), INFO)
    small = _row(frame, "bolt", "2026-01", "allowed_pmpm")  # 15 member months, 12 claimants
    assert small["unreliable"] and not small["withheld"]
    assert small["unreliable_reason"] == f"member_months below {frames.UNRELIABLE_MIN_EVENTS}"
    assert not pd.isna(small["value"])
    large = _row(frame, "acme", "2026-01", "allowed_pmpm")
    assert not large["unreliable"] and pd.isna(large["unreliable_reason"])
    # Statistics themselves are never flagged: the flag is about rates.
    assert not frame.loc[frame["kind"] != frames.FIGURE, "unreliable"].any()


def test_concat_keeps_types_across_rounds_with_different_groupings() -> None:
    one = frames.frame_of(_tables(), INFO)
    flat = QueryTable(
        "cost.pmpm",
        1,
        (),
        (
            CellResult(
                (),
                (
                    StatValue("member_months", Status.RELEASED, 2400),
                    StatValue("members", Status.RELEASED, 200),
                ),
            ),
        ),
        EXACT,
    )
    two = frames.frame_of([combine({"acme": flat}, PERIOD)], RoundInfo(round_id="r2"))
    both = frames.concat([one, two])
    assert len(both) == len(one) + len(two)
    assert set(both["round_id"]) == {"r1", "r2"}
    for column in both.columns:
        assert str(both[column].dtype) == frames.dtype_of(column), column
    assert both.loc[both["round_id"] == "r2", "month"].isna().all()
    assert both.attrs == {}


def test_a_rate_over_fewer_than_thirty_people_is_unreliable() -> None:
    cell = _pmpm_cell("2026-01", 300, 25, 24, 90_000, Status.RELEASED)
    table = carrier_table("acme", QueryTable("cost.pmpm", 1, (M,), (cell,), EXACT), PERIOD)
    row = _row(frames.frame_of([table], INFO), "acme", "2026-01", "allowed_pmpm")
    # 300 member months and 24 claimants are enough events; 25 people are too few.
    assert row["unreliable"]
    assert row["unreliable_reason"] == f"members below {frames.UNRELIABLE_MIN_MEMBERS}"


def test_a_carrier_rate_on_a_withheld_value_is_withheld_with_it() -> None:
    frame = frames.frame_of(_tables(), INFO)
    rate = _row(frame, "acme", "2026-02", "allowed_pmpm")  # its member months were withheld
    assert rate["withheld"] and rate["status"] == "withheld"
    assert not rate["incomplete"] and pd.isna(rate["value"])
    program = _row(frame, frames.PROGRAM, "2026-02", "allowed_pmpm")
    assert program["incomplete"] and not program["withheld"]
