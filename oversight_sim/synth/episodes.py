"""Expensive episodes of care and their claims: acute stays with transfers and readmissions,
deliveries and newborns, psychiatric, substance use and rehabilitation stays, skilled nursing,
home health, hospice and dialysis; long stays billed as interim claims."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oversight_sim.synth.arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    Rng,
    _expand,
    _month_of,
    _month_start,
)
from oversight_sim.synth.carriers import _Carrier
from oversight_sim.synth.claims import _Claims, _concat_claims, _days_in_window, _pick
from oversight_sim.synth.codes import _BILL, _DRGI, _DX, _DX_POOL_CHOICES, _VOCAB, _Choices
from oversight_sim.synth.members import _Members
from oversight_sim.synth.reference import (
    _C,
    _DRG_ANTEPARTUM,
    _DRG_DX,
    _DRG_ELECTIVE,
    _DRG_MEDICAL,
    _DRG_NEWBORN,
    _DRG_NICU,
    _DRG_PSYCH,
    _DRG_REHAB,
    _DRG_SUBSTANCE,
    _DRG_SURGICAL,
    _DS,
    _PK,
)
from oversight_sim.synth.templates import _EPISODE_CLAIMS, _EPISODE_TEMPLATE, _I

# Episode types.
_MEDICAL, _SURGICAL, _DELIVERY, _NEWBORN, _NICU, _PSYCH, _SUBSTANCE, _REHAB, _ANTEPARTUM = range(9)
_SNF, _HOME_HEALTH, _HOSPICE_HOME, _HOSPICE_INPATIENT, _DIALYSIS = range(10, 15)
_EPISODE_TEMPLATES: dict[int, tuple[str, ...]] = {
    _MEDICAL: ("stay_facility", "stay_hospitalist"),
    _SURGICAL: ("surgical_facility", "stay_hospitalist", "surgeon_inpatient"),
    _DELIVERY: ("delivery_facility", "obstetric_delivery"),
    _NEWBORN: ("newborn_facility", "newborn_care"),
    _NICU: ("nicu_facility", "newborn_care"),
    _PSYCH: ("psych_facility", "psych_attending"),
    _SUBSTANCE: ("substance_facility", "stay_hospitalist"),
    _REHAB: ("rehab_facility", "rehab_attending"),
    _ANTEPARTUM: ("stay_facility", "stay_hospitalist"),
    _SNF: ("snf_facility", "snf_visit"),
    _HOME_HEALTH: ("home_health_episode",),
    _HOSPICE_HOME: ("hospice_home",),
    _HOSPICE_INPATIENT: ("hospice_inpatient",),
    _DIALYSIS: ("dialysis_facility", "dialysis_monthly"),
}
_STAY_TYPES = frozenset(range(9))
_INPATIENT_TYPES = _STAY_TYPES | {_SNF, _HOSPICE_INPATIENT}
#: Relative cost of an episode: fixed part and part per day.
_EPISODE_COST = {
    _MEDICAL: (5.0, 1.6),
    _SURGICAL: (12.0, 1.6),
    _DELIVERY: (6.0, 1.2),
    _NEWBORN: (1.2, 0.4),
    _NICU: (8.0, 2.5),
    _PSYCH: (2.0, 1.0),
    _SUBSTANCE: (2.0, 1.0),
    _REHAB: (3.0, 1.3),
    _ANTEPARTUM: (3.0, 1.2),
    _SNF: (0.0, 0.5),
    _HOME_HEALTH: (3.0, 0.0),
    _HOSPICE_HOME: (0.0, 0.15),
    _HOSPICE_INPATIENT: (0.0, 1.0),
    _DIALYSIS: (6.0, 0.0),
}
_DRG_POOLS = {
    _MEDICAL: _DRG_MEDICAL,
    _SURGICAL: _DRG_SURGICAL,
    _NEWBORN: _DRG_NEWBORN,
    _NICU: _DRG_NICU,
    _PSYCH: _DRG_PSYCH,
    _SUBSTANCE: _DRG_SUBSTANCE,
    _REHAB: _DRG_REHAB,
    _ANTEPARTUM: _DRG_ANTEPARTUM,
}


@dataclass(frozen=True)
class _Episodes:
    member: IntArray
    kind: IntArray
    start: IntArray
    end: IntArray
    drg: IntArray
    facility: IntArray
    status: IntArray


def _stay_los(kind: IntArray, rng: Rng) -> IntArray:
    n = len(kind)
    los = np.select(
        [
            kind == _MEDICAL,
            kind == _SURGICAL,
            kind == _DELIVERY,
            kind == _NEWBORN,
            kind == _NICU,
            kind == _PSYCH,
            kind == _SUBSTANCE,
            kind == _REHAB,
        ],
        [
            np.minimum(rng.geometric(0.28, n), 30),
            np.minimum(rng.geometric(0.4, n), 20),
            1 + rng.integers(1, 3, n),
            np.full(n, 2),
            np.minimum(4 + rng.geometric(0.06, n), 60),
            np.minimum(3 + rng.geometric(0.12, n), 30),
            np.minimum(2 + rng.geometric(0.25, n), 14),
            np.minimum(6 + rng.geometric(0.12, n), 30),
        ],
        default=np.minimum(rng.geometric(0.5, n), 7),
    )
    return np.asarray(los, dtype=np.int64)


def _draw_drg(kind: IntArray, rng: Rng) -> IntArray:
    drg = np.full(len(kind), -1, dtype=np.int64)
    for k, pool in _DRG_POOLS.items():
        rows = np.flatnonzero(kind == k)
        drg[rows] = _Choices.of(" ".join(pool), _DRGI).draw(rng, len(rows))
    deliveries = np.flatnonzero(kind == _DELIVERY)
    cesarean = rng.random(len(deliveries)) < 0.32
    vaginal = _Choices.of("807:6 806 805 798 796 768", _DRGI).draw(rng, len(deliveries))
    csect = _Choices.of("788:4 787 786:2 785 784 783", _DRGI).draw(rng, len(deliveries))
    drg[deliveries] = np.where(cesarean, csect, vaginal)
    return drg


def _episodes(
    car: _Carrier, m: _Members, budget: FloatArray, rng: Rng
) -> tuple[_Episodes, FloatArray]:
    """Expensive episodes of care and each one's budget (dollars); updates nothing in place."""
    age = np.maximum(m.age, 0)
    annual = budget * 12 / m.member_months
    p_stay = np.clip(np.log10(np.maximum(annual, 1)) - 4.05, 0, 0.85)
    n_stays = np.where(
        rng.random(m.n) < p_stay,
        1 + np.minimum(rng.poisson(np.maximum(annual - 40_000, 0) / 120_000), 4),
        0,
    )
    s_member, _w = _expand(n_stays.astype(np.int64))
    k = len(s_member)
    s_age = age[s_member]
    r = rng.random(k)
    substance = m.condition[s_member, _C["substance"]] >= 0
    mental = m.condition[s_member, _C["mental"]] >= 0
    surgical = rng.random(k) < np.where(s_age < 18, 0.15, np.where(s_age < 65, 0.4, 0.25))
    kind = np.where(
        substance & (r < 0.4),
        _SUBSTANCE,
        np.where(mental & (r < 0.35), _PSYCH, np.where(surgical, _SURGICAL, _MEDICAL)),
    )
    drg = _draw_drg(kind, rng)
    elective = np.isin(drg, [_DRGI[d] for d in _DRG_ELECTIVE])
    admit = _days_in_window(car, rng, m.first[s_member], m.last[s_member], elective)

    # Deliveries (with an antepartum stay for some), newborns, deaths in hospital.
    mothers = np.flatnonzero(m.delivery >= 0)
    ante = mothers[rng.random(len(mothers)) < 0.08]
    babies = np.flatnonzero((m.birth >= car.window_start) & (m.birth <= car.window_end))
    nicu = rng.random(len(babies)) < 0.08
    decedents = np.flatnonzero((m.death >= 0) & (age >= 18))
    in_hospital = rng.random(len(decedents)) < 0.45
    terminal = decedents[in_hospital]
    forced_member = np.concatenate([mothers, ante, babies, terminal])
    forced_kind = np.concatenate(
        [
            np.full(len(mothers), _DELIVERY),
            np.full(len(ante), _ANTEPARTUM),
            np.where(nicu, _NICU, _NEWBORN),
            np.full(len(terminal), _MEDICAL),
        ]
    ).astype(np.int64)
    forced_drg = _draw_drg(forced_kind, rng)
    ante_day = np.maximum(m.delivery[ante] - rng.integers(10, 90, len(ante)), m.first[ante])
    forced_admit = np.concatenate(
        [m.delivery[mothers], ante_day, m.birth[babies], np.zeros(len(terminal), np.int64)]
    )

    member = np.concatenate([s_member, forced_member])
    kind = np.concatenate([kind, forced_kind])
    drg = np.concatenate([drg, forced_drg])
    admit = np.concatenate([admit, forced_admit])
    los = _stay_los(kind, rng)
    is_terminal = np.zeros(len(member), dtype=np.bool_)
    is_terminal[len(member) - len(terminal) :] = True
    admit = np.where(is_terminal, np.maximum(m.death[member] - los, m.first[member]), admit)
    discharge = admit + los
    status = np.full(len(member), _DS["01"], dtype=np.int64)
    facility = _pick(
        car, m, member, np.where(kind == _PSYCH, _PK["psych_hospital"], _PK["hospital"]), rng
    )

    # After an acute stay: transfer, rehabilitation, skilled nursing, home health; readmission.
    acute = np.flatnonzero((kind == _MEDICAL) | (kind == _SURGICAL))
    old = age[member[acute]] >= 65
    r = rng.random(len(acute))
    transfer = r < 0.03
    rehab = ~transfer & old & (r < 0.07)
    snf = ~transfer & ~rehab & old & (r < 0.25)
    home = ~transfer & ~rehab & ~snf & (r < np.where(old, 0.37, 0.06))
    readmit_p = np.where(old, 0.17, 0.1)
    readmitted = np.concatenate(
        [
            acute[rng.random(len(acute)) < readmit_p],
            np.flatnonzero(kind == _PSYCH)[rng.random(int((kind == _PSYCH).sum())) < 0.12],
        ]
    )
    status[acute[transfer]] = _DS["02"]
    status[acute[rehab]] = _DS["62"]
    status[acute[snf]] = _DS["03"]
    status[acute[home]] = _DS["06"]
    src = np.concatenate([acute[transfer], acute[rehab], readmitted, acute[snf], acute[home]])
    d_kind = np.concatenate(
        [
            np.full(int(transfer.sum()), _MEDICAL),
            np.full(int(rehab.sum()), _REHAB),
            np.where(kind[readmitted] == _PSYCH, _PSYCH, _MEDICAL),
            np.full(int(snf.sum()), _SNF),
            np.full(int(home.sum()), _HOME_HEALTH),
        ]
    ).astype(np.int64)
    gap = np.concatenate(
        [
            np.zeros(int(transfer.sum()) + int(rehab.sum()), np.int64),
            rng.integers(2, 30, len(readmitted)),
            np.zeros(int(snf.sum()), np.int64),
            np.ones(int(home.sum()), np.int64),
        ]
    )
    d_member = member[src]
    d_start = discharge[src] + gap
    d_los = np.select(
        [d_kind == _SNF, d_kind == _HOME_HEALTH],
        [np.minimum(7 + rng.geometric(0.08, len(src)), 60), np.full(len(src), 29)],
        default=_stay_los(d_kind, rng),
    )
    d_drg = _draw_drg(d_kind, rng)
    readmit_same = np.zeros(len(src), dtype=np.bool_)
    first_readmit = int(transfer.sum()) + int(rehab.sum())
    readmit_same[first_readmit : first_readmit + len(readmitted)] = (
        rng.random(len(readmitted)) < 0.6
    )
    d_facility_kind = np.select(
        [d_kind == _REHAB, d_kind == _SNF, d_kind == _HOME_HEALTH, d_kind == _PSYCH],
        [_PK["rehab_hospital"], _PK["snf"], _PK["hha"], _PK["psych_hospital"]],
        default=_PK["hospital"],
    )
    d_facility = np.where(
        readmit_same, facility[src], _pick(car, m, d_member, d_facility_kind, rng)
    )
    keep = d_start <= m.last[d_member]

    # Hospice at the end of life; dialysis every enrolled month.
    old_dead = decedents[~in_hospital & (age[decedents] >= 65)]
    old_dead = old_dead[rng.random(len(old_dead)) < 0.6]
    death = m.death[old_dead]
    gip = rng.random(len(old_dead)) < 0.3
    gip_start = np.maximum(death - rng.integers(1, 5, len(old_dead)), m.first[old_dead])
    home_start = np.maximum(death - rng.integers(5, 60, len(old_dead)), m.first[old_dead])
    home_end = np.where(gip, gip_start - 1, death)
    home_ok = home_end >= home_start
    hospice_facility = _pick(car, m, old_dead, _PK["hospice"], rng)
    dial = np.flatnonzero(m.dialysis)
    dial_member, month_no = _expand(m.member_months[dial])
    dial_member = dial[dial_member]
    month = _month_of(m.first[dial_member]) + month_no
    dial_start = np.maximum(_month_start(month), m.first[dial_member])
    dial_end = np.minimum(_month_start(month + 1) - 1, m.last[dial_member])
    dial_facility = _pick(car, m, dial_member, _PK["dialysis"], rng)

    e_member = np.concatenate(
        [member, d_member[keep], old_dead[home_ok], old_dead[gip], dial_member]
    )
    e = _Episodes(
        member=e_member,
        kind=np.concatenate(
            [
                kind,
                d_kind[keep],
                np.full(int(home_ok.sum()), _HOSPICE_HOME),
                np.full(int(gip.sum()), _HOSPICE_INPATIENT),
                np.full(len(dial_member), _DIALYSIS),
            ]
        ).astype(np.int64),
        start=np.concatenate(
            [admit, d_start[keep], home_start[home_ok], gip_start[gip], dial_start]
        ),
        end=np.concatenate(
            [discharge, (d_start + d_los)[keep], home_end[home_ok], death[gip], dial_end]
        ),
        drg=np.concatenate(
            [drg, d_drg[keep], np.full(int(home_ok.sum()) + int(gip.sum()) + len(dial_member), -1)]
        ),
        facility=np.concatenate(
            [
                facility,
                d_facility[keep],
                hospice_facility[home_ok],
                hospice_facility[gip],
                dial_facility,
            ]
        ),
        status=np.concatenate(
            [
                status,
                np.full(int(keep.sum()), _DS["01"]),
                np.full(int(home_ok.sum()), -1),
                np.full(int(gip.sum()), _DS["20"]),
                np.full(len(dial_member), -1),
            ]
        ).astype(np.int64),
    )
    # Deaths during an inpatient episode.
    died_in = (
        np.isin(e.kind, list(_INPATIENT_TYPES))
        & (m.death[e.member] >= 0)
        & (m.death[e.member] <= e.end)
    )
    e = _Episodes(
        member=e.member,
        kind=e.kind,
        start=e.start,
        end=np.where(died_in, m.death[e.member], e.end),
        drg=e.drg,
        facility=e.facility,
        status=np.where(died_in, _DS["20"], e.status),
    )
    e = _subset(e, e.end >= e.start)
    e = _subset(e, ~_overlapping(e))

    # Budgets: the episodes take most of the member's medical budget.
    fixed = np.array([_EPISODE_COST.get(k, (0.0, 0.0))[0] for k in range(15)])
    per_day = np.array([_EPISODE_COST.get(k, (0.0, 0.0))[1] for k in range(15)])
    weight = fixed[e.kind] + per_day[e.kind] * (e.end - e.start + 1)
    weight = np.where(np.isin(e.drg, [_DRGI[d] for d in _DRG_SURGICAL]), weight * 1.4, weight)
    return e, weight


def _subset(e: _Episodes, keep: BoolArray) -> _Episodes:
    return _Episodes(**{f: getattr(e, f)[keep] for f in _Episodes.__dataclass_fields__})


def _overlapping(e: _Episodes) -> BoolArray:
    """Inpatient episodes that start before the member's previous one ended (or after a
    death): a person is in one bed at a time. Later episodes give way."""
    inpatient = np.isin(e.kind, list(_INPATIENT_TYPES))
    drop = np.zeros(len(e.member), dtype=np.bool_)
    while True:
        rows = np.flatnonzero(inpatient & ~drop)
        order = rows[np.lexsort((e.end[rows], e.start[rows], e.member[rows]))]
        same = e.member[order][1:] == e.member[order][:-1]
        free_from = np.where(
            e.status[order][:-1] == _DS["20"], np.iinfo(np.int64).max, e.end[order][:-1]
        )
        clash = same & (e.start[order][1:] < free_from)
        if not clash.any():
            return drop
        drop[order[1:][clash]] = True


def _episode_claims(
    car: _Carrier, m: _Members, e: _Episodes, pool_offset: int, rng: Rng
) -> _Claims:
    parts: list[_Claims] = []
    n = len(e.member)
    pool = pool_offset + np.arange(n, dtype=np.int64)
    dx1 = np.full(n, -1, dtype=np.int64)
    has_drg = e.drg >= 0
    drg_dx = np.array([_DX[_DRG_DX[d]] for d in _VOCAB.drg], dtype=np.int64)
    dx1[has_drg] = drg_dx[e.drg[has_drg]]
    for kind, pool_name in (
        (_SNF, "rehab"),
        (_HOME_HEALTH, "elderly"),
        (_HOSPICE_HOME, "hospice"),
        (_HOSPICE_INPATIENT, "hospice"),
        (_DIALYSIS, "renal"),
    ):
        rows = np.flatnonzero(e.kind == kind)
        dx1[rows] = _DX_POOL_CHOICES[pool_name].draw(rng, len(rows))
    los = e.end - e.start
    inpatient = np.isin(e.kind, list(_INPATIENT_TYPES))
    split = np.isin(e.kind, list(_STAY_TYPES)) & (los > 14)

    for kind, names in _EPISODE_TEMPLATES.items():
        rows = np.flatnonzero(e.kind == kind)
        if not len(rows):
            continue
        facility_template = _EPISODE_CLAIMS[names[0]]
        attending = (
            _pick(car, m, e.member[rows], _PK[facility_template.other], rng)
            if facility_template.other
            else np.full(len(rows), -1, dtype=np.int64)
        )
        for name in names:
            t = _EPISODE_TEMPLATE[name]
            tmpl = _EPISODE_CLAIMS[name]
            mem = e.member[rows]
            k = len(rows)
            none = np.full(k, -1, dtype=np.int64)
            if tmpl.claim_type == _I:
                is_inp = inpatient[rows]
                base = dict(
                    member=mem,
                    template=np.full(k, t),
                    start=e.start[rows],
                    end=e.end[rows],
                    admit=np.where(is_inp, e.start[rows], -1),
                    discharge=np.where(is_inp, e.end[rows], -1),
                    status=e.status[rows],
                    drg=e.drg[rows],
                    bill=none,
                    billing=e.facility[rows],
                    other=np.where(rng.random(k) < 0.6, attending, -1),
                    pool=pool[rows],
                    dx1=dx1[rows],
                    driver=none,
                    movable=np.zeros(k, dtype=np.bool_),
                )
                sp = split[rows]
                if sp.any():
                    # A long stay billed as two interim claims with adjacent or overlapping
                    # dates at the same facility.
                    middle = e.start[rows] + los[rows] // 2
                    whole = {key: val[~sp] for key, val in base.items()}
                    first = {key: val[sp] for key, val in base.items()}
                    second = {key: val[sp] for key, val in base.items()}
                    first.update(
                        end=middle[sp],
                        discharge=np.full(int(sp.sum()), -1),
                        status=np.full(int(sp.sum()), _DS["30"]),
                        bill=np.full(int(sp.sum()), _BILL["112"]),
                    )
                    overlap = rng.random(int(sp.sum())) < 0.4
                    second.update(
                        start=middle[sp] + np.where(overlap, 0, 1),
                        bill=np.full(int(sp.sum()), _BILL["114"]),
                    )
                    for part in (whole, first, second):
                        parts.append(_Claims(**part))
                else:
                    parts.append(_Claims(**base))
            else:
                same = tmpl.provider == facility_template.other
                billing = attending if same else _pick(car, m, mem, _PK[tmpl.provider], rng)
                if tmpl.daily:
                    start, end = e.start[rows], e.end[rows]
                elif name == "snf_visit":
                    start = np.minimum(e.start[rows] + 1, e.end[rows])
                    end = start
                else:
                    start, end = e.start[rows], e.start[rows]
                parts.append(
                    _Claims(
                        member=mem,
                        template=np.full(k, t),
                        start=start,
                        end=end,
                        admit=none,
                        discharge=none,
                        status=none,
                        drg=e.drg[rows] if name == "surgeon_inpatient" else none,
                        bill=none,
                        billing=billing,
                        other=e.facility[rows],
                        pool=pool[rows],
                        dx1=dx1[rows],
                        driver=none,
                        movable=np.zeros(k, dtype=np.bool_),
                    )
                )
    return _concat_claims(parts)
