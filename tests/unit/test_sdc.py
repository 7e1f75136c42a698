"""Disclosure-control building blocks: complementary suppression audited by LP, the ledger's
differencing guard, the privacy budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carrier_node.sdc.audit import Interval, exposed, exposed_sided, intervals
from carrier_node.sdc.complementary import complementary
from carrier_node.sdc.ledger import Ledger, Release, cell_box
from carrier_node.sdc.privacy import BudgetExhaustedError, NoiseMechanism, PrivacyBudget
from carrier_node.sdc.tables import Table
from fedoversight.dimensions import Dimension as D
from fedoversight.periods import Period

THRESHOLD = 11
AGES = ["0-17", "18-25", "26-44", "45-64", "65+"]
SEXES = ["F", "M", "U"]


def grid(values: list[int], rows: int, cols: int) -> Table:
    keys = tuple(
        ((D.AGE_BAND, AGES[r]), (D.SEX, SEXES[c])) for r in range(rows) for c in range(cols)
    )
    return Table(keys, tuple(values[: rows * cols]))


def test_a_lone_small_cell_is_not_left_derivable_from_its_margins() -> None:
    table = grid([5, 100, 200, 300, 40, 60], 3, 2)
    assert exposed(table, {0}, THRESHOLD) == [0]  # alone, margin minus the rest gives it away
    extra = complementary(table, {0}, THRESHOLD)
    assert extra and 0 not in extra
    assert exposed(table, {0} | extra, THRESHOLD) == []
    assert intervals(table, {0} | extra, THRESHOLD)[0].width >= THRESHOLD


def test_one_dimension_tables_use_the_total_as_the_margin() -> None:
    keys = tuple(((D.AGE_BAND, a),) for a in AGES)
    table = Table(keys, (3, 500, 700, 900, 40))
    extra = complementary(table, {0}, THRESHOLD)
    assert extra == {4}  # the cheapest other cell
    assert exposed(table, {0, 4}, THRESHOLD) == []


def test_a_table_with_nothing_suppressed_needs_nothing() -> None:
    assert complementary(grid([50] * 6, 3, 2), set(), THRESHOLD) == set()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(2, 5),
    cols=st.integers(2, 3),
    data=st.data(),
)
def test_after_suppression_no_hidden_cell_is_pinned_down(
    rows: int, cols: int, data: st.DataObject
) -> None:
    values = data.draw(
        st.lists(
            st.one_of(st.integers(0, 10), st.integers(11, 5000)),
            min_size=rows * cols, max_size=rows * cols,
        )
    )
    table = grid(values, rows, cols)
    primary = {i for i, v in enumerate(values) if 0 < v < THRESHOLD}
    hidden = primary | complementary(table, primary, THRESHOLD)
    assert primary <= hidden
    # Each hidden cell is as uncertain as the threshold demands, or as uncertain as it would be
    # with the whole table hidden (what the margins alone reveal is not this table's doing).
    baseline = intervals(table, range(len(values)), THRESHOLD)
    for cell, interval in intervals(table, hidden, THRESHOLD).items():
        assert interval.width >= min(THRESHOLD, baseline[cell].width - 1e-9), (
            values, sorted(hidden), cell, interval, baseline[cell],
        )


PERIOD = Period.parse("2026-01:2026-03")


def release(value: int, filters: dict[D, tuple[str, ...]] | None = None,
            key: tuple[tuple[D, str], ...] = (), period: Period = PERIOD) -> Release:
    return Release("enrolled", "members", cell_box(period, key, filters or {}), value)


def test_ledger_refuses_all_but_one_and_nested_windows(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.record([release(1000)], "r1")
    # All members minus all but one (the planted member's state left out).
    assert ledger.conflict(release(999, {D.STATE: ("MD", "DC")}), THRESHOLD) is not None
    # A shorter window of the same population differing by a few members.
    assert ledger.conflict(release(996, period=Period.parse("2026-01:2026-02")),
                           THRESHOLD) is not None
    # A finer grouping of the same population (one cell of a split).
    assert ledger.conflict(release(993, key=((D.SEX, "F"),)), THRESHOLD) is not None
    # Differences of 0 or of at least the threshold are fine; unrelated populations too.
    assert ledger.conflict(release(1000, {D.STATE: ("MD",)}), THRESHOLD) is None
    assert ledger.conflict(release(989, {D.STATE: ("MD",)}), THRESHOLD) is None
    ledger.close()
    # The ledger survives a restart.
    again = Ledger(tmp_path / "ledger.sqlite3")
    assert len(again) == 1
    assert again.conflict(release(999, {D.STATE: ("MD", "DC")}), THRESHOLD) is not None


def test_ledger_keeps_each_population_and_value_once(tmp_path: Path) -> None:
    """The same population released again with the same value (several metrics' enrolled
    counts of one cell, a round run again) is kept once; another value of it is kept too, and
    the guard checks against both after a restart."""
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    ledger.record([release(1000), release(1000)], "r1")
    ledger.record([release(1000), release(1000, {D.STATE: ("MD",)})], "r2")
    ledger.record([release(1004)], "r3")  # the data changed: a second value of the population
    assert len(ledger) == 3
    ledger.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT value, request_id FROM ledger ORDER BY id").fetchall()
    assert rows == [(1000, "r1"), (1000, "r2"), (1004, "r3")]
    again = Ledger(path)
    assert len(again) == 3
    assert again.conflict(release(999, {D.STATE: ("MD", "DC")}), THRESHOLD) is not None
    assert again.conflict(release(1003, key=((D.SEX, "F"),)), THRESHOLD) is not None  # vs 1004
    assert again.conflict(release(1000, key=((D.SEX, "F"),)), THRESHOLD) is not None  # vs 1004
    again.close()


def test_pending_releases_of_one_request_guard_each_other() -> None:
    ledger = Ledger(":memory:")
    first = release(500)
    assert ledger.conflict(release(495, {D.SEX: ("F", "M")}), THRESHOLD, [first]) is not None


def test_privacy_budget_is_persistent_and_refuses_once_spent(tmp_path: Path) -> None:
    budget = PrivacyBudget(tmp_path / "dp.sqlite3", limit_per_month=1.0)
    budget.charge(Period.parse("2026-01:2026-02"), 0.6, "r1")
    budget.close()
    again = PrivacyBudget(tmp_path / "dp.sqlite3", limit_per_month=1.0)
    with pytest.raises(BudgetExhaustedError):
        again.charge(Period.parse("2026-02"), 0.5, "r2")
    assert again.spent("2026-02") == pytest.approx(0.6)  # refused charge spent nothing
    again.charge(Period.parse("2026-03"), 0.5, "r3")
    assert again.spent("2026-03") == pytest.approx(0.5)


def test_noise_is_calibrated_to_the_sensitivity() -> None:
    mech = NoiseMechanism.for_epsilon(0.5, sensitivity=3)
    assert mech.scale == pytest.approx(6.0)
    assert mech.epsilon == pytest.approx(0.5)
    draws = [mech.release(1000) for _ in range(400)]
    assert len(set(draws)) > 5  # it is noise
    assert abs(sum(draws) / len(draws) - 1000) < 3  # and unbiased


def _tiny_grid(data: st.DataObject) -> tuple[Table, set[int]]:
    rows, cols = data.draw(st.integers(2, 4)), data.draw(st.integers(2, 3))
    values = data.draw(st.lists(st.integers(0, 3), min_size=rows * cols, max_size=rows * cols))
    hidden = data.draw(st.sets(st.integers(0, rows * cols - 1), min_size=1, max_size=4))
    return grid(values, rows, cols), hidden


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_intervals_equal_brute_force_over_whole_numbers(data: st.DataObject) -> None:
    """On a two-way table (its margin constraints are totally unimodular, so the LP's extremes
    are whole), every hidden cell's interval is the least and greatest value it takes over all
    whole-number fillings of the hidden cells consistent with the released cells and every
    margin: enumerated here, no LP involved."""
    import itertools

    table, hidden = _tiny_grid(data)
    # Margins of less than the protection (1 here) are taken as unknown: a margin of 0.
    lines = [line for line in table.lines() if sum(table.values[i] for i in line) >= 1]
    free = sorted(c for c in hidden if not any(c in line for line in lines))
    cells = sorted(hidden - set(free))
    low: dict[int, int] = {}
    high: dict[int, int] = {}
    margin = [min(sum(table.values[i] for i in line) for line in lines if c in line)
              for c in cells]  # no cell exceeds a margin of its lines
    for filling in itertools.product(*(range(m + 1) for m in margin)):
        values = list(table.values)
        for c, v in zip(cells, filling, strict=True):
            values[c] = v
        if all(sum(values[i] for i in line) == sum(table.values[i] for i in line)
               for line in lines):
            for c, v in zip(cells, filling, strict=True):
                low[c], high[c] = min(low.get(c, v), v), max(high.get(c, v), v)
    found = intervals(table, hidden, 1)
    for c in cells:
        assert (found[c].low, found[c].high) == (
            pytest.approx(low[c], abs=1e-6), pytest.approx(high[c], abs=1e-6))
    for c in free:
        assert (found[c].low, found[c].high) == (0.0, float("inf"))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_the_audit_skips_only_lps_whose_answer_it_already_knows(data: st.DataObject) -> None:
    """:func:`exposed` and :func:`exposed_sided` solve a cell's LPs only when the feasible
    points seen so far do not already prove it protected; their answers equal the audit
    worked out from every hidden cell's exact interval (and the whole table's)."""
    dims = data.draw(st.lists(st.integers(2, 4), min_size=2, max_size=3))
    shape = [AGES[:dims[0]], SEXES[:dims[1]], *([["A", "B", "C", "D"][:dims[2]]]
                                                 if len(dims) == 3 else [])]
    import itertools

    dimensions = [D.AGE_BAND, D.SEX, D.STATE]
    keys = tuple(tuple(zip(dimensions, combo, strict=False))
                 for combo in itertools.product(*shape))
    values = tuple(data.draw(st.lists(st.one_of(st.integers(0, 12), st.integers(13, 400)),
                                      min_size=len(keys), max_size=len(keys))))
    table = Table(keys, values)
    hidden = data.draw(st.sets(st.integers(0, len(keys) - 1), min_size=1))
    protection = data.draw(st.integers(1, 15))
    found = intervals(table, hidden, protection)
    every = intervals(table, range(len(keys)), protection)
    expected = sorted(c for c, iv in found.items()
                      if iv.width < protection and iv.width < every[c].width - 1e-9)
    assert exposed(table, hidden, protection) == expected

    required = {c: data.draw(st.floats(0, 50)) for c in hidden}
    found1 = intervals(table, hidden, 1)
    every1 = intervals(table, range(len(keys)), 1)

    def slack(iv: Interval, c: int) -> float:
        return min(iv.high - values[c], values[c] - iv.low)

    expected_sided = sorted(
        c for c, iv in found1.items()
        if slack(iv, c) < required[c] and slack(iv, c) < slack(every1[c], c) - 1e-9)
    assert exposed_sided(table, hidden, required) == expected_sided


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_closed_form_intervals_equal_the_lp_when_constraints_share_no_cell(
    data: st.DataObject,
) -> None:
    from carrier_node.sdc.audit import Bounds, _disjoint, _disjoint_intervals

    n = data.draw(st.integers(1, 8))
    hidden = list(range(n))
    groups = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))  # 3: in no row
    rows, rhs = [], []
    for g in sorted(set(groups) - {3}):
        rows.append([1.0 if groups[j] == g else 0.0 for j in hidden])
        rhs.append(float(data.draw(st.integers(0, 10_000))))
    if not rows:
        return
    assert _disjoint(rows)
    closed = _disjoint_intervals(hidden, rows, rhs)
    solved = Bounds(hidden, rows, rhs, closed_form=False).all()
    for cell in hidden:
        assert closed[cell].low == pytest.approx(solved[cell].low, abs=1e-6)
        assert closed[cell].high == pytest.approx(solved[cell].high, abs=1e-6) or (
            closed[cell].high == solved[cell].high == float("inf"))
