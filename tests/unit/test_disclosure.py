"""Disclosure control v2 on hand-built cells: the perturbation table, magnitude noise, keyed
draws, the rules (minimum size, excluded counts, sensitive categories), what a withheld value
says it leaves out, the node's secret, differential privacy and its budget, the policy file."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import stat as stat_mode
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carrier_node.cells import RawCell, RawTable, Support
from carrier_node.disclosure import (
    BudgetExhaustedError,
    Discloser,
    NodeSecret,
    PrivacyBudget,
    protect_table,
)
from carrier_node.disclosure.noise import CountNoise, MagnitudeNoise, draw
from carrier_node.disclosure.privacy import GaussianNoise
from carrier_node.policy import Policy
from fedoversight import catalogue, wire
from fedoversight.catalogue import StatKind, get_metric
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import Method, Missing, RequestSpec, Status, Withheld
from fedoversight.errors import ConfigError, PolicyRefusedError
from fedoversight.histogram import N_BINS, Histogram
from fedoversight.periods import Period

PERIOD = Period.parse("2026-01:2026-03")
SECRET = NodeSecret(1, bytes(range(32)))


def _support(
    members: int, *, top: int = 0, rest: int = 0, low: str = "0a", high: str = "f0"
) -> Support:
    return Support(members, low if members else None, high if members else None, top, rest)


def pmpm_cell(
    month: str = "2026-01",
    *,
    members: int = 500,
    claimants: int = 400,
    allowed: int = 40_000_000,
    allowed_support: int | None = None,
    top: int = 900_000,
    key: tuple[tuple[D, str], ...] | None = None,
) -> RawCell:
    """A cost.pmpm cell; dollar supports follow the claimants unless given."""
    dollars = claimants if allowed_support is None else allowed_support
    return RawCell(
        key=key if key is not None else ((D.MONTH, month),),
        values=(
            ("member_months", members),
            ("members", members),
            ("claimants", claimants),
            ("allowed_cents", allowed),
            ("paid_cents", allowed * 8 // 10),
        ),
        supports=(
            ("member_months", _support(members, low="01", high="fe")),
            ("members", _support(members, low="01", high="fe")),
            ("claimants", _support(claimants)),
            ("allowed_cents", _support(dollars, top=top)),
            ("paid_cents", _support(dollars, top=top * 8 // 10)),
        ),
    )


def table(
    *cells: RawCell,
    metric: str = "cost.pmpm",
    group_by: tuple[D, ...] = (D.MONTH,),
    filters: dict[D, list[str]] | None = None,
) -> RawTable:
    return RawTable(wire.make_query(metric, group_by=group_by, filters=filters), cells)


# --- the perturbation table, magnitudes and draws ---------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10), st.floats(0.05, 0.95))
def test_the_count_table_has_mean_zero_the_variance_and_the_bound(
    max_noise: int, share: float
) -> None:
    variance = share * max_noise * (max_noise + 1) / 3
    table_ = CountNoise(max_noise, variance)
    probabilities = table_.probabilities
    ks = range(-max_noise, max_noise + 1)
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-9)
    assert abs(sum(p * k for p, k in zip(probabilities, ks, strict=True))) < 1e-9
    assert math.isclose(
        sum(p * k * k for p, k in zip(probabilities, ks, strict=True)), variance, rel_tol=1e-6
    )
    draws = [table_.noise(i / 1000) for i in range(1000)]
    assert min(draws) >= -max_noise and max(draws) <= max_noise
    assert table_.noise(0.0) <= 0 <= table_.noise(0.999_999_999)
    # Drawing follows the table: the share of draws at 0 is its probability.
    zero = sum(1 for d in (table_.noise((i + 0.5) / 20_000) for i in range(20_000)) if d == 0)
    assert abs(zero / 20_000 - table_.zero_probability) < 0.001


def test_a_variance_the_range_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError):
        CountNoise(2, 2.0)  # the widest on {-2..2} is 2
    with pytest.raises(ValueError):
        CountNoise(5, 0.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1, exclude_max=True), st.integers(1, 10**12))
def test_magnitude_noise_is_between_p_and_p_times_one_plus_spread_of_the_largest(
    u: float, largest: int
) -> None:
    noise = MagnitudeNoise(10.0, 0.5).noise(u, largest)
    assert 0.1 * largest <= abs(noise) <= max(1, math.ceil(0.15 * largest))
    assert (noise < 0) == (u < 0.5)


def test_magnitude_noise_spreads_evenly_and_is_symmetric() -> None:
    mech = MagnitudeNoise(10.0, 0.5)
    draws = [mech.noise(i / 10_000, 1_000_000) for i in range(10_000)]
    assert abs(sum(draws)) / len(draws) < 200  # mean 0 (within rounding)
    sizes = sorted(abs(d) for d in draws)
    assert sizes[0] >= 100_000 and sizes[-1] <= 150_000
    spread = math.sqrt(sum(d * d for d in draws) / len(draws))
    assert math.isclose(spread, mech.standard_deviation_share * 1_000_000, rel_tol=0.01)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(max_size=12) | st.integers(), min_size=1, max_size=5),
    st.lists(st.text(max_size=12) | st.integers(), min_size=1, max_size=5),
)
def test_draws_are_functions_of_their_inputs_and_of_the_key(
    a: list[object], b: list[object]
) -> None:
    assert draw(b"k", "count", *a) == draw(b"k", "count", *a)
    assert 0 <= draw(b"k", "count", *a) < 1
    if [str(x) for x in a] != [str(x) for x in b]:
        assert draw(b"k", "count", *a) != draw(b"k", "count", *b)
    assert draw(b"k", "count", *a) != draw(b"other", "count", *a)
    assert draw(b"k", "count", *a) != draw(b"k", "magnitude", *a)


# --- the rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "claimants", "withheld"),
    [
        (500, 400, set()),
        (500, 10, {"claimants", "allowed_cents", "paid_cents"}),  # small
        (500, 1, {"claimants", "allowed_cents", "paid_cents"}),
        (10, 10, {"member_months", "members", "claimants", "allowed_cents", "paid_cents"}),
        (500, 495, {"claimants"}),  # the 5 members without a claim: an excluded count
        (500, 489, set()),  # 11 without a claim
    ],
)
def test_minimum_sizes_and_excluded_counts(
    members: int, claimants: int, withheld: set[str]
) -> None:
    out = protect_table(table(pmpm_cell(members=members, claimants=claimants)), Policy(), PERIOD)
    (cell,) = out.cells
    got = {s.name for s in cell.stats if s.status.withheld}
    assert got == withheld
    for s in cell.stats:
        if s.status.withheld:
            assert s.value is None and s.missing is not None and s.missing.carriers == 1
        else:
            assert s.status is Status.PERTURBED and s.missing is None


def test_a_withheld_value_says_at_most_how_much_it_leaves_out() -> None:
    (cell,) = protect_table(table(pmpm_cell(members=7, claimants=7)), Policy(), PERIOD).cells
    assert cell.stat("members").missing == Missing(1, 10, 10, Withheld.SMALL)
    # Member months grouped by month: at most one per member.
    assert cell.stat("member_months").missing == Missing(1, 10, 10, Withheld.SMALL)
    assert cell.stat("allowed_cents").missing == Missing(1, None, 10, Withheld.SMALL)
    quarter = table(pmpm_cell(members=7, claimants=7, key=()), group_by=())
    (whole,) = protect_table(quarter, Policy(), PERIOD).cells
    assert whole.stat("member_months").missing == Missing(1, 30, 10, Withheld.SMALL)
    (rest,) = protect_table(table(pmpm_cell(members=500, claimants=495)), Policy(), PERIOD).cells
    assert rest.stat("claimants").missing == Missing(1, reason=Withheld.REST)


def test_dollars_of_one_member_are_withheld_whatever_the_claimants() -> None:
    """Reversals net 399 claimants to nothing: the total rests on one member."""
    raw = table(pmpm_cell(claimants=400, allowed=-12_345, allowed_support=1, top=12_345))
    (cell,) = protect_table(raw, Policy(), PERIOD).cells
    assert cell.stat("allowed_cents").status is Status.WITHHELD
    assert cell.stat("claimants").status is Status.PERTURBED


def test_true_zeros_are_exact_and_counts_stay_within_the_table() -> None:
    raw = table(pmpm_cell(claimants=0, allowed=0, top=0))
    (cell,) = protect_table(raw, Policy(), PERIOD).cells
    for name in ("claimants", "allowed_cents", "paid_cents"):
        assert cell.stat(name).status is Status.RELEASED and cell.stat(name).value == 0
    assert abs(cell.stat("members").value - 500) <= 5  # type: ignore[operator]


def test_a_count_part_whose_rest_is_small_is_withheld() -> None:
    """Generic fills of all fills: 3 members had a brand fill."""
    spec = get_metric("rx.generic_dispensing_rate")

    def cell(rest: int) -> RawCell:
        return RawCell(
            key=(),
            values=(("fill_members", 200), ("fills", 900), ("generic_fills", 850)),
            supports=(
                ("fill_members", _support(200)),
                ("fills", _support(200)),
                ("generic_fills", _support(190, rest=rest)),
            ),
        )

    for rest, withheld in ((3, True), (0, False), (11, False)):
        raw = RawTable(wire.make_query(spec.name), (cell(rest),))
        (out,) = protect_table(raw, Policy(), PERIOD).cells
        assert out.stat("generic_fills").status.withheld is withheld
        assert not out.stat("fills").status.withheld


def _category_table(*cells: tuple[str, int], filters: dict[D, list[str]] | None = None) -> RawTable:
    raw_cells = []
    for category, claimants in cells:
        base = pmpm_cell(
            claimants=claimants,
            allowed=claimants * 10_000,
            top=50_000,
            key=((D.SERVICE_CATEGORY_2, category),),
        )
        raw_cells.append(base)
    return table(
        *raw_cells,
        metric="cost.pmpm_by_service_category",
        group_by=(D.SERVICE_CATEGORY_2,),
        filters=filters,
    )


def test_sensitive_categories_hold_zero_and_small_alike_and_a_stricter_floor() -> None:
    raw = _category_table(
        ("inpatient substance use", 0),
        ("outpatient psychiatric", 15),
        ("inpatient psychiatric", 25),
        ("office-based visit", 0),
        ("lab", 15),
    )
    out = {c.key[0][1]: c for c in protect_table(raw, Policy(), PERIOD).cells}
    # Zero in a sensitive category is withheld like a small value: presence says nothing.
    assert out["inpatient substance use"].stat("claimants").missing == Missing(
        1, 19, 19, Withheld.SENSITIVE
    )
    assert out["outpatient psychiatric"].stat("claimants").status.withheld  # below 20
    assert out["inpatient psychiatric"].stat("claimants").status is Status.PERTURBED
    assert out["office-based visit"].stat("claimants").status is Status.RELEASED  # a true zero
    assert out["lab"].stat("claimants").status is Status.PERTURBED  # 15 ≥ 11
    # The cell's member months are the category's denominator: never withheld here.
    assert all(not c.stat("member_months").status.withheld for c in out.values())


def test_a_query_filtered_to_a_sensitive_category_is_sensitive() -> None:
    raw = table(
        pmpm_cell(claimants=0, allowed=0, top=0),
        metric="cost.pmpm_by_service_category",
        group_by=(D.MONTH, D.SERVICE_CATEGORY),
        filters={D.SERVICE_CATEGORY_2: ["inpatient substance use"]},
    )
    (cell,) = protect_table(raw, Policy(), PERIOD).cells
    assert cell.stat("claimants").missing is not None
    assert cell.stat("claimants").missing.reason is Withheld.SENSITIVE


def test_histogram_bins_of_few_members_are_withheld_the_rest_perturbed() -> None:
    counts, sums = [0] * N_BINS, [0] * N_BINS
    supports: list[Support | None] = [None] * N_BINS
    for index, (members, cents) in {
        0: (40, 0),
        30: (300, 30_000_000),
        60: (3, 900_000_000),
    }.items():
        counts[index], sums[index] = members, cents
        supports[index] = Support(members, "0a", "ff", top=cents // max(1, members) * 2)
    cell = RawCell(
        key=(),
        values=(
            ("members", 343),
            ("allowed_cents", 930_000_000),
            ("allowed_histogram", Histogram(tuple(counts), tuple(sums))),
        ),
        supports=(("members", _support(343)), ("allowed_cents", _support(303, top=400_000_000))),
        bins=(("allowed_histogram", tuple(supports)),),
    )
    raw = RawTable(wire.make_query("cost.distribution"), (cell,))
    (out,) = protect_table(raw, Policy(), PERIOD).cells
    histogram = out.stat("allowed_histogram").value
    assert isinstance(histogram, Histogram)
    assert histogram.withheld_bins == (60,)
    assert histogram.counts[60] == histogram.sums_cents[60] == 0
    assert abs(histogram.counts[30] - 300) <= 5 and histogram.sums_cents[30] != 30_000_000
    assert out.stat("allowed_histogram").missing == Missing(1, None, 10, Withheld.SMALL)


def test_rebates_have_no_people_and_are_perturbed_by_their_largest_row() -> None:
    cell = RawCell(
        key=((D.QUARTER, "2026Q1"),),
        values=(
            ("fill_members", 300),
            ("pharmacy_allowed_cents", 9_000_000),
            ("rebate_cents", 1_000_000),
        ),
        supports=(
            ("fill_members", _support(300)),
            ("pharmacy_allowed_cents", _support(300, top=80_000)),
            ("rebate_cents", Support(0, top=600_000)),
        ),
    )
    raw = RawTable(wire.make_query("rx.rebate_share", group_by=[D.QUARTER]), (cell,))
    (out,) = protect_table(raw, Policy(), PERIOD).cells
    rebate = out.stat("rebate_cents")
    assert rebate.status is Status.PERTURBED
    assert 60_000 <= abs(rebate.value - 1_000_000) <= 90_000  # type: ignore[operator]


def test_with_perturbation_off_values_are_exact_and_the_rules_stand() -> None:
    exact = Policy(perturbation={"enabled": False})
    raws = table(pmpm_cell(), pmpm_cell("2026-02", claimants=4))
    jan, feb = protect_table(raws, exact, PERIOD).cells
    assert all(s.status is Status.RELEASED for s in jan.stats)
    assert jan.stat("allowed_cents").value == 40_000_000
    assert feb.stat("claimants").status.withheld
    out = protect_table(raws, exact, PERIOD)
    assert out.disclosure.method is Method.NONE and out.disclosure.perturbation is None


def test_the_summary_reports_the_method_its_parameters_and_what_was_withheld() -> None:
    raws = table(
        pmpm_cell(), pmpm_cell("2026-02", claimants=4), pmpm_cell("2026-03", members=3, claimants=3)
    )
    out = protect_table(raws, Policy(), PERIOD, SECRET)
    d = out.disclosure
    assert d.method is Method.CELL_KEY
    assert d.perturbation is not None and d.perturbation.count_max_noise == 5
    assert d.perturbation.key_version == 1
    assert (d.cells_released, d.cells_partly_withheld, d.cells_withheld) == (1, 1, 1)
    assert dict(d.withheld) == {Withheld.SMALL: 3 + 5}
    assert d.cells_perturbed == 2


# --- consistency ------------------------------------------------------------------------------


def test_the_same_contents_get_the_same_noise_under_any_key_and_query() -> None:
    """A cell's noise is a function of its members, value and the node's secret: another
    key, another query, another Discloser (a restart) give the same released value."""
    one = protect_table(table(pmpm_cell()), Policy(), PERIOD, SECRET).cells[0]
    by_plan = table(
        pmpm_cell(key=((D.PLAN_CODE, "P1"), (D.MONTH, "2026-01"))), group_by=(D.PLAN_CODE, D.MONTH)
    )
    other = protect_table(by_plan, Policy(), PERIOD, SECRET).cells[0]
    assert [s.value for s in one.stats] == [s.value for s in other.stats]
    again = protect_table(table(pmpm_cell()), Policy(), PERIOD, NodeSecret(1, SECRET.secret))
    assert [s.value for s in again.cells[0].stats] == [s.value for s in one.stats]
    elsewhere = protect_table(table(pmpm_cell()), Policy(), PERIOD, NodeSecret.generate())
    assert [s.value for s in elsewhere.cells[0].stats] != [s.value for s in one.stats]


def test_a_change_of_contents_draws_new_noise() -> None:
    """A late claim moves a total: its noise is drawn again, so the difference of the two
    releases is not the claim; one member more moves the keys of a count."""
    base = protect_table(table(pmpm_cell()), Policy(), PERIOD, SECRET).cells[0]
    late = protect_table(
        table(pmpm_cell(allowed=40_000_000 + 2_500)), Policy(), PERIOD, SECRET
    ).cells[0]
    noise_before = base.stat("allowed_cents").value - 40_000_000  # type: ignore[operator]
    noise_after = late.stat("allowed_cents").value - 40_002_500  # type: ignore[operator]
    assert noise_before != noise_after
    differences = Counter()
    for extra in range(1, 201):
        before = (
            protect_table(table(pmpm_cell(members=500 + extra)), Policy(), PERIOD, SECRET)
            .cells[0]
            .stat("members")
            .value
        )
        after = (
            protect_table(table(pmpm_cell(members=501 + extra)), Policy(), PERIOD, SECRET)
            .cells[0]
            .stat("members")
            .value
        )
        differences[after - before - 1] += 1  # type: ignore[operator]
    # Had the noise stayed, every difference would be exact (0 here).
    assert differences[0] < 0.5 * sum(differences.values())
    assert len(differences) >= 5


# --- the node's secret ------------------------------------------------------------------------


def test_the_secret_is_made_once_kept_private_and_renewed_only_upward(tmp_path: Path) -> None:
    path = tmp_path / "state" / "c001.disclosure-secret.json"
    first = NodeSecret.load_or_create(path, 1)
    assert stat_mode.S_IMODE(os.stat(path).st_mode) == 0o600
    assert NodeSecret.load_or_create(path, 1) == first
    second = NodeSecret.load_or_create(path, 2)
    assert second.secret != first.secret and second.version == 2
    assert first.record_secret != second.record_secret and len(first.record_secret) == 32
    with pytest.raises(ConfigError, match="never lower it"):
        NodeSecret.load_or_create(path, 1)
    path.write_text(json.dumps({"version": 2, "secret": "zz"}))
    with pytest.raises(ConfigError, match="malformed"):
        NodeSecret.load_or_create(path, 2)


# --- differential privacy ---------------------------------------------------------------------


def _request(queries: list[wire.QuerySpec] | None = None) -> RequestSpec:
    now = dt.datetime.now(dt.UTC)
    return RequestSpec(
        "r1",
        "round1",
        catalogue.CATALOGUE_VERSION,
        PERIOD,
        tuple(queries or [wire.make_query("cost.pmpm", group_by=[D.MONTH])]),
        now,
        now,
        os.urandom(16),
    )


def test_gaussian_noise_is_calibrated_to_rho_and_sensitivity() -> None:
    noise = GaussianNoise.for_rho(0.125, 3)
    assert noise.scale == pytest.approx(3 / math.sqrt(0.25))
    assert noise.rho == pytest.approx(0.125)
    draws = [noise.release(1000) for _ in range(400)]
    assert len(set(draws)) > 5 and abs(sum(draws) / len(draws) - 1000) < 2


def test_differential_privacy_charges_the_budget_and_uses_clamped_sums(tmp_path: Path) -> None:
    policy = Policy(
        differential_privacy={"enabled": True, "rho_per_query": 0.5, "budget_per_month": 1.0}
    )
    budget = PrivacyBudget(tmp_path / "dp.sqlite3", policy.differential_privacy.budget_per_month)
    discloser = Discloser(policy, SECRET, budget)
    cell = pmpm_cell(members=5000, claimants=4000)
    supports = tuple(
        (
            n,
            Support(
                s.members,
                s.key_low,
                s.key_high,
                s.top,
                s.rest,
                clamped=3 if n.endswith("cents") else None,
            ),
        )
        for n, s in cell.supports
    )
    raw = RawTable(
        wire.make_query("cost.pmpm", group_by=[D.MONTH]),
        (RawCell(cell.key, cell.values, supports),),
    )
    tables, _ = discloser.protect(_request(), [raw])
    (out,) = tables
    assert out.disclosure.method is Method.DIFFERENTIAL_PRIVACY
    assert out.disclosure.rho_spent == pytest.approx(0.5)
    assert out.disclosure.rho_remaining == pytest.approx(0.5)
    assert {n.statistic for n in out.disclosure.noise_scales} == {
        "member_months",
        "members",
        "claimants",
        "allowed_cents",
        "paid_cents",
    }
    assert sum(n.rho for n in out.disclosure.noise_scales) == pytest.approx(0.5, rel=0.01)
    allowed = out.cells[0].stat("allowed_cents").value
    scale = {n.statistic: n.scale for n in out.disclosure.noise_scales}["allowed_cents"]
    # One member's month moves a cent total by at most $50,000: over 3 months in 3 cells,
    # an L2 sensitivity of 5,000,000 × √3; the noise is around the clamped sum (3), not the
    # 40,000,000 of the cell.
    assert scale == pytest.approx(5_000_000 * math.sqrt(3) / math.sqrt(2 * 0.1), rel=1e-6)
    assert isinstance(allowed, int)
    discloser.protect(_request(), [raw])
    with pytest.raises(BudgetExhaustedError):
        discloser.protect(_request(), [raw])
    budget.close()
    again = PrivacyBudget(tmp_path / "dp.sqlite3", 1.0)
    assert again.spent("2026-02") == pytest.approx(1.0)
    again.close()


def test_differential_privacy_releases_the_clamped_sums() -> None:
    generous = Policy(
        differential_privacy={"enabled": True, "rho_per_query": 500.0, "budget_per_month": 10_000.0}
    )
    discloser = Discloser(generous, SECRET, PrivacyBudget(":memory:", 10_000.0))
    cell = pmpm_cell(members=5000, claimants=4000)
    clamped = {"allowed_cents": 3, "paid_cents": 2}
    supports = tuple((n, dataclasses.replace(s, clamped=clamped.get(n))) for n, s in cell.supports)
    raw = table(RawCell(cell.key, cell.values, supports))
    (out,) = discloser.protect(_request(), [raw])[0]
    scale = {n.statistic: n.scale for n in out.disclosure.noise_scales}["allowed_cents"]
    allowed = out.cells[0].stat("allowed_cents").value
    assert scale < 1_000_000 and isinstance(allowed, int)
    assert abs(allowed - 3) < 6 * scale  # around the clamped 3, far from the cell's 40,000,000


def test_differential_privacy_refuses_groupings_of_unbounded_reach(tmp_path: Path) -> None:
    policy = Policy(differential_privacy={"enabled": True})
    discloser = Discloser(policy, SECRET, PrivacyBudget(":memory:", 1.0))
    query = wire.make_query("cost.pmpm_by_service_category", group_by=[D.SERVICE_CATEGORY])
    with pytest.raises(PolicyRefusedError):
        discloser.check(_request([query]))


def test_under_differential_privacy_a_cell_of_few_noisy_members_is_not_listed() -> None:
    policy = Policy(
        differential_privacy={"enabled": True, "rho_per_query": 50.0, "budget_per_month": 1_000.0}
    )
    discloser = Discloser(policy, SECRET, PrivacyBudget(":memory:", 1_000.0))
    raw = table(pmpm_cell(), pmpm_cell("2026-02", members=2, claimants=2))
    tables, _ = discloser.protect(_request(), [raw])
    assert [c.key for c in tables[0].cells] == [((D.MONTH, "2026-01"),)]


# --- the policy file --------------------------------------------------------------------------


def test_policy_floor_noise_and_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    for text in (
        "min_cell_size = 5\n",
        "min_cel_size = 20\n",
        "[perturbation]\ncount_max_noise = 5\ncount_variance = 12.0\n",
        "differencing_guard = true\n",
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError):
            Policy.load(bad)
    good = tmp_path / "g.toml"
    good.write_text(
        'min_cell_size = 20\nmetrics = ["cost.pmpm"]\ndimensions = ["month"]\n'
        "[perturbation]\np_percent = 15.0\nkey_version = 2\n"
    )
    policy = Policy.load(good)
    assert policy.min_cell_size == 20 and policy.perturbation.p_percent == 15.0
    assert policy.answered_metrics() == ["cost.pmpm@1"]
    policy.check(wire.make_query("cost.pmpm", group_by=[D.MONTH]))
    with pytest.raises(PolicyRefusedError):
        policy.check(wire.make_query("enrollment.member_months"))
    with pytest.raises(PolicyRefusedError):
        policy.check(wire.make_query("cost.pmpm", group_by=[D.STATE]))


def test_every_catalogue_statistic_declares_what_protection_needs() -> None:
    """A new metric cannot forget it: the declaration is checked when it is made."""
    from fedoversight.metricspec import MetricSpec, StatisticSpec

    for spec in catalogue.METRICS:
        for s in spec.statistics:
            if s.kind in (StatKind.COUNT, StatKind.AMOUNT, StatKind.CENTS) and s.by_members:
                assert s.bound is not None and s.rests_on is not None, (spec.name, s.name)
    with pytest.raises(ValueError, match="bound"):
        MetricSpec(
            "x.y",
            1,
            "x",
            "x",
            frozenset(),
            (
                StatisticSpec("members", StatKind.MEMBERS, "m"),
                StatisticSpec("visits", StatKind.COUNT, "v", rests_on="members"),
            ),
        )
    with pytest.raises(ValueError, match="part of"):
        MetricSpec(
            "x.y",
            1,
            "x",
            "x",
            frozenset(),
            (
                StatisticSpec("members", StatKind.MEMBERS, "m"),
                StatisticSpec("few", StatKind.MEMBERS, "f", part_of="visits"),
            ),
        )
