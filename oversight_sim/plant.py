"""Planted groups: small, known groups added to a synthetic carrier's Parquet files (see
:class:`oversight_sim.scenario.Plant`), so a test knows exactly what a cell holds.

Every member of the carrier is first made enrolled throughout (one open span from the January
of the year before the scenario's), the planted states are cleared of synthetic members (they
move to ``CA``), then each group is added with members and claims of its own.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from oversight_sim.scenario import Plant

#: Where synthetic members of a planted state go.
MOVED_TO = "CA"


def _money(cents: int) -> Decimal:
    return Decimal(cents) / 100


@dataclass
class Rows:
    """Rows to add to a carrier's tables."""

    start: dt.date
    eligibility: list[dict[str, Any]] = field(default_factory=list)
    medical: list[dict[str, Any]] = field(default_factory=list)
    claims: int = 0
    prefix: str = "PLANT"

    def member(
        self, member_id: str, *, state: str, plan: str, born: dt.date = dt.date(1980, 5, 5)
    ) -> str:
        self.eligibility.append(
            {
                "member_id": member_id,
                "program": "FEHB",
                "plan_code": plan,
                "birth_date": born,
                "sex": "M",
                "state": state,
                "enrollment_start_date": self.start,
                "enrollment_end_date": None,
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

    def visit(self, member_id: str, day: dt.date, cents: int) -> None:
        """An office visit (professional, E&M) of ``cents`` allowed, paid ten days later."""
        self.claims += 1
        self.medical.append(
            {
                "claim_id": f"{self.prefix}{self.claims:06d}",
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
        )


def _member_ids(plant: Plant, index: int) -> list[str]:
    tag = {"rare_cell": "R", "dominant_claimant": "D", "late_claims": "L"}[plant.kind]
    return [f"PLANT{tag}{index}M{i:03d}" for i in range(plant.size)]


def _group(rows: Rows, plant: Plant, index: int, plan: str, year: int) -> None:
    day = dt.date(year, plant.month, 3)
    for i, member_id in enumerate(_member_ids(plant, index)):
        dominant = plant.kind == "dominant_claimant" and i == 0
        born = dt.date(year - 76, 1, 1) if dominant else dt.date(year - 41, 1, 1)
        rows.member(member_id, state=plant.where, plan=plan, born=born)
        cents = round(plant.dollars * 100) if dominant else 15_000 + 100 * i
        rows.visit(member_id, day, cents)


def _append(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    table = pq.read_table(path)
    added = pa.Table.from_pylist(list(rows), schema=table.schema)
    pq.write_table(pa.concat_tables([table, added]), path)


@dataclass(frozen=True)
class Planted:
    """A carrier with its groups planted."""

    directory: Path
    #: The plan every planted member is in (the carrier's most common one).
    plan: str
    #: Each late-claims group's refreshed directory, by the round after which it replaces
    #: the carrier's files.
    refreshes: tuple[tuple[int, Path], ...] = ()


def plant_groups(directory: Path, plants: Sequence[Plant], year: int) -> Planted:
    """Plant ``plants`` (all of one carrier) in its directory (Parquet files)."""
    start = dt.date(year - 1, 1, 1)
    path = directory / "eligibility.parquet"
    original = pq.read_table(path)
    frame = original.to_pandas()
    frame = frame.drop_duplicates("member_id", keep="first").reset_index(drop=True)
    frame["enrollment_start_date"] = start
    frame["enrollment_end_date"] = None
    frame["death_date"] = None
    states = {p.where for p in plants}
    frame["state"] = frame["state"].where(
        frame["state"].notna() & ~frame["state"].isin(states), MOVED_TO
    )
    plan = str(frame["plan_code"].mode().iloc[0])
    pq.write_table(pa.Table.from_pandas(frame, schema=original.schema, preserve_index=False), path)
    rows = Rows(start=start)
    for index, plant in enumerate(plants):
        _group(rows, plant, index, plan, year)
    _append(path, rows.eligibility)
    _append(directory / "medical_claims.parquet", rows.medical)
    refreshes = []
    for index, plant in enumerate(plants):
        if plant.kind != "late_claims":
            continue
        refreshed = directory.with_name(f"{directory.name}.after-round-{plant.round}")
        if not refreshed.exists():
            shutil.copytree(directory, refreshed)
        late = Rows(start=start, prefix=f"PLANTLATE{index}X")
        second = _member_ids(plant, index)[min(1, plant.size - 1)]
        late.visit(second, dt.date(year, plant.month, 20), round(plant.dollars * 100))
        _append(refreshed / "medical_claims.parquet", late.medical)
        refreshes.append((plant.round, refreshed))
    return Planted(directory, plan, tuple(refreshes))
