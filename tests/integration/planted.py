"""Small groups planted in a synthetic carrier, for the adversary suite.

Every member of the victim carrier is made enrolled throughout (one span from 2025-01-01),
and the states used below are cleared of synthetic members; then each group is added with its
own members and claims, so a query by state (or plan) isolates it:

- ``WY``: 3 members gone after January (enrollment ends 2026-01-31): an ED visit, a telehealth
  visit, a denied line, a brand fill and a claim paid five months late (A1); an acute stay
  readmitted within 30 days (A2); a reversed lab line and nothing else (A3, a negative total).
- ``VT``: 14 women aged 50–74 enrolled throughout, 11 of them screened (a mammogram in
  February): 3 unscreened women, an excluded count.
- ``ND``: 15 members, one of them (the only one aged 65 or over) with $2,000,000 allowed in
  February: a dominant contribution.
- ``SD``: 12 members with claims in February, and in March a claim of one of them only
  (S1, $5,000): one member's claim between nested periods. :func:`late_claim` gives S2 a late
  February claim of $777 (a refresh).
- plans ``ZA`` and ``ZB``: 30 members each; in ZA two of them have outpatient substance-use
  visits (a sensitive category), in ZB nobody.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

START = dt.date(2025, 1, 1)
STATES = ("WY", "VT", "ND", "SD")
PLANS = ("ZA", "ZB")
LATE_CLAIM_CENTS = 77_700
MARCH_CLAIM_CENTS = 500_000
DOMINANT_CENTS = 200_000_000


def _money(cents: int) -> Decimal:
    return Decimal(cents) / 100


@dataclass
class Rows:
    eligibility: list[dict[str, Any]] = field(default_factory=list)
    medical: list[dict[str, Any]] = field(default_factory=list)
    pharmacy: list[dict[str, Any]] = field(default_factory=list)
    claims: int = 0

    def member(
        self,
        member_id: str,
        *,
        state: str = "CA",
        plan: str,
        sex: str = "M",
        born: dt.date = dt.date(1980, 5, 5),
        end: dt.date | None = None,
    ) -> str:
        self.eligibility.append(
            {
                "member_id": member_id,
                "program": "FEHB",
                "plan_code": plan,
                "birth_date": born,
                "sex": sex,
                "state": state,
                "enrollment_start_date": START,
                "enrollment_end_date": end,
                "medicare_primary": False,
                "subscriber_id": member_id,
                "relationship": "self",
                "death_date": None,
                "enrollee_type": "active",
                "coverage_tier": "self",
                "hdhp": False,
            }
        )
        return member_id

    def line(self, member_id: str, day: dt.date, cents: int, **fields: Any) -> None:
        self.claims += 1
        row = {
            "claim_id": f"PLANT{self.claims:06d}",
            "claim_line": 1,
            "claim_status": "paid",
            "member_id": member_id,
            "claim_type": "professional",
            "claim_start_date": day,
            "claim_end_date": day,
            "place_of_service": "11",
            "hcpcs": "99213",
            "in_network": True,
            "charge_amount": _money(cents * 2),
            "allowed_amount": _money(cents),
            "paid_amount": _money(cents * 8 // 10),
            "paid_date": day + dt.timedelta(days=10),
            "claim_version": 1,
        }
        row.update(fields)
        self.medical.append(row)

    def fill(self, member_id: str, day: dt.date, cents: int, **fields: Any) -> None:
        self.claims += 1
        row = {
            "claim_id": f"PLANTRX{self.claims:06d}",
            "claim_status": "paid",
            "member_id": member_id,
            "fill_date": day,
            "paid_date": day,
            "ndc": "00000000001",
            "drug_class": "statin",
            "quantity": 30.0,
            "days_supply": 30,
            "generic": True,
            "specialty": False,
            "channel": "retail",
            "allowed_amount": _money(cents),
            "paid_amount": _money(cents * 8 // 10),
            "member_paid_amount": _money(cents // 5),
        }
        row.update(fields)
        self.pharmacy.append(row)


def _groups(plan: str) -> Rows:
    rows = Rows()
    jan = dt.date(2026, 1, 1)
    # WY: three members gone after January.
    end = dt.date(2026, 1, 31)
    a1 = rows.member("PLANTA1", state="WY", plan=plan, end=end)
    a2 = rows.member("PLANTA2", state="WY", plan=plan, end=end)
    a3 = rows.member("PLANTA3", state="WY", plan=plan, end=end)
    rows.line(a1, jan.replace(day=10), 85_000, place_of_service="23", hcpcs="99284")
    rows.line(a1, jan.replace(day=12), 9_500, place_of_service="02", hcpcs="99213")
    rows.line(
        a1,
        jan.replace(day=14),
        30_000,
        claim_status="denied",
        allowed_amount=_money(0),
        paid_amount=_money(0),
    )
    rows.line(a1, jan.replace(day=3), 123_456, paid_date=dt.date(2026, 6, 15))
    rows.fill(a1, jan.replace(day=5), 42_000, generic=False)
    for start, stop, facility in ((2, 5, "1000000001"), (20, 22, "1000000002")):
        rows.line(
            a2,
            jan.replace(day=start),
            1_500_000,
            claim_type="institutional",
            place_of_service=None,
            hcpcs=None,
            bill_type="111",
            revenue_code="0120",
            admission_date=jan.replace(day=start),
            discharge_date=jan.replace(day=stop),
            claim_end_date=jan.replace(day=stop),
            facility_npi=facility,
            drg="291",
        )
    rows.line(
        a3,
        jan.replace(day=8),
        -25_000,
        claim_status="reversed",
        place_of_service="81",
        hcpcs="80053",
    )
    # VT: 14 women 50-74, 11 screened.
    for i in range(14):
        woman = rows.member(
            f"PLANTV{i:02d}", state="VT", plan=plan, sex="F", born=dt.date(1962, 3, 3)
        )
        rows.line(woman, dt.date(2026, 2, 2), 4_000)
        if i < 11:
            rows.line(woman, dt.date(2026, 2, 9), 21_000, hcpcs="77067")
    # ND: 15 members, the only 65+ with two million dollars in February.
    for i in range(15):
        born = dt.date(1950, 1, 1) if i == 0 else dt.date(1985, 1, 1)
        member = rows.member(f"PLANTN{i:02d}", state="ND", plan=plan, born=born)
        rows.line(member, dt.date(2026, 2, 3), DOMINANT_CENTS if i == 0 else 15_000 + 100 * i)
    # SD: 12 members with February claims; one March claim.
    for i in range(12):
        member = rows.member(f"PLANTS{i:02d}", state="SD", plan=plan)
        rows.line(member, dt.date(2026, 2, 4), 20_000 + 300 * i)
        if i == 0:
            rows.line(member, dt.date(2026, 3, 10), MARCH_CLAIM_CENTS)
    # Plans ZA and ZB: two substance-use visitors in ZA.
    for plan_code in PLANS:
        for i in range(30):
            member = rows.member(f"PLANT{plan_code}{i:02d}", plan=plan_code)
            rows.line(member, dt.date(2026, 1, 15), 10_000)
            if plan_code == "ZA" and i < 2:
                rows.line(
                    member, dt.date(2026, 2, 16), 60_000, place_of_service="57", hcpcs="H0005"
                )
    return rows


def _append(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    table = pq.read_table(path)
    added = pa.Table.from_pylist(list(rows), schema=table.schema)
    pq.write_table(pa.concat_tables([table, added]), path)


@dataclass(frozen=True)
class Plant:
    directory: Path
    #: The plan the planted state groups are in (the carrier's most common one).
    plan: str
    #: The states of the carrier's other members.
    other_states: tuple[str, ...]


def plant(directory: Path) -> Plant:
    """Make every member enrolled throughout, clear the planted states and plans, add the
    groups (see the module docstring)."""
    path = directory / "eligibility.parquet"
    original = pq.read_table(path)
    frame = original.to_pandas()
    frame = frame.drop_duplicates("member_id", keep="first").reset_index(drop=True)
    frame["enrollment_start_date"] = START
    frame["enrollment_end_date"] = None
    frame["death_date"] = None
    frame["state"] = frame["state"].where(
        frame["state"].notna() & ~frame["state"].isin(STATES), "CA"
    )
    frame["plan_code"] = frame["plan_code"].where(~frame["plan_code"].isin(PLANS), "A1J")
    plan = str(frame["plan_code"].mode().iloc[0])
    pq.write_table(pa.Table.from_pandas(frame, schema=original.schema, preserve_index=False), path)
    rows = _groups(plan)
    _append(path, rows.eligibility)
    _append(directory / "medical_claims.parquet", rows.medical)
    _append(directory / "pharmacy_claims.parquet", rows.pharmacy)
    return Plant(directory, plan, tuple(sorted(set(frame["state"]))))


def late_claim(directory: Path) -> None:
    """A late February claim of $777 for SD's second member (the carrier refreshes its
    extract); the file is replaced as a carrier would."""
    rows = Rows(claims=900_000)
    rows.line("PLANTS01", dt.date(2026, 2, 20), LATE_CLAIM_CENTS)
    path = directory / "medical_claims.parquet"
    frame = pd.concat(
        [pq.read_table(path).to_pandas(), pd.DataFrame(rows.medical)], ignore_index=True
    )
    schema = pq.read_schema(path)
    replacement = path.with_name("medical_claims.parquet.new")
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), replacement)
    replacement.replace(path)
