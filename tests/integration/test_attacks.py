"""Attacks on a planted small group, through the operator API, against real node daemons.

A group of three members is planted in carrier c001's synthetic data: the only members living
in one state, and the only members of the carrier whose enrollment ends in January (every
other member is enrolled throughout). Each attack is a sequence of rounds an operator could
launch, and the arithmetic an analyst would do with the figures they return. Every attack is
run twice: with the differencing guard switched off, to show that it recovers the planted
value exactly (so the attack is real and the test could fail), and under the default policy,
where the released figures must not pin the planted value down.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carrier_node.policy import DifferentialPrivacy, Policy
from coordinator.client import RoundOutcome
from coordinator.combine import CombinedCell
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec, Status
from fedoversight.periods import Period
from oversight_sim.harness import SimulatedFederation
from oversight_sim.synth import SynthConfig, write_carriers
from tests import oracle
from tests.integration.helpers import query_tables

PERIOD = Period.parse("2026-01:2026-03")
LATE = Period.parse("2026-02:2026-03")
VICTIM = "c001"
TARGET_STATE = "WY"
PLANTED = 3
FLOOR = 11

pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Planted:
    dirs: dict[str, Path]
    tables: dict[str, dict[str, pd.DataFrame]]
    #: The states the victim's other members live in.
    other_states: tuple[str, ...]
    #: The plan the planted members are in.
    plan: str

    def truth(self, metric: str, stat: str, period: Period = PERIOD,
              group_by: Sequence[D] = (D.STATE,), key: tuple[str, ...] = (TARGET_STATE,),
              filters: dict[D, list[str]] | None = None) -> int:
        """The planted group's value, by the independent oracle."""
        frame = oracle.compute(metric, self.tables, period, tuple(group_by), filters)
        mine = frame[frame["scope"] == VICTIM]
        for dim, value in zip(group_by, key, strict=True):
            mine = mine[mine[dim.value].astype(str) == value]
        assert len(mine) == 1
        return int(mine.iloc[0][stat])


def _plant(directory: Path) -> Planted:
    path = directory / "eligibility.parquet"
    original = pq.read_table(path)
    frame = original.to_pandas()
    # One enrollment span per member, enrolled throughout the period...
    frame = frame.drop_duplicates("member_id", keep="first").reset_index(drop=True)
    frame["enrollment_start_date"] = dt.date(2025, 1, 1)
    frame["enrollment_end_date"] = None
    if "death_date" in frame:
        frame["death_date"] = None
    frame["state"] = frame["state"].where(
        frame["state"].notna() & (frame["state"] != TARGET_STATE), "CA"
    )
    # ...except the planted group: the only members in TARGET_STATE, gone after January.
    plan = str(frame["plan_code"].mode().iloc[0])
    candidates = frame[frame["plan_code"] == plan].sort_values("member_id")
    targets = candidates["member_id"].iloc[100:100 + PLANTED]
    planted = frame["member_id"].isin(targets)
    frame.loc[planted, "state"] = TARGET_STATE
    frame.loc[planted, "enrollment_end_date"] = dt.date(2026, 1, 31)
    table = pa.Table.from_pandas(frame, schema=original.schema, preserve_index=False)
    pq.write_table(table, path)
    others = tuple(sorted(set(frame.loc[~planted, "state"])))
    return Planted({}, {}, others, plan)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    root = tmp_path_factory.mktemp("attack-carriers")
    dirs = write_carriers(root, SynthConfig(carriers=2, members=5_000, seed=23, months=3))
    shape = _plant(root / VICTIM)
    data = Planted(
        {d.name: d for d in dirs}, {d.name: oracle.load_carrier(d) for d in dirs},
        shape.other_states, shape.plan,
    )
    # The plant is what the attacks assume.
    assert data.truth("enrollment.member_months", "members") == PLANTED
    assert data.truth("enrollment.member_months", "members", period=LATE, group_by=(),
                      key=()) == data.truth("enrollment.member_months", "members",
                                            group_by=(), key=()) - PLANTED
    return data


Round = tuple[Period, list[QuerySpec]]


async def _attack(planted: Planted, work: Path, rounds: Sequence[Round],
                  policy: Policy | None = None) -> list[RoundOutcome]:
    outcomes = []
    async with SimulatedFederation(planted.dirs, work, policy=policy) as fed:
        assert fed.client is not None
        for period, queries in rounds:
            outcomes.append(await fed.client.run_round(period, queries, deadline_seconds=120))
    return outcomes


def _cell(outcome: RoundOutcome, index: int, key: tuple[str, ...] = (),
          scope: str = VICTIM) -> CombinedCell | None:
    assert outcome.state is RoundState.COMPLETE, outcome.carriers
    table = next(t for t in query_tables(outcome.tables, index) if t.scope == scope)
    for cell in table.cells:
        if tuple(v for _, v in cell.key) == key:
            return cell
    return None


def _released(cell: CombinedCell | None, stat: str) -> int | None:
    """The value an analyst reads off a cell, or None when it is withheld."""
    if cell is None:
        return 0  # no cell: nobody there
    value = cell.stat(stat)
    if value.status.suppressed or value.value is None:
        return None
    return int(value.value)  # type: ignore[arg-type]


def _difference(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


UNGUARDED = Policy(differencing_guard=False)


# --- differencing: all members minus all but the few --------------------------------------


def _all_but_few(planted: Planted) -> list[Round]:
    others = {D.STATE: planted.other_states}
    return [
        (PERIOD, [wire.make_query("cost.pmpm")]),
        (PERIOD, [wire.make_query("cost.pmpm", filters=others)]),
    ]


def _derive_all_but_few(outcomes: list[RoundOutcome]) -> dict[str, int | None]:
    return {
        stat: _difference(_released(_cell(outcomes[0], 0), stat),
                          _released(_cell(outcomes[1], 0), stat))
        for stat in ("members", "allowed_cents", "paid_cents")
    }


async def test_differencing_all_minus_all_but_few(planted: Planted, tmp_path: Path) -> None:
    truth = {s: planted.truth("cost.pmpm", s) for s in ("members", "allowed_cents", "paid_cents")}
    assert truth["allowed_cents"] > 0
    control = _derive_all_but_few(await _attack(
        planted, tmp_path / "control", _all_but_few(planted), UNGUARDED))
    assert control == truth  # the attack works where nothing guards against it
    derived = _derive_all_but_few(await _attack(planted, tmp_path / "guarded",
                                                _all_but_few(planted)))
    assert derived == {s: None for s in truth}


# --- nested filters ------------------------------------------------------------------------


def _nested(planted: Planted) -> list[Round]:
    plan = {D.PLAN_CODE: [planted.plan]}
    return [
        (PERIOD, [wire.make_query("enrollment.member_months", filters=plan)]),
        (PERIOD, [wire.make_query("enrollment.member_months",
                                  filters={**plan, D.STATE: planted.other_states})]),
    ]


def _derive_pair(outcomes: list[RoundOutcome], stat: str) -> int | None:
    return _difference(_released(_cell(outcomes[0], 0), stat),
                       _released(_cell(outcomes[1], 0), stat))


async def test_nested_filters(planted: Planted, tmp_path: Path) -> None:
    control = await _attack(planted, tmp_path / "control", _nested(planted), UNGUARDED)
    assert _derive_pair(control, "members") == PLANTED
    guarded = await _attack(planted, tmp_path / "guarded", _nested(planted))
    assert _derive_pair(guarded, "members") is None
    assert _derive_pair(guarded, "member_months") is None


# --- shifted windows -----------------------------------------------------------------------


def _shifted() -> list[Round]:
    return [
        (PERIOD, [wire.make_query("enrollment.member_months")]),
        (LATE, [wire.make_query("enrollment.member_months")]),
    ]


async def test_shifted_windows(planted: Planted, tmp_path: Path) -> None:
    control = await _attack(planted, tmp_path / "control", _shifted(), UNGUARDED)
    assert _derive_pair(control, "members") == PLANTED
    guarded = await _attack(planted, tmp_path / "guarded", _shifted())
    assert _derive_pair(guarded, "members") is None


# --- a different grouping of the same population --------------------------------------------


def _regrouped(planted: Planted) -> list[Round]:
    others = {D.STATE: planted.other_states}
    return [
        (PERIOD, [wire.make_query("enrollment.member_months", group_by=[D.AGE_BAND])]),
        (PERIOD, [wire.make_query("enrollment.member_months", group_by=[D.MEDICARE_PRIMARY],
                                  filters=others)]),
    ]


def _line_sum(outcome: RoundOutcome, stat: str) -> int | None:
    """The sum of every cell of the victim's table, when all of it is released."""
    table = next(t for t in query_tables(outcome.tables, 0) if t.scope == VICTIM)
    values = [_released(c, stat) for c in table.cells]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


async def test_a_different_grouping_of_the_same_population(
    planted: Planted, tmp_path: Path
) -> None:
    # Member months add up exactly over any member dimension (distinct members would count
    # a member whose age band changed mid-period twice).
    truth = planted.truth("enrollment.member_months", "member_months")
    control = await _attack(planted, tmp_path / "control", _regrouped(planted), UNGUARDED)
    assert _difference(_line_sum(control[0], "member_months"),
                       _line_sum(control[1], "member_months")) == truth
    guarded = await _attack(planted, tmp_path / "guarded", _regrouped(planted))
    assert _difference(_line_sum(guarded[0], "member_months"),
                       _line_sum(guarded[1], "member_months")) is None
    # And the other way round (the regrouped population first) fails as well.
    reverse = await _attack(planted, tmp_path / "reverse", list(reversed(_regrouped(planted))))
    assert _difference(_line_sum(reverse[1], "member_months"),
                       _line_sum(reverse[0], "member_months")) is None


# --- margin subtraction ---------------------------------------------------------------------


async def test_margin_subtraction(planted: Planted, tmp_path: Path) -> None:
    rounds: list[Round] = [
        (PERIOD, [wire.make_query("enrollment.member_months")]),
        (PERIOD, [wire.make_query("enrollment.member_months", group_by=[D.STATE])]),
    ]
    outcomes = await _attack(planted, tmp_path / "default", rounds)
    total = _released(_cell(outcomes[0], 0), "member_months")
    assert total is not None
    table = next(t for t in query_tables(outcomes[1].tables, 0) if t.scope == VICTIM)
    released = [_released(c, "member_months") for c in table.cells]
    target = _cell(outcomes[1], 0, (TARGET_STATE,))
    assert target is not None and _released(target, "member_months") is None
    withheld = sum(1 for v in released if v is None)
    assert withheld >= 2  # the target's cell is not alone in its line
    # What the analyst can derive: the withheld cells together hold the remainder, each at
    # least zero, so the target's member months lie anywhere in [0, remainder].
    remainder = total - sum(v for v in released if v is not None)
    truth = planted.truth("enrollment.member_months", "member_months")
    assert 0 <= truth <= remainder
    assert remainder - 0 >= FLOOR  # an interval of at least the floor: not pinned down


# --- repeated queries under differential privacy ---------------------------------------------


DP = Policy(differential_privacy=DifferentialPrivacy(
    enabled=True, epsilon_per_query=0.5, budget_per_month=2.0))


async def test_averaging_repeated_queries_under_dp(planted: Planted, tmp_path: Path) -> None:
    others = {D.STATE: planted.other_states}
    pair = [wire.make_query("enrollment.member_months"),
            wire.make_query("enrollment.member_months", filters=others)]
    estimates: list[int] = []
    scales: list[float] = []
    spent: list[tuple[float, float]] = []
    refused: list[str] = []
    async with SimulatedFederation(planted.dirs, tmp_path, policy=DP) as fed:
        assert fed.client is not None
        for _ in range(6):
            outcome = await fed.client.run_round(PERIOD, pair, deadline_seconds=120)
            state = {c: (s, m) for c, s, m in outcome.carriers}[VICTIM]
            if state[0] is not CarrierRoundState.ANSWERED:
                refused.append(state[1])
                continue
            cells = [_cell(outcome, i) for i in (0, 1)]
            assert all(c is not None and c.stat("members").status is Status.PERTURBED
                       for c in cells)
            diff = _difference(_released(cells[0], "members"), _released(cells[1], "members"))
            assert diff is not None
            estimates.append(diff)
            table = next(t for t in query_tables(outcome.tables, 0) if t.scope == VICTIM)
            assert table.disclosure is not None
            assert table.disclosure.noise_mechanism
            scale = {n.statistic: n.scale for n in table.disclosure.noise_scales}["members"]
            scales.append(scale)
            spent.append((table.disclosure.epsilon_spent, table.disclosure.epsilon_remaining))
    # The budget (2.0 a month, 1.0 a request) allows two answers; the rest are refused.
    assert len(estimates) == 2 and len(refused) == 4
    assert all("budget" in m for m in refused)
    assert spent == [(1.0, 1.0), (1.0, 0.0)]
    # The best the analyst can do is average the differences: each is the planted count plus
    # the difference of two discrete Laplace draws of the reported scale (variance 2b² each).
    std = math.sqrt(sum(4 * b * b for b in scales)) / len(scales)
    half_width = 1.96 * std
    # A 95% interval around the estimate spans more than a group of the floor's size: the
    # planted count is not pinned down, nor told apart from zero.
    assert 2 * half_width >= FLOOR
    mean = sum(estimates) / len(estimates)
    assert abs(mean - PLANTED) <= 4 * std + 1  # and the noise is what the node reported


# --- restarts -------------------------------------------------------------------------------


async def test_ledger_and_budget_survive_a_node_restart(planted: Planted, tmp_path: Path) -> None:
    rounds = _all_but_few(planted)
    async with SimulatedFederation(planted.dirs, tmp_path / "ledger") as fed:
        assert fed.client is not None
        first = await fed.client.run_round(*rounds[0], deadline_seconds=120)
        await fed.stop_node(VICTIM)
        await fed.start_node(VICTIM)
        second = await fed.client.run_round(*rounds[1], deadline_seconds=120)
        # And once more after a second restart: the attack still fails.
        await fed.stop_node(VICTIM)
        await fed.start_node(VICTIM)
        third = await fed.client.run_round(*rounds[1], deadline_seconds=120)
    assert _released(_cell(first, 0), "members") is not None
    for later in (second, third):
        assert _difference(_released(_cell(first, 0), "members"),
                           _released(_cell(later, 0), "members")) is None
        assert _difference(_released(_cell(first, 0), "allowed_cents"),
                           _released(_cell(later, 0), "allowed_cents")) is None

    query = [wire.make_query("enrollment.member_months")]
    async with SimulatedFederation(planted.dirs, tmp_path / "budget", policy=DP) as fed:
        assert fed.client is not None
        answered = []
        for _ in range(4):
            outcome = await fed.client.run_round(PERIOD, query, deadline_seconds=120)
            answered.append(dict((c, s) for c, s, _ in outcome.carriers)[VICTIM])
        # 0.5 a request against 2.0 a month: four answers, then the budget is spent.
        assert answered == [CarrierRoundState.ANSWERED] * 4
        await fed.stop_node(VICTIM)
        await fed.start_node(VICTIM)
        after = await fed.client.run_round(PERIOD, query, deadline_seconds=120)
        state, message = next((s, m) for c, s, m in after.carriers if c == VICTIM)
        assert state is CarrierRoundState.REFUSED and "budget" in message
