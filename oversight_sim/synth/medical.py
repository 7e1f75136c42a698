"""The medical_claims table: each claim's lines (with a visit a day on hospital stays),
diagnoses, allowed amounts scaled to the members' budgets, charges, denials, deductible,
coinsurance and copay, paid dates, and the reversed and adjusted versions of some claims."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fedoversight.schema import MEDICAL_CLAIMS
from oversight_sim.synth.arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    Rng,
    _cumsum_by_group,
    _expand,
    _first_in_group,
    _group_sum,
    _lognormal,
    _month_of,
    _month_start,
    _uniform_days,
)
from oversight_sim.synth.carriers import _Carrier, _Plan
from oversight_sim.synth.claims import _Claims
from oversight_sim.synth.codes import (
    _DX_POOL_CHOICES,
    _HCPCS,
    _INSTITUTIONAL,
    _SHARE_CODE,
    _SPEC_HCPCS,
    _SPEC_P,
    _SPEC_REV,
    _SPEC_SEQ,
    _SPEC_SHARE,
    _SPEC_WEIGHT,
    _TEMPLATE_BILL,
    _TEMPLATE_DAILY,
    _TEMPLATE_POS,
    _TEMPLATE_SPEC_COUNT,
    _TEMPLATE_SPEC_START,
    _VOCAB,
    _Choices,
)
from oversight_sim.synth.columns import (
    _codes,
    _dates,
    _encoded,
    _ids,
    _money,
    _table,
    _used,
    _used_indices,
)
from oversight_sim.synth.members import _member_ids, _Members, _outside_enrollment
from oversight_sim.synth.reference import (
    _CONDITIONS,
    _DENIAL_REASONS,
    _DISCHARGE,
    _DRG_CPT,
    _LAG,
    _STATUSES,
)
from oversight_sim.synth.templates import (
    _EPISODE_TEMPLATE,
    _KIND,
    _KIND_TEMPLATES,
    _TEMPLATES,
    _expected_lines,
)

_DAILY_INITIAL = _Choices.of("99221 99222:2 99223:2", _HCPCS)
_DAILY_NEXT = _Choices.of("99231 99232:2 99233", _HCPCS)
_DAILY_LAST = _Choices.of("99238:2 99239", _HCPCS)
_DRG_SURGEON_CPT = np.array(
    [_HCPCS[_DRG_CPT[d]] if d in _DRG_CPT else _HCPCS["27447"] for d in _VOCAB.drg], dtype=np.int64
)
_SURGEON_TEMPLATE = _EPISODE_TEMPLATE["surgeon_inpatient"]
_ED_FACILITY_TEMPLATE = _KIND_TEMPLATES[_KIND["emergency"]][0]
_MAX_DAILY_LINES = 8


@dataclass(frozen=True)
class _Lines:
    claim: IntArray
    seq: IntArray  # order within the claim
    hcpcs: IntArray
    revenue: IntArray
    weight: FloatArray
    share: IntArray
    offset: IntArray  # service day minus the claim's start (hospital visits)


def _lines(claims: _Claims, window_end: int, rng: Rng) -> _Lines:
    template = claims.template
    claim, j = _expand(_TEMPLATE_SPEC_COUNT[template])
    spec = _TEMPLATE_SPEC_START[template[claim]] + j
    keep = rng.random(len(spec)) < _SPEC_P[spec]
    claim, spec = claim[keep], spec[keep]
    hcpcs = _SPEC_HCPCS.draw(spec, rng)
    surgeon = np.flatnonzero(spec == _TEMPLATE_SPEC_START[_SURGEON_TEMPLATE])
    hcpcs[surgeon] = _DRG_SURGEON_CPT[claims.drg[claim[surgeon]]]

    # A hospital stay's professional claim has a visit on each day (up to a limit), none
    # after the data's window.
    daily = np.flatnonzero(_TEMPLATE_DAILY[template])
    span = claims.end[daily] - claims.start[daily]
    count = np.minimum(span + 1, _MAX_DAILY_LINES)
    owner, d = _expand(count)
    last = (d == count[owner] - 1) & (d > 0)
    in_window = claims.start[daily[owner]] + np.where(last, span[owner], d) <= window_end
    owner, d, last = owner[in_window], d[in_window], last[in_window]
    n_daily = len(owner)
    daily_hcpcs = np.where(
        d == 0,
        _DAILY_INITIAL.draw(rng, n_daily),
        np.where(last, _DAILY_LAST.draw(rng, n_daily), _DAILY_NEXT.draw(rng, n_daily)),
    )
    return _Lines(
        claim=np.concatenate([claim, daily[owner]]),
        seq=np.concatenate([_SPEC_SEQ[spec], d]),
        hcpcs=np.concatenate([hcpcs, daily_hcpcs]),
        revenue=np.concatenate([_SPEC_REV.draw(spec, rng), np.full(n_daily, -1)]),
        weight=np.concatenate(
            [_SPEC_WEIGHT[spec], np.where(d == 0, 1.4, np.where(last, 1.0, 0.8))]
        ),
        share=np.concatenate([_SPEC_SHARE[spec], np.full(n_daily, _SHARE_CODE["coins"])]),
        offset=np.concatenate(
            [np.zeros(len(spec), dtype=np.int64), np.where(last, span[owner], d)]
        ),
    )


def _expected_claim_lines(claims: _Claims) -> float:
    per_template = np.array([_expected_lines(t) for t in _TEMPLATES])
    daily = np.array([t.daily for t in _TEMPLATES])[claims.template]
    span = np.minimum(claims.end - claims.start + 1, _MAX_DAILY_LINES)
    return float(np.where(daily, span, per_template[claims.template]).sum())


def _dx_matrix(claims: _Claims, m: _Members, rng: Rng) -> IntArray:
    """dx1..dx10 (rows) of each claim (columns): the principal, the member's conditions,
    then other secondary diagnoses (more on institutional claims), distinct within a claim."""
    n = len(claims.member)
    dx = np.full((10, n), -1, dtype=np.int64)
    dx[0] = claims.dx1
    filled = np.zeros(n, dtype=np.int64)
    for c in range(len(_CONDITIONS)):
        codes = m.condition[:, c][claims.member]
        rows = np.flatnonzero(codes >= 0)
        rows = rows[
            (rng.random(len(rows)) < 0.45)
            & (codes[rows] != claims.dx1[rows])
            & (claims.driver[rows] != c)
            & (filled[rows] < 8)
        ]
        filled[rows] += 1
        dx[filled[rows], rows] = codes[rows]
    pool = _DX_POOL_CHOICES["secondary"].index
    extra = rng.binomial(9, np.where(_INSTITUTIONAL[claims.template], 0.3, 0.06))
    extra = np.minimum(extra, 9 - filled)
    first = rng.integers(0, len(pool), n)
    for j in range(int(extra.max()) if n else 0):
        rows = np.flatnonzero(extra > j)
        dx[filled[rows] + 1 + j, rows] = pool[(first[rows] + j) % len(pool)]
    return dx


def _paid_dates(start: IntArray, end: IntArray, rng: Rng) -> IntArray:
    lag = rng.choice(len(_LAG), size=len(start), p=_LAG)
    month = _month_of(start) + lag
    month_first = _month_start(month)
    month_last = _month_start(month + 1) - 1
    low = np.where(lag == 0, start, month_first)
    return np.maximum(_uniform_days(rng, low, month_last), end)


@dataclass(frozen=True)
class _PlanTerms:
    deductible: IntArray
    coinsurance: FloatArray
    copay: IntArray
    er_copay: IntArray
    oop_max: IntArray
    hdhp: BoolArray

    @classmethod
    def of(cls, plans: Sequence[_Plan], plan: IntArray) -> _PlanTerms:
        return cls(
            deductible=np.array([p.deductible for p in plans], dtype=np.int64)[plan],
            coinsurance=np.array([p.coinsurance for p in plans])[plan],
            copay=np.array([p.copay for p in plans], dtype=np.int64)[plan],
            er_copay=np.array([p.er_copay for p in plans], dtype=np.int64)[plan],
            oop_max=np.array([p.oop_max for p in plans], dtype=np.int64)[plan],
            hdhp=np.array([p.hdhp for p in plans])[plan],
        )


def _cost_shares(
    car: _Carrier,
    m: _Members,
    member: IntArray,
    day: IntArray,
    order_key: IntArray,
    allowed: IntArray,
    share: IntArray,
    emergency: BoolArray,
    in_network: BoolArray,
    paid: BoolArray,
) -> tuple[IntArray, IntArray, IntArray]:
    """Deductible, coinsurance and copay of each line (cents), in date order per member."""
    plan = np.where(
        (m.switch[member] >= 0) & (day >= m.switch[member]), m.plan2[member], m.plan[member]
    )
    terms = _PlanTerms.of(car.plans, plan)
    liable = paid & ~m.medicare[member]
    copay_line = liable & (share == _SHARE_CODE["copay"]) & ~terms.hdhp
    coins_line = liable & (
        (share == _SHARE_CODE["coins"]) | ((share == _SHARE_CODE["copay"]) & terms.hdhp)
    )
    span = int(order_key.max()) + 1 if len(order_key) else 1
    order = np.argsort(
        (member * 1024 + (day - car.window_start + 64)) * span + order_key, kind="stable"
    )
    mem_s = member[order]
    base = np.where(coins_line, allowed, 0)[order]
    before = _cumsum_by_group(mem_s, base) - base
    deductible = np.zeros(len(member), dtype=np.int64)
    deductible[order] = np.clip(terms.deductible[order] - before, 0, base)
    rate = terms.coinsurance + np.where(in_network, 0.0, 0.2)
    coinsurance = np.where(coins_line, np.round((allowed - deductible) * rate), 0).astype(np.int64)
    copay = np.where(
        copay_line, np.minimum(np.where(emergency, terms.er_copay, terms.copay), allowed), 0
    )
    # The out-of-pocket maximum caps coinsurance.
    spent = (deductible + coinsurance + copay)[order]
    before = _cumsum_by_group(mem_s, spent) - spent
    room = np.maximum(terms.oop_max[order] - before, 0)
    excess = np.maximum(spent - room, 0)
    cut = np.zeros(len(member), dtype=np.int64)
    cut[order] = np.minimum(excess, coinsurance[order])
    coinsurance = coinsurance - cut
    return deductible, coinsurance, copay.astype(np.int64)


def _medical_table(
    car: _Carrier, m: _Members, claims: _Claims, budgets: FloatArray, claim_offset: int, rng: Rng
) -> tuple[pa.Table, int, IntArray]:
    """The medical_claims rows of a block, the number of claims, and the providers used."""
    # Some encounters are dated in a month the member is not enrolled.
    start = _outside_enrollment(car, m, claims.member, claims.start, claims.movable, 0.005, rng)
    shift = start - claims.start
    claims = _Claims(
        **{
            **{f: getattr(claims, f) for f in _Claims.__dataclass_fields__},
            "start": start,
            "end": claims.end + shift,
        }
    )
    # Claim numbers follow the service date: put the claims in that order.
    key = ((claims.start - car.window_start + 64) * (m.n + 1) + claims.member) * 256
    by_date = np.argsort(key + claims.template, kind="stable")
    claims = _Claims(*(getattr(claims, f)[by_date] for f in _Claims.__dataclass_fields__))
    rank = np.arange(len(by_date), dtype=np.int64)
    lines = _lines(claims, car.window_end, rng)
    c = lines.claim
    n_lines = len(c)

    # Allowed amounts: relative prices scaled to each budget.
    raw = lines.weight * _lognormal(rng, 0.35, n_lines)
    pool = claims.pool[c]
    pool_raw = _group_sum(pool, raw, len(budgets))
    factor = np.divide(budgets * 100, pool_raw, out=np.zeros(len(budgets)), where=pool_raw > 0)
    allowed = np.round(raw * factor[pool]).astype(np.int64)

    institutional = _INSTITUTIONAL[claims.template]
    n_claims = len(claims.member)
    markup = np.where(
        institutional, rng.uniform(1.8, 3.2, n_claims), rng.uniform(1.3, 2.2, n_claims)
    )
    in_network = car.in_network[claims.billing]
    markup = markup + np.where(in_network, 0.0, 0.3)
    charge = np.round(allowed * markup[c]).astype(np.int64)

    # Denials: some single lines, and some whole (small) claims.
    small = _group_sum(c, allowed, n_claims) < 300_000
    denied_claim = small & (rng.random(n_claims) < 0.02)
    denied = denied_claim[c] | (small[c] & (rng.random(n_lines) < 0.035))
    allowed = np.where(denied, 0, allowed)
    network_null = rng.random(n_claims) < 0.01

    line_start = claims.start[c] + lines.offset
    daily = _TEMPLATE_DAILY[claims.template][c]
    line_end = np.where(daily, line_start, claims.end[c])
    deductible, coinsurance, copay = _cost_shares(
        car,
        m,
        claims.member[c],
        line_start,
        rank[c] * 64 + lines.seq,
        allowed,
        lines.share,
        claims.template[c] == _ED_FACILITY_TEMPLATE,
        in_network[c],
        ~denied,
    )
    paid = allowed - deductible - coinsurance - copay
    paid_date = _paid_dates(claims.start, claims.end, rng)[c]

    # Reversed and adjusted claims get more versions.
    has_denial = _group_sum(c, denied, n_claims) > 0
    r = rng.random(n_claims)
    reversed_claim = ~has_denial & (r < 0.02)
    adjusted_claim = ~has_denial & (r >= 0.02) & (r < 0.035)
    factor_adj = rng.uniform(0.85, 1.15, n_claims)
    later = rng.integers(15, 90, n_claims)
    rev_rows = np.flatnonzero(reversed_claim[c] | adjusted_claim[c])
    adj_rows = np.flatnonzero(adjusted_claim[c])
    new_allowed = np.round(allowed[adj_rows] * factor_adj[c[adj_rows]]).astype(np.int64)
    new_ded = np.minimum(deductible[adj_rows], new_allowed)
    new_copay = np.minimum(copay[adj_rows], new_allowed - new_ded)
    new_coins = np.minimum(
        np.round(coinsurance[adj_rows] * factor_adj[c[adj_rows]]), new_allowed - new_ded - new_copay
    ).astype(np.int64)

    row = np.concatenate([np.arange(n_lines), rev_rows, adj_rows])
    version = np.concatenate(
        [np.ones(n_lines, np.int64), np.full(len(rev_rows), 2), np.full(len(adj_rows), 3)]
    )
    sign = np.where(version == 2, -1, 1)
    status = np.concatenate(
        [np.where(denied, 1, 0), np.full(len(rev_rows), 2), np.full(len(adj_rows), 3)]
    )

    def versions(v1: IntArray, v3: IntArray) -> IntArray:
        return np.concatenate([v1, -v1[rev_rows], v3])

    allowed_all = versions(allowed, new_allowed)
    ded_all = versions(deductible, new_ded)
    coins_all = versions(coinsurance, new_coins)
    copay_all = versions(copay, new_copay)
    paid_all = allowed_all - ded_all - coins_all - copay_all
    charge_all = charge[row] * sign
    paid_date_all = paid_date[row] + np.where(version > 1, later[c[row]], 0)
    denied_all = status == 1
    del paid

    # Row order: claim, version, line.
    line_cc = c[row]
    order = np.argsort((rank[line_cc] * 4 + version) * 64 + lines.seq[row], kind="stable")
    row, version, status = row[order], version[order], status[order]
    line_cc = line_cc[order]
    allowed_all, ded_all, coins_all, copay_all, paid_all, charge_all = (
        x[order] for x in (allowed_all, ded_all, coins_all, copay_all, paid_all, charge_all)
    )
    paid_date_all, denied_all = paid_date_all[order], denied_all[order]
    claim_key = rank[line_cc] * 4 + version
    first = _first_in_group(claim_key)
    run_start = np.flatnonzero(first)
    line_no = np.arange(len(row)) - run_start[np.cumsum(first) - 1] + 1

    dx = _dx_matrix(claims, m, rng)
    ct = claims.template[line_cc]
    inst = _INSTITUTIONAL[ct]
    bill = np.where(claims.bill >= 0, claims.bill, _TEMPLATE_BILL.draw(claims.template, rng))
    pos = _TEMPLATE_POS.draw(claims.template, rng)
    billing, other = claims.billing[line_cc], claims.other[line_cc]
    facility = np.where(inst, billing, other)
    rendering = np.where(inst, other, billing)
    npi = car.universe.npi
    providers = _used_indices(np.concatenate([claims.billing, claims.other]), len(car.in_network))

    def provider_ids(index: IntArray) -> pa.Array:
        return _used(npi, index)

    member_ids = _encoded(_member_ids(car, m.number), claims.member[line_cc])
    claim_ids = _ids(f"{car.carrier_id}C", claim_offset + rank + 1, 10).take(pa.array(line_cc))
    net_null = network_null[line_cc]
    columns: dict[str, pa.Array] = {
        "claim_id": claim_ids,
        "claim_line": pa.array(line_no, type=pa.int64()),
        "claim_status": _codes(_STATUSES, status),
        "member_id": member_ids,
        "claim_type": _codes(("institutional", "professional"), (~inst).astype(np.int64)),
        "claim_start_date": _dates(line_start[row]),
        "claim_end_date": _dates(line_end[row]),
        "admission_date": _dates(claims.admit[line_cc], claims.admit[line_cc] < 0),
        "discharge_date": _dates(claims.discharge[line_cc], claims.discharge[line_cc] < 0),
        "discharge_status": _codes(_DISCHARGE, claims.status[line_cc]),
        "place_of_service": _codes(_VOCAB.pos, np.where(inst, -1, pos[line_cc])),
        "bill_type": _codes(_VOCAB.bill_type, np.where(inst, bill[line_cc], -1)),
        "revenue_code": _codes(_VOCAB.revenue, np.where(inst, lines.revenue[row], -1)),
        "hcpcs": _codes(_VOCAB.hcpcs, lines.hcpcs[row]),
        "drg": _codes(_VOCAB.drg, np.where(inst, claims.drg[line_cc], -1)),
        **{f"dx{i + 1}": _codes(_VOCAB.dx, dx[i][line_cc]) for i in range(10)},
        "facility_npi": provider_ids(facility),
        "rendering_npi": provider_ids(rendering),
        "in_network": pa.array(in_network[line_cc], mask=net_null if net_null.any() else None),
        "charge_amount": _money(charge_all),
        "allowed_amount": _money(allowed_all),
        "paid_amount": _money(paid_all),
        "paid_date": _dates(paid_date_all, denied_all),
        "deductible_amount": _money(ded_all, denied_all),
        "coinsurance_amount": _money(coins_all, denied_all),
        "copay_amount": _money(copay_all, denied_all),
        "denial_reason": _codes(
            _DENIAL_REASONS,
            np.where(denied_all, rng.integers(0, len(_DENIAL_REASONS), len(row)), -1),
        ),
        "claim_version": pa.array(version, type=pa.int64()),
    }
    return _table(MEDICAL_CLAIMS, columns), n_claims, providers
