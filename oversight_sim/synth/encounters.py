"""Ordinary encounters and their claims: those that members' conditions, pregnancy and
screening bring, and sampled ones (office, emergency, lab, imaging, surgery, therapy, ...)
whose number grows with the member's cost."""

from __future__ import annotations

import numpy as np

from oversight_sim.synth.arrays import FloatArray, IntArray, Rng, _expand, _uniform_days
from oversight_sim.synth.carriers import _Carrier
from oversight_sim.synth.claims import _Claims, _days_in_window, _pick
from oversight_sim.synth.codes import (
    _KIND_DX,
    _TEMPLATE_OTHER,
    _TEMPLATE_PROVIDER,
    _Choices,
)
from oversight_sim.synth.members import _Members
from oversight_sim.synth.reference import _C
from oversight_sim.synth.templates import (
    _ELECTIVE,
    _KIND,
    _KIND_DAYS,
    _KIND_LINES,
    _KIND_TEMPLATES,
    _KINDS,
    _SAMPLED,
)

# Condition-driven encounters: condition, kinds (with weights), visits per year.
_FORCED: tuple[tuple[str, str, float], ...] = (
    (
        "mental",
        "psych_office:8 psych_telehealth:5 psych_community:4 psych_partial "
        "psych_hospital_outpatient:2",
        4.0,
    ),
    ("substance", "substance_outpatient:6 opioid_treatment:3 substance_residential", 5.0),
    ("hiv", "hiv_visit", 3.0),
    ("cancer", "oncology_infusion", 5.0),
    ("ckd", "nephrology_visit", 2.0),
)


def _forced_events(
    car: _Carrier, m: _Members, rng: Rng
) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
    """(member, kind, day, dx1, driver) of encounters that conditions and screening bring."""
    users = m.latent > 0
    exposure = m.member_months / 12.0
    members: list[IntArray] = []
    kinds: list[IntArray] = []
    days: list[IntArray] = []
    drivers: list[IntArray] = []

    def add(member: IntArray, kind: IntArray, day: IntArray, driver: int) -> None:
        members.append(member)
        kinds.append(kind)
        days.append(day)
        drivers.append(np.full(len(member), driver, dtype=np.int64))

    # Diabetes: office visits with the diagnosis, and HbA1c tests for most.
    diabetic = (m.condition[:, _C["diabetes"]] >= 0) & users
    visits = np.where(
        diabetic, np.where(m.member_months >= 4, 2, 1) + rng.poisson(1.5 * exposure), 0
    )
    mem, _w = _expand(visits.astype(np.int64))
    add(
        mem,
        np.full(len(mem), _KIND["diabetes_visit"]),
        _uniform_days(rng, m.first[mem], m.last[mem]),
        _C["diabetes"],
    )
    tests = np.where(diabetic & (rng.random(m.n) < 0.85), 1 + rng.poisson(0.8 * exposure), 0)
    mem, _w = _expand(tests.astype(np.int64))
    add(
        mem,
        np.full(len(mem), _KIND["hba1c_lab"]),
        _uniform_days(rng, m.first[mem], m.last[mem]),
        _C["diabetes"],
    )

    for condition, text, rate in _FORCED:
        c = _C[condition]
        has = (m.condition[:, c] >= 0) & users
        if condition == "cancer":
            has &= m.latent >= 20_000
        count = np.where(has, rng.poisson(rate * exposure), 0)
        mem, _w = _expand(count.astype(np.int64))
        choices = _Choices.of(text, _KIND)
        add(mem, choices.draw(rng, len(mem)), _uniform_days(rng, m.first[mem], m.last[mem]), c)

    # Prenatal care before a delivery.
    mothers = np.flatnonzero(m.delivery >= 0)
    mem, visit = _expand(np.full(len(mothers), 7, dtype=np.int64))
    mem = mothers[mem]
    day = m.delivery[mem] - 14 - visit * 28 - rng.integers(0, 7, len(mem))
    ok = day >= m.first[mem]
    add(mem[ok], np.full(int(ok.sum()), _KIND["prenatal_visit"]), day[ok], _C["pregnancy"])

    # Screening mammograms for women 50-74.
    age = np.maximum(m.age, 0)
    women = (m.sex == 0) & (age >= 50) & (age < 75) & users & (rng.random(m.n) < 0.62)
    mem = np.flatnonzero(women)
    kind = np.where(
        rng.random(len(mem)) < 0.55, _KIND["mammogram_office"], _KIND["mammogram_hospital"]
    )
    add(mem, kind, _uniform_days(rng, m.first[mem], m.last[mem]), -1)

    member = np.concatenate(members)
    driver = np.concatenate(drivers)
    dx1 = np.full(len(member), -1, dtype=np.int64)
    has_driver = driver >= 0
    dx1[has_driver] = m.condition[member[has_driver], driver[has_driver]]
    return member, np.concatenate(kinds).astype(np.int64), np.concatenate(days), dx1, driver


def _event_claims(
    car: _Carrier,
    m: _Members,
    member: IntArray,
    kind: IntArray,
    day: IntArray,
    dx1: IntArray,
    driver: IntArray,
    rng: Rng,
) -> _Claims:
    n_claims = np.array([len(_KIND_TEMPLATES[k]) for k in range(len(_KINDS))])[kind]
    event, within = _expand(n_claims.astype(np.int64))
    first_template = np.array([t[0] for t in _KIND_TEMPLATES])
    template = first_template[kind[event]] + within
    mem = member[event]
    k = len(event)
    billing = _pick(car, m, mem, _TEMPLATE_PROVIDER[template], rng)
    other = np.full(k, -1, dtype=np.int64)
    rows = np.flatnonzero(_TEMPLATE_OTHER[template] >= 0)
    other[rows] = _pick(car, m, mem[rows], _TEMPLATE_OTHER[template[rows]], rng)
    # Claims of one encounter agree on who was where (the ED physician at that hospital).
    head = np.flatnonzero(within == 0)[event]
    match_head = (within > 0) & (_TEMPLATE_OTHER[template] == _TEMPLATE_PROVIDER[template[head]])
    other[match_head] = billing[head[match_head]]
    second = np.flatnonzero(within == 1)
    head_of_second = head[second]
    match = _TEMPLATE_OTHER[template[head_of_second]] == _TEMPLATE_PROVIDER[template[second]]
    other[head_of_second[match]] = billing[second[match]]

    dx = dx1[event].copy()
    rows = np.flatnonzero(dx < 0)
    dx[rows] = _KIND_DX.draw(kind[event[rows]], rng)
    start = day[event]
    none = np.full(k, -1, dtype=np.int64)
    days = _KIND_DAYS[kind[event]]
    return _Claims(
        member=mem,
        template=template,
        start=start,
        end=start + days - 1,
        admit=none,
        discharge=none,
        status=none,
        drg=none,
        bill=none,
        billing=billing,
        other=other,
        pool=mem,
        dx1=dx,
        driver=driver[event],
        movable=days == 1,
    )


def _sampled_events(
    car: _Carrier, m: _Members, remaining: FloatArray, target_lines: float, rng: Rng
) -> tuple[IntArray, IntArray, IntArray]:
    """(member, kind, day) of ordinary encounters; more of them the more a member costs."""
    age_group = np.digitize(np.maximum(m.age, 0), [18, 65])
    annual = remaining * 12 / m.member_months
    tier = np.digitize(annual, [1_000, 5_000, 20_000])
    group = age_group * 4 + tier
    freq = np.array([_KINDS[k].freq for k in _SAMPLED])  # (kinds, 3)
    tiers = np.array([_KINDS[k].tier for k in _SAMPLED])  # (kinds, 4)
    prob = np.einsum("ka,kt->atk", freq, tiers).reshape(12, len(_SAMPLED))
    prob = prob / prob.sum(axis=1, keepdims=True)
    lines_per_event = prob @ _KIND_LINES[_SAMPLED]
    users = remaining > 0
    intensity = np.where(users, remaining**_EVENT_EXPONENT, 0.0)
    expected = float((intensity * lines_per_event[group]).sum())
    scale = max(target_lines, 0.0) / expected if expected > 0 else 0.0
    count = np.where(users, np.maximum(rng.poisson(intensity * scale), 1), 0)
    event_member, _w = _expand(count.astype(np.int64))
    g = group[event_member]
    kind = np.empty(len(event_member), dtype=np.int64)
    cum = np.cumsum(prob, axis=1)
    u = rng.random(len(event_member))
    for gi in range(12):
        rows = np.flatnonzero(g == gi)
        if len(rows):
            kind[rows] = _SAMPLED[
                np.minimum(np.searchsorted(cum[gi], u[rows], side="right"), len(_SAMPLED) - 1)
            ]
    day = _days_in_window(car, rng, m.first[event_member], m.last[event_member], _ELECTIVE[kind])
    return event_member, kind, day


#: How the number of encounters grows with a member's cost (cost ** exponent).
_EVENT_EXPONENT = 0.6
