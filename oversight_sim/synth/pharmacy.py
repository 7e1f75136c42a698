"""Pharmacy: chronic refill series, acute fills and monthly specialty fills, and the
pharmacy_claims table (denied and reversed fills, member cost share, allowed by quarter and
drug class for the rebates)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fedoversight.schema import PHARMACY_CLAIMS
from oversight_sim.synth.arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    Rng,
    _expand,
    _lognormal,
    _month_of,
    _uniform_days,
)
from oversight_sim.synth.carriers import _Carrier
from oversight_sim.synth.columns import _codes, _dates, _encoded, _ids, _money, _table
from oversight_sim.synth.members import _member_ids, _Members, _outside_enrollment
from oversight_sim.synth.reference import _C, _CHANNELS, _DRUG, _DRUG_CLASSES, _STATUSES
from oversight_sim.synth.universe import _Universe

#: Fills per member per year the generator aims at.
_FILLS_PER_YEAR = 16.0


@dataclass(frozen=True)
class _Fills:
    member: IntArray
    day: IntArray
    ndc: IntArray
    days_supply: IntArray
    channel: IntArray
    quantity: FloatArray
    allowed: IntArray  # cents


def _pick_ndc(
    u: _Universe, drug_class: IntArray, generic: BoolArray, specialty: BoolArray, rng: Rng
) -> IntArray:
    key = drug_class * 4 + (~generic).astype(np.int64) * 2 + specialty.astype(np.int64)
    count = u.ndc_count[key]
    if (count == 0).any():
        raise AssertionError("a drug pool is empty")
    # Skewed towards the first (most used) products of a pool.
    offset = np.floor(count * rng.random(len(key)) ** 1.6)
    return np.asarray(u.ndc_start[key] + offset, dtype=np.int64)


def _prescriptions(
    m: _Members,
    member: IntArray,
    ongoing: float,
    rng: Rng,
    days_supply: IntArray | None = None,
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Refill series: (member, fill day, days supply, prescription) of each fill of each
    prescription (numbered from 0 in the order given)."""
    k = len(member)
    if days_supply is None:
        days_supply = np.where(rng.random(k) < 0.28, 90, 30)
    first, last = m.first[member], m.last[member]
    ongoing_start = first + np.floor(rng.random(k) * days_supply).astype(np.int64)
    new_start = _uniform_days(rng, first, last)
    start = np.where(rng.random(k) < ongoing, ongoing_start, new_start)
    interval = np.round(days_supply * rng.uniform(1.0, 1.25, k)).astype(np.int64)
    fills = np.where(start <= last, (last - start) // interval + 1, 0)
    stops = rng.random(k) < 0.15
    fills = np.where(stops, np.minimum(fills, 1 + rng.geometric(0.3, k)), fills)
    owner, within = _expand(fills.astype(np.int64))
    day = start[owner] + within * interval[owner]
    return member[owner], day, days_supply[owner], owner


def _expected_fills(m: _Members, rows: IntArray) -> FloatArray:
    days = (m.last[rows] - m.first[rows] + 1).astype(np.float64)
    # Refill series start late or stop early now and then (see _prescriptions).
    return 0.8 * (0.72 * (days / (30 * 1.125) + 0.5) + 0.28 * (days / (90 * 1.125) + 0.5))


def _pharmacy(car: _Carrier, m: _Members, rng: Rng) -> _Fills:
    u = car.universe
    users = m.latent > 0
    age = np.maximum(m.age, 0)
    has = m.condition >= 0
    parts: list[tuple[IntArray, IntArray, IntArray, IntArray]] = []
    script_class: list[IntArray] = []
    script_specialty: list[BoolArray] = []

    def add(
        fills: tuple[IntArray, IntArray, IntArray, IntArray],
        n_scripts: int,
        drug_class: IntArray | int,
        specialty: bool = False,
    ) -> None:
        member, day, supply, script = fills
        offset = sum(len(c) for c in script_class)
        parts.append((member, day, supply, script + offset))
        script_class.append(
            np.broadcast_to(np.asarray(drug_class, dtype=np.int64), (n_scripts,)).copy()
        )
        script_specialty.append(np.full(n_scripts, specialty))

    def chronic(mask: BoolArray, drug_class: str, extra: float = 0.0) -> None:
        rows = np.flatnonzero(mask & users)
        rows = np.concatenate([rows, rows[rng.random(len(rows)) < extra]])
        add(_prescriptions(m, rows, 0.85, rng), len(rows), _DRUG[drug_class])

    diabetic = has[:, _C["diabetes"]]
    chronic(diabetic, "antidiabetic", extra=0.45)
    statin_p = np.where(diabetic, np.where((age >= 40) & (age <= 75), 0.8, 0.4), 0.0)
    statin_p = np.where(has[:, _C["hyperlipidemia"]] & ~diabetic, 0.7, statin_p)
    chronic(rng.random(m.n) < statin_p, "statin")
    chronic(has[:, _C["hypertension"]], "antihypertensive", extra=0.35)
    chronic(has[:, _C["mental"]] & (rng.random(m.n) < 0.7), "antidepressant")
    chronic((age >= 18) & (rng.random(m.n) < 0.02), "opioid analgesic")

    # Monthly specialty fills: biologics, or other specialty drugs (HIV, oral oncology).
    spec = np.flatnonzero(m.specialty)
    biologic = rng.random(len(spec)) < np.where(m.condition[spec, _C["hiv"]] >= 0, 0.0, 0.8)
    add(
        _prescriptions(m, spec, 1.0, rng, np.full(len(spec), 30)),
        len(spec),
        np.where(biologic, _DRUG["specialty biologic"], _DRUG["other"]),
        True,
    )

    # Acute fills, one fill each.
    exposure = m.member_months / 12.0
    acute_rate = np.array([1.6, 1.4, 1.7, 2.2])[np.digitize(age, [18, 45, 65])]
    n_acute = np.where(users, rng.poisson(acute_rate * exposure), 0)
    a_member, _w = _expand(n_acute.astype(np.int64))
    k = len(a_member)
    add(
        (
            a_member,
            _uniform_days(rng, m.first[a_member], m.last[a_member]),
            np.where(rng.random(k) < 0.05, 90, 30),
            np.arange(k, dtype=np.int64),
        ),
        k,
        rng.choice(
            np.array([_DRUG["antibiotic"], _DRUG["opioid analgesic"], _DRUG["other"]]),
            size=k,
            p=[0.6, 0.1, 0.3],
        ),
    )

    # Other chronic prescriptions, as many as needed to reach the fills target on average.
    so_far = sum(len(p[0]) for p in parts)
    target = _FILLS_PER_YEAR * float(exposure.sum())
    rate = np.where(users, np.array([0.2, 0.5, 1.0, 1.5])[np.digitize(age, [18, 45, 65])], 0.0)
    expected = float((rate * _expected_fills(m, np.arange(m.n))).sum())
    scale = max(target - so_far, 0.0) / expected if expected > 0 else 0.0
    o_rows, _w = _expand(rng.poisson(rate * scale).astype(np.int64))
    add(_prescriptions(m, o_rows, 0.85, rng), len(o_rows), _DRUG["other"])

    member, day, supply, script = (np.concatenate([p[i] for p in parts]) for i in range(4))
    keep = day <= m.last[member]
    member, day, supply, script = member[keep], day[keep], supply[keep], script[keep]

    # Each prescription is one product, dose and channel.
    drug_class = np.concatenate(script_class)
    specialty = np.concatenate(script_specialty)
    n_scripts = len(drug_class)
    generic_share = np.array([c[1] for c in _DRUG_CLASSES])[drug_class]
    generic = ~specialty & (rng.random(n_scripts) < generic_share)
    ndc = _pick_ndc(u, drug_class, generic, specialty, rng)
    mail = rng.random(n_scripts)
    doses = np.where(specialty, 1.0, rng.choice(np.array([1.0, 1.0, 2.0]), size=n_scripts))
    k = len(member)
    ndc_fill = ndc[script]
    spec_fill = specialty[script]
    channel = np.where(spec_fill, 2, (mail[script] < np.where(supply == 90, 0.75, 0.02)))
    allowed = u.ndc_cost30[ndc_fill] * supply / 30.0 * np.where(supply == 90, 0.92, 1.0)
    allowed = allowed * _lognormal(rng, 0.12, k)
    # Specialty fills share a budget taken from the member's latent cost.
    rows = np.flatnonzero(spec_fill)
    if len(rows):
        owner = member[rows]
        n_fills = np.bincount(owner, minlength=m.n)
        budget = m.latent * m.member_months / 12.0 * rng.uniform(0.3, 0.6, m.n) * 100
        per_fill = budget[owner] / np.maximum(n_fills[owner], 1)
        allowed[rows] = per_fill * _lognormal(rng, 0.05, len(rows))
    return _Fills(
        member=member,
        day=day,
        ndc=ndc_fill,
        days_supply=supply,
        channel=channel.astype(np.int64),
        quantity=np.round(supply * u.ndc_units[ndc_fill] * doses[script], 3),
        allowed=np.round(allowed).astype(np.int64),
    )


def _pharmacy_table(
    car: _Carrier, m: _Members, fills: _Fills, fill_offset: int, rng: Rng
) -> tuple[pa.Table, int, IntArray]:
    """The pharmacy_claims rows, the number of fills, and allowed cents by quarter x class."""
    u = car.universe
    day = _outside_enrollment(
        car, m, fills.member, fills.day, np.ones(len(fills.day), dtype=np.bool_), 0.005, rng
    )
    k = len(day)
    rank = np.empty(k, dtype=np.int64)
    rank[np.lexsort((fills.ndc, fills.member, day))] = np.arange(k)
    generic = u.ndc_generic[fills.ndc]
    specialty = u.ndc_specialty[fills.ndc]
    ninety = fills.days_supply == 90
    copay = np.where(generic, np.where(ninety, 2_000, 1_000), np.where(ninety, 9_000, 4_500))
    member_paid = np.where(specialty, np.minimum(np.round(fills.allowed * 0.25), 35_000), copay)
    member_paid = np.minimum(member_paid, fills.allowed).astype(np.int64)
    r = rng.random(k)
    denied = r < 0.025
    reversed_fill = (r >= 0.025) & (r < 0.045)
    allowed = np.where(denied, 0, fills.allowed)
    member_paid = np.where(denied, 0, member_paid)
    paid = allowed - member_paid
    paid_day = day + rng.choice(4, size=k, p=[0.7, 0.15, 0.1, 0.05])

    rev = np.flatnonzero(reversed_fill)
    row = np.concatenate([np.arange(k), rev])
    is_rev = np.concatenate([np.zeros(k, dtype=np.bool_), np.ones(len(rev), dtype=np.bool_)])
    sign = np.where(is_rev, -1, 1)
    order = np.lexsort((is_rev, rank[row]))
    row, is_rev, sign = row[order], is_rev[order], sign[order]
    status = np.where(is_rev, 2, np.where(denied[row], 1, 0))
    later = np.where(is_rev, rng.integers(3, 40, len(row)), 0)
    drug_class = u.ndc_class[fills.ndc[row]]
    class_null = rng.random(len(row)) < 0.003
    columns: dict[str, pa.Array] = {
        "claim_id": _ids(f"{car.carrier_id}R", fill_offset + rank[row] + 1, 10),
        "claim_status": _codes(_STATUSES, status),
        "member_id": _encoded(_member_ids(car, m.number), fills.member[row]),
        "fill_date": _dates(day[row]),
        "paid_date": _dates(paid_day[row] + later, denied[row]),
        "ndc": _encoded(u.ndc, fills.ndc[row]),
        "drug_class": _codes([c[0] for c in _DRUG_CLASSES], np.where(class_null, -1, drug_class)),
        "quantity": pa.array(fills.quantity[row], type=pa.float64()),
        "days_supply": pa.array(fills.days_supply[row], type=pa.int64()),
        "generic": pa.array(generic[row]),
        "specialty": pa.array(specialty[row]),
        "channel": _codes(_CHANNELS, fills.channel[row]),
        "allowed_amount": _money(allowed[row] * sign),
        "paid_amount": _money(paid[row] * sign),
        "member_paid_amount": _money(member_paid[row] * sign),
    }
    quarter = (_month_of(day[row]) - _month_of(np.array([car.window_start]))[0]) // 3
    known = ~class_null
    by_quarter_class = np.zeros((4, len(_DRUG_CLASSES)), dtype=np.int64)
    np.add.at(by_quarter_class, (quarter[known], drug_class[known]), (allowed[row] * sign)[known])
    return _table(PHARMACY_CLAIMS, columns), k, by_quarter_class
