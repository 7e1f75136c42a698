"""Calibration: the published figures the generator is tuned to (cost per member per month,
cost concentration, utilisation, pharmacy mix, claim lag, December surgery) measured on
generated tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedoversight.codelists import drg_types
from oversight_sim.synth.arrays import BoolArray, FloatArray, IntArray, _month_of, _month_start


def _arrow(frames: Sequence[pd.DataFrame], column: str) -> pa.ChunkedArray:
    chunks = [pa.array(f[column]) for f in frames]
    return pa.chunked_array(
        [
            c
            for chunk in chunks
            for c in (chunk.chunks if isinstance(chunk, pa.ChunkedArray) else [chunk])
        ],
        type=chunks[0].type,
    )


def _days(values: pa.ChunkedArray) -> IntArray:
    return np.asarray(values.cast(pa.int32()).fill_null(-1).to_numpy(), dtype=np.int64)


def _dollars(values: pa.ChunkedArray) -> FloatArray:
    return np.asarray(values.cast(pa.float64()).fill_null(0.0).to_numpy(), dtype=np.float64)


def _flags(values: pa.ChunkedArray) -> BoolArray:
    return np.asarray(values.fill_null(False).to_numpy(), dtype=np.bool_)


def _equal(values: pa.ChunkedArray, text: str) -> BoolArray:
    return _flags(pc.equal(values, text))


def calibration_report(
    tables_by_carrier: Mapping[str, Mapping[str, pd.DataFrame]],
) -> dict[str, float]:
    """The calibration figures measured on generated tables (all carriers pooled).

    The window is the months from January of the first claim's year to the last claim's
    month (at most twelve). Dollar figures use allowed amounts over all claim versions;
    per-member figures cover every member enrolled in the window; claim lines and fills count
    original versions (denied included) per member-year (member months / 12); the claim lag is
    the share of medical paid amount (version 1) paid within 0, 1, 2, 3 and 12 months of the
    service month; the December surgery ratio compares surgical claims (ambulatory surgery
    centre, outpatient surgery, surgical DRG) per member month in December with the other
    months' average.
    """
    carriers = list(tables_by_carrier.values())
    med_frames = [t["medical_claims"] for t in carriers]
    rx_frames = [t["pharmacy_claims"] for t in carriers]
    elig_frames = [t["eligibility"] for t in carriers]

    def med(column: str) -> pa.ChunkedArray:
        return _arrow(med_frames, column)

    def rx(column: str) -> pa.ChunkedArray:
        return _arrow(rx_frames, column)

    claim_month = _month_of(_days(med("claim_start_date")))
    first_month = (int(claim_month.min()) // 12) * 12
    # Lines of a hospital stay may run past December: the window stays within one year.
    last_month = min(int(claim_month.max()), first_month + 11)
    window_start = int(_month_start(np.array([first_month]))[0])
    window_end = int(_month_start(np.array([last_month + 1]))[0]) - 1

    start = np.maximum(_days(_arrow(elig_frames, "enrollment_start_date")), window_start)
    end = _days(_arrow(elig_frames, "enrollment_end_date"))
    end = np.where(end < 0, window_end, np.minimum(end, window_end))
    inside = end >= start
    spans = pa.table(
        {
            "member": _arrow(elig_frames, "member_id").filter(pa.array(inside)),
            "first": start[inside],
            "last": end[inside],
        }
    )
    enrolled = spans.group_by("member").aggregate([("first", "min"), ("last", "max")])
    member_first = _month_of(enrolled["first_min"].to_numpy()) - first_month
    member_last = _month_of(enrolled["last_max"].to_numpy()) - first_month
    n_months = last_month - first_month + 1
    per_month = np.zeros(n_months + 1)
    np.add.at(per_month, member_first, 1)
    np.add.at(per_month, member_last + 1, -1)
    per_month = np.cumsum(per_month)[:n_months]
    total_mm = float(per_month.sum())
    years = total_mm / 12

    med_allowed, rx_allowed = _dollars(med("allowed_amount")), _dollars(rx("allowed_amount"))
    spend = (
        pa.table(
            {
                "member": pa.chunked_array(med("member_id").chunks + rx("member_id").chunks),
                "allowed": np.concatenate([med_allowed, rx_allowed]),
            }
        )
        .group_by("member")
        .aggregate([("allowed", "sum")])
    )
    spent = spend.join(enrolled.select(["member"]), "member", join_type="right outer")
    per_member = np.asarray(spent["allowed_sum"].fill_null(0.0).to_numpy(), dtype=np.float64)
    ordered = np.sort(per_member)[::-1]
    total = float(ordered.sum())
    n = len(ordered)

    version = np.asarray(med("claim_version").fill_null(1).to_numpy(), dtype=np.int64)
    original = version == 1
    status = med("claim_status")
    paid_status, denied = _equal(status, "paid"), _equal(status, "denied")
    paid = _dollars(med("paid_amount"))
    lag = _month_of(_days(med("paid_date"))) - claim_month
    lag_base = original & paid_status & (paid > 0)
    paid_base = float(paid[lag_base].sum())

    rx_original = ~_equal(rx("claim_status"), "reversed")
    specialty = _flags(rx("specialty"))
    generic = _flags(rx("generic"))
    rx_paid = _dollars(rx("paid_amount"))
    all_allowed = float(med_allowed.sum()) + float(rx_allowed.sum())
    report = {
        "members": float(n),
        "member_months": total_mm,
        "pmpm_allowed": all_allowed / total_mm,
        "paid_to_allowed": (float(paid.sum()) + float(rx_paid.sum())) / all_allowed,
        "pharmacy_share": float(rx_allowed.sum()) / all_allowed,
        "top1_share": float(ordered[: max(n // 100, 1)].sum()) / total,
        "top5_share": float(ordered[: max(n // 20, 1)].sum()) / total,
        "no_spend_share": float((ordered <= 0).mean()),
        "over_100k_share": float((ordered > 100_000).mean()),
        "medical_lines_per_member_year": float(original.sum()) / years,
        "fills_per_member_year": float(rx_original.sum()) / years,
        "denied_line_share": float(denied[original].mean()),
        "generic_fill_share": float(generic[rx_original].mean()),
        "specialty_fill_share": float(specialty[rx_original].mean()),
        "specialty_spend_share": float(rx_allowed[specialty].sum()) / float(rx_allowed.sum()),
        "mail_fill_share": float(_equal(rx("channel"), "mail")[rx_original].mean()),
    }
    for k in (0, 1, 2, 3, 12):
        report[f"lag_paid_by_month_{k}"] = float(paid[lag_base & (lag <= k)].sum()) / paid_base
    if n_months == 12:
        surgical = _surgical_claim_months(med, original & ~denied, claim_month) - first_month
        counts = np.bincount(surgical[(surgical >= 0) & (surgical < 12)], minlength=12)
        rate = counts / per_month
        report["december_surgery_ratio"] = float(rate[11] / rate[:11].mean())
    return report


def _surgical_claim_months(
    med: Callable[[str], pa.ChunkedArray], counted: BoolArray, claim_month: IntArray
) -> IntArray:
    """Service month of each surgical claim: ASC, outpatient surgery, surgical DRG stay."""
    bill, revenue = med("bill_type"), med("revenue_code")
    surgical_drgs = pa.array(sorted(c for c, kind in drg_types().items() if kind == "P"))
    asc = _flags(pc.starts_with(bill, "83"))
    outpatient = _flags(pc.starts_with(bill, "13")) & (
        _flags(pc.starts_with(revenue, "036")) | _flags(pc.starts_with(revenue, "049"))
    )
    inpatient = _flags(pc.starts_with(bill, "11")) & _flags(
        pc.is_in(med("drg"), value_set=surgical_drgs)
    )
    chosen = pa.array(counted & (asc | outpatient | inpatient))
    claims = pa.table(
        {"claim": med("claim_id").filter(chosen), "month": pa.array(claim_month).filter(chosen)}
    )
    first = claims.group_by("claim").aggregate([("month", "min")])
    return np.asarray(first["month_min"].to_numpy(), dtype=np.int64)
