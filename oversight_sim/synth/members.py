"""Members and enrollment: families with an enrollee type, ages, a state and a plan;
enrollment spans, plan switches and deaths; conditions and each member's latent annual cost.
Also member ids, dates moved outside enrollment, and the eligibility table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fedoversight.schema import ELIGIBILITY
from oversight_sim.synth.arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    Rng,
    _expand,
    _lognormal,
    _month_of,
    _month_start,
    _uniform_days,
)
from oversight_sim.synth.carriers import _Carrier
from oversight_sim.synth.codes import _CONDITION_CHOICES, _DX, _Choices
from oversight_sim.synth.columns import _codes, _dates, _ids, _table
from oversight_sim.synth.reference import (
    _C,
    _CONDITIONS,
    _ENROLLEE_TYPES,
    _PROGRAMS,
    _RELATIONSHIPS,
    _SEXES,
    _STATE_CODES,
    _STATE_WEIGHTS,
    _TIERS,
    _TYPE1_DIABETES,
)


@dataclass(frozen=True)
class _Members:
    number: IntArray  # member number within the carrier (1-based)
    subscriber: IntArray  # member number of the family's subscriber
    relationship: IntArray
    enrollee_type: IntArray
    coverage_tier: IntArray
    sex: IntArray
    birth: IntArray
    age: FloatArray  # years, on the first day of the window (negative: born later)
    state: IntArray  # -1: unknown
    program: IntArray
    plan: IntArray
    plan2: IntArray  # plan after a mid-year switch, -1 when none
    switch: IntArray  # first day of the second span, -1 when none
    span_start: IntArray
    span_end: IntArray  # -1: open
    death: IntArray  # -1: alive
    first: IntArray  # first enrolled day in the window
    last: IntArray  # last enrolled day in the window
    member_months: IntArray
    medicare: BoolArray
    preference: FloatArray  # where in a provider list the member's usual providers sit
    condition: IntArray  # (members, conditions): diagnosis code index, -1 when absent
    latent: FloatArray  # annual allowed at full enrollment, dollars
    specialty: BoolArray
    dialysis: BoolArray
    delivery: IntArray  # day of a delivery in the window, -1 when none

    @property
    def n(self) -> int:
        return len(self.number)


def _annual_death_rate(age: FloatArray) -> FloatArray:
    return np.select(
        [age < 1, age < 45, age < 65, age < 75, age < 85],
        [0.004, 0.001, 0.005, 0.015, 0.04],
        default=0.11,
    )


def _members(car: _Carrier, first_number: int, n: int, rng: Rng) -> _Members:
    ws, we = car.window_start, car.window_end
    window_days = we - ws + 1
    sizes = rng.choice(np.arange(1, 7), size=n, p=[0.42, 0.27, 0.12, 0.12, 0.05, 0.02])
    family, position = _expand(sizes.astype(np.int64))
    family, position = family[:n], position[:n]
    n_fam = int(family[-1]) + 1
    fam_size = np.bincount(family, minlength=n_fam)
    head = np.flatnonzero(position == 0)
    number = np.arange(first_number, first_number + n, dtype=np.int64)

    # Family attributes.
    etype_f = rng.choice(3, size=n_fam, p=[0.62, 0.33, 0.05])
    age_f = np.select(
        [etype_f == 0, etype_f == 1],
        [np.clip(rng.normal(45, 11, n_fam), 20, 70), np.clip(rng.normal(72, 8, n_fam), 50, 99)],
        default=np.clip(rng.normal(76, 10, n_fam), 25, 99),
    )
    spouse_f = rng.random(n_fam) < np.where(etype_f == 2, 0.0, 0.8)
    sex_f = (rng.random(n_fam) < 0.5).astype(np.int64)  # 0 F, 1 M
    if car.national:
        state_f = rng.choice(len(_STATE_CODES), size=n_fam, p=_STATE_WEIGHTS)
    else:
        home = car.home_states[rng.integers(0, len(car.home_states), size=n_fam)]
        anywhere = rng.choice(len(_STATE_CODES), size=n_fam, p=_STATE_WEIGHTS)
        state_f = np.where(rng.random(n_fam) < 0.85, home, anywhere)
    program_f = (rng.random(n_fam) < car.pshb_share).astype(np.int64)
    plan_w = np.array([p.weight for p in car.plans])
    plan_f = rng.choice(len(car.plans), size=n_fam, p=plan_w / plan_w.sum())

    # Family enrollment: before the year, from 1 January, or joined mid-year; some terms.
    start_kind = rng.choice(3, size=n_fam, p=[0.30, 0.60, 0.10])
    before = ws - rng.integers(30, 365 * 15, size=n_fam)
    before = np.where(rng.random(n_fam) < 0.8, _month_start(_month_of(before)), before)
    joined = ws + 1 + np.floor(rng.random(n_fam) * max(window_days - 16, 1)).astype(np.int64)
    start_f = np.select([start_kind == 0, start_kind == 1], [before, np.full(n_fam, ws)], joined)
    first_f = np.maximum(start_f, ws)
    termed = (rng.random(n_fam) < 0.07) & (we - first_f > 20)
    end_f = _uniform_days(rng, first_f + 10, np.full(n_fam, we))
    month_end = _month_start(_month_of(end_f) + 1) - 1
    end_f = np.where(rng.random(n_fam) < 0.5, np.minimum(month_end, we), end_f)
    end_f = np.where(termed, end_f, -1)
    last_f = np.where(end_f >= 0, end_f, we)
    switching = (len(car.plans) > 1) & (rng.random(n_fam) < 0.035) & (last_f - first_f > 60)
    switch_f = np.where(switching, _uniform_days(rng, first_f + 21, last_f - 21), -1)
    if len(car.plans) > 1:
        plan2_f = (plan_f + 1 + rng.integers(0, len(car.plans) - 1, size=n_fam)) % len(car.plans)
    else:
        plan2_f = np.full(n_fam, -1, dtype=np.int64)
    plan2_f = np.where(switching, plan2_f, -1)

    # Members.
    relationship = np.where(position == 0, 0, np.where((position == 1) & spouse_f[family], 1, 2))
    age = age_f[family].copy()
    is_spouse, is_child = relationship == 1, relationship == 2
    age[is_spouse] = np.maximum(age[is_spouse] + rng.normal(-2, 4, int(is_spouse.sum())), 18)
    child_max = np.clip(age_f[family] - 18, 1, 25.9)
    age[is_child] = rng.random(int(is_child.sum())) * child_max[is_child]
    # Some children are born in the window, while their family is enrolled.
    newborn = is_child & (rng.random(n) < 0.025) & (last_f[family] - first_f[family] > 30)
    birth = ws - np.floor(age * 365.25).astype(np.int64)
    birth = np.where(newborn, _uniform_days(rng, first_f[family] + 1, last_f[family] - 10), birth)
    age = np.where(newborn, (ws - birth) / 365.25, age)
    sex = np.where(relationship == 0, sex_f[family], (rng.random(n) < 0.5).astype(np.int64))
    sex = np.where(is_spouse & (rng.random(n) < 0.95), 1 - sex_f[family], sex)
    sex = np.where(rng.random(n) < 0.002, 2, sex)
    state = np.where(rng.random(n) < 0.003, -1, state_f[family])

    span_start = start_f[family].copy()
    span_start = np.where(birth > span_start, birth, span_start)
    span_end = end_f[family].copy()
    # Children leave at the end of the month they turn 26.
    turns_26 = birth + np.round(26 * 365.25).astype(np.int64)
    age_out = _month_start(_month_of(turns_26) + 1) - 1
    leaves = (
        is_child
        & (turns_26 >= ws)
        & (age_out <= we)
        & ((span_end < 0) | (age_out < span_end))
        & (age_out >= np.maximum(span_start, ws))
    )
    span_end = np.where(leaves, age_out, span_end)
    first = np.maximum(span_start, ws)
    last = np.where(span_end >= 0, np.minimum(span_end, we), we)
    # Deaths end enrollment.
    dies = rng.random(n) < _annual_death_rate(age) * window_days / 365.25
    death = np.where(dies, _uniform_days(rng, first, last), -1)
    span_end = np.where(dies, death, span_end)
    last = np.where(dies, death, last)
    # A plan switch applies to the members enrolled on both sides of it.
    switch = switch_f[family]
    plan = plan_f[family].copy()
    plan2 = plan2_f[family].copy()
    switch_before = (switch >= 0) & (switch <= first)
    plan = np.where(switch_before, plan2, plan)
    no_switch = (switch < 0) | switch_before | (switch > last)
    switch = np.where(no_switch, -1, switch)
    plan2 = np.where(no_switch, -1, plan2)
    member_months = _month_of(last) - _month_of(first) + 1

    etype = etype_f[family]
    age_now = np.maximum(age, 0)
    medicare = np.where(
        age_now >= 65, rng.random(n) < np.where(etype == 0, 0.05, 0.88), rng.random(n) < 0.01
    )
    tier = np.minimum(fam_size[family], 3) - 1

    condition, latent, specialty, dialysis, delivery = _health(
        car, age_now, sex, first, last, member_months, dies, rng
    )
    return _Members(
        number=number,
        subscriber=number[head][family],
        relationship=relationship,
        enrollee_type=etype,
        coverage_tier=tier,
        sex=sex,
        birth=birth,
        age=age,
        state=state,
        program=program_f[family],
        plan=plan,
        plan2=plan2,
        switch=switch,
        span_start=span_start,
        span_end=span_end,
        death=death,
        first=first,
        last=last,
        member_months=member_months,
        medicare=medicare,
        preference=rng.random(n),
        condition=condition,
        latent=latent,
        specialty=specialty,
        dialysis=dialysis,
        delivery=delivery,
    )


def _health(
    car: _Carrier,
    age: FloatArray,
    sex: IntArray,
    first: IntArray,
    last: IntArray,
    member_months: IntArray,
    dies: BoolArray,
    rng: Rng,
) -> tuple[IntArray, FloatArray, BoolArray, BoolArray, IntArray]:
    """Conditions and the latent annual cost of each member."""
    n = len(age)
    band = np.digitize(age, [18, 45, 65])  # 0-17, 18-44, 45-64, 65+

    def prevalence(*by_band: float) -> BoolArray:
        return rng.random(n) < np.array(by_band)[band]

    has = np.zeros((n, len(_CONDITIONS)), dtype=np.bool_)
    has[:, _C["diabetes"]] = prevalence(0.003, 0.04, 0.12, 0.2)
    has[:, _C["hypertension"]] = prevalence(0.003, 0.1, 0.33, 0.6)
    has[:, _C["hyperlipidemia"]] = prevalence(0.002, 0.06, 0.25, 0.45)
    has[:, _C["mental"]] = prevalence(0.07, 0.15, 0.13, 0.09)
    has[:, _C["substance"]] = prevalence(0.004, 0.04, 0.03, 0.015)
    has[:, _C["hiv"]] = prevalence(0.0, 0.004, 0.004, 0.002)
    has[:, _C["ckd"]] = prevalence(0.0, 0.003, 0.02, 0.05)
    has[:, _C["copd"]] = prevalence(0.0, 0.003, 0.03, 0.08)
    has[:, _C["chf"]] = prevalence(0.0, 0.001, 0.01, 0.05)
    has[:, _C["cancer"]] = prevalence(0.001, 0.004, 0.015, 0.03)
    women = (sex == 0) & (age >= 18) & (age < 45) & (last - first > 90)
    has[:, _C["pregnancy"]] = women & (rng.random(n) < 0.05)
    dialysis = has[:, _C["ckd"]] & (rng.random(n) < 0.1)

    # Latent annual allowed: zero, a lognormal body, a band of complex members, a heavy tail.
    body = np.array([0.6, 0.8, 1.25, 1.7])[band] * _lognormal(rng, 1.0, n)
    factors = np.array([1.9, 1.25, 1.2, 1.4, 1.4, 2.0, 1.8, 1.6, 2.2, 2.5, 1.0])
    body *= np.prod(np.where(has, factors, 1.0), axis=1)
    latent = body * _BODY_MEAN
    u = rng.random(n)
    complex_band = u < _COMPLEX_SHARE * np.array([0.4, 0.7, 1.3, 1.8])[band]
    latent = np.where(complex_band, _COMPLEX_MEDIAN * _lognormal(rng, 0.45, n) * 1.1, latent)
    tail = rng.random(n) < _TAIL_SHARE * np.array([0.5, 0.8, 1.2, 1.5])[band]
    latent = np.where(tail, np.minimum(100_000 * rng.random(n) ** (-1 / 1.3), 3e6), latent)
    zero_p = np.array([0.2, 0.19, 0.12, 0.06])[band]
    must_use = (
        has[:, _C["diabetes"]]
        | has[:, _C["hiv"]]
        | has[:, _C["cancer"]]
        | has[:, _C["pregnancy"]]
        | dialysis
        | dies
    )
    zero = (rng.random(n) < zero_p) & ~must_use
    latent = np.where(zero, 0.0, latent * car.cost_factor * _COST_SCALE)
    has[zero] = False

    annual = latent
    specialty = (
        ((annual >= 25_000) & (rng.random(n) < 0.45))
        | has[:, _C["hiv"]]
        | (has[:, _C["cancer"]] & (rng.random(n) < 0.4))
    ) & ~zero
    latent = np.where(specialty, np.maximum(latent, 30_000 * (1 + rng.random(n))), latent)
    latent = np.where(dialysis, np.maximum(latent, 90_000 * (1 + 0.5 * rng.random(n))), latent)
    latent = np.where(dies & (age >= 45), np.maximum(latent, 25_000 * (1 + rng.random(n))), latent)
    delivery = np.where(has[:, _C["pregnancy"]], _uniform_days(rng, first + 30, last), -1)

    condition = np.full((n, len(_CONDITIONS)), -1, dtype=np.int64)
    for c, choices in enumerate(_CONDITION_CHOICES):
        rows = np.flatnonzero(has[:, c])
        condition[rows, c] = choices.draw(rng, len(rows))
    type1 = has[:, _C["diabetes"]] & ((age < 30) | (rng.random(n) < 0.07))
    rows = np.flatnonzero(type1)
    condition[rows, _C["diabetes"]] = _Choices.of(" ".join(_TYPE1_DIABETES), _DX).draw(
        rng, len(rows)
    )
    dialysis_rows = np.flatnonzero(dialysis)
    condition[dialysis_rows, _C["ckd"]] = _DX["N186"]
    return condition, latent, specialty, dialysis, delivery


#: Calibration of the latent cost (see calibration.calibration_report and the tests).
_BODY_MEAN = 2600.0
_COMPLEX_SHARE = 0.036
_COMPLEX_MEDIAN = 32_000.0
_TAIL_SHARE = 0.0014
_COST_SCALE = 0.98


def _member_ids(car: _Carrier, numbers: IntArray) -> pa.Array:
    return _ids(f"{car.carrier_id}M", numbers, 7)


def _outside_enrollment(
    car: _Carrier,
    m: _Members,
    member: IntArray,
    day: IntArray,
    candidate: BoolArray,
    share: float,
    rng: Rng,
) -> IntArray:
    """Move about ``share`` of all items to a month in which the member is not enrolled (never
    before the member was born)."""
    ws, we = car.window_start, car.window_end
    earliest = np.maximum(m.birth, ws)
    before = np.maximum(_month_start(_month_of(m.first)) - earliest, 0)
    after_start = _month_start(_month_of(m.last) + 1)
    after = np.maximum(we - after_start + 1, 0)
    gap = (before + after)[member]
    eligible = candidate & (gap > 0)
    if not eligible.any():
        return day
    p = min(1.0, share * len(day) / int(eligible.sum()))
    move = np.flatnonzero(eligible & (rng.random(len(day)) < p))
    r = np.floor(rng.random(len(move)) * gap[move]).astype(np.int64)
    b = before[member[move]]
    new_day = day.copy()
    new_day[move] = np.where(r < b, earliest[member[move]] + r, after_start[member[move]] + r - b)
    return new_day


def _eligibility_table(car: _Carrier, m: _Members) -> pa.Table:
    two = m.switch >= 0
    member = np.concatenate([np.arange(m.n), np.flatnonzero(two)])
    second = np.concatenate([np.zeros(m.n, dtype=np.bool_), np.ones(int(two.sum()), np.bool_)])
    order = np.lexsort((second, member))
    member, second = member[order], second[order]
    start = np.where(second, m.switch[member], m.span_start[member])
    end = np.where(second | ~two[member], m.span_end[member], m.switch[member] - 1)
    plan = np.where(second, m.plan2[member], m.plan[member])
    plans = [p.code for p in car.plans]
    hdhp = np.array([p.hdhp for p in car.plans])[plan]
    death = m.death[member]
    columns: dict[str, pa.Array] = {
        "member_id": _member_ids(car, m.number[member]),
        "program": _codes(_PROGRAMS, m.program[member]),
        "plan_code": _codes(plans, plan),
        "birth_date": _dates(m.birth[member]),
        "sex": _codes(_SEXES, m.sex[member]),
        "state": _codes(_STATE_CODES, m.state[member]),
        "enrollment_start_date": _dates(start),
        "enrollment_end_date": _dates(end, end < 0),
        "medicare_primary": pa.array(m.medicare[member]),
        "subscriber_id": _member_ids(car, m.subscriber[member]),
        "relationship": _codes(_RELATIONSHIPS, m.relationship[member]),
        "death_date": _dates(death, death < 0),
        "enrollee_type": _codes(_ENROLLEE_TYPES, m.enrollee_type[member]),
        "coverage_tier": _codes(_TIERS, m.coverage_tier[member]),
        "hdhp": pa.array(hdhp),
    }
    return _table(ELIGIBILITY, columns)
