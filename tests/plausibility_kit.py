"""Broken extracts for the plausibility rules: a clean synthetic carrier (CSV) edited with pandas
so that every rule of :mod:`fedoversight.plausibility` flags known rows, and the rows each rule
must then report (1-based row numbers within the file, as ``carrier-node check`` gives them).

Every plant edits rows no other plant touches. Where an implausible value necessarily makes
another rule true too (a claim dated 1899 is also before the member's birth), the plant says
so: the expected findings are the whole truth of the broken extract, not a subset of it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fedoversight.plausibility import RULES

#: The date the broken extracts are checked against (after every synthetic date).
AS_OF = datetime.date(2028, 6, 30)
#: Carries no meaning: a value planted to show that no value reaches the report.
SECRET_MEMBER = "ZZSECRETMEMBER9"

Key = tuple[str, str, str]  # table, column, rule name

TABLES = ("eligibility", "medical_claims", "pharmacy_claims")
MONEY_MEDICAL = (
    "charge_amount",
    "allowed_amount",
    "paid_amount",
    "deductible_amount",
    "coinsurance_amount",
    "copay_amount",
)
MONEY_PHARMACY = ("allowed_amount", "paid_amount", "member_paid_amount")


def clean_extract(root: Path) -> Path:
    """A small clean synthetic carrier in CSV (January only: its dates stay before AS_OF)."""
    from oversight_sim.synth import SynthConfig, write_carriers

    (directory,) = write_carriers(
        root, SynthConfig(carriers=1, members=400, seed=3, months=1, file_format="csv")
    )
    return directory


def _day(text: str, days: int) -> str:
    return (datetime.date.fromisoformat(text) + datetime.timedelta(days=days)).isoformat()


def _negate(text: str) -> str:
    if not text:
        return text
    return text[1:] if text.startswith("-") else "-" + text


def _money(value: float) -> str:
    return f"{value:.2f}"


@dataclass
class Extract:
    """The tables of an extract as text frames, the rows planted so far and what they flag."""

    frames: dict[str, pd.DataFrame]
    used: dict[str, set[int]] = field(default_factory=lambda: {t: set() for t in TABLES})
    expected: dict[Key, set[int]] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> Extract:
        frames = {
            t: pd.read_csv(directory / f"{t}.csv", dtype=str, keep_default_na=False) for t in TABLES
        }
        return cls(frames)

    def write(self, directory: Path) -> None:
        for table, frame in self.frames.items():
            frame.to_csv(directory / f"{table}.csv", index=False)

    def expect(self, table: str, column: str, rule: str, index: int) -> None:
        self.expected.setdefault((table, column, rule), set()).add(index + 1)

    # --- choosing rows --------------------------------------------------------------------

    def _claim_members(self) -> set[str]:
        return set(self.frames["medical_claims"]["member_id"]) | set(
            self.frames["pharmacy_claims"]["member_id"]
        )

    def take(
        self, table: str, n: int, where: Callable[[pd.Series], bool] | None = None
    ) -> list[int]:
        """``n`` rows of a table no plant has used, meeting ``where``: for eligibility, spans
        of single-span members without claims (a changed birth date then moves nothing else);
        for claims, rows of members no eligibility plant touches, one per claim."""
        frame = self.frames[table]
        chosen: list[int] = []
        if table == "eligibility":
            spans = frame["member_id"].value_counts()
            busy = self._claim_members()
            ok = frame["member_id"].map(lambda m: spans[m] == 1 and m not in busy) & (
                frame["death_date"] == ""
            )
        else:
            touched = set(
                self.frames["eligibility"].loc[list(self.used["eligibility"]), "member_id"]
            )
            ok = ~frame["member_id"].isin(touched)
        claims_used = (
            set(frame.loc[list(self.used[table]), "claim_id"]) if "claim_id" in frame else set()
        )
        for index in frame.index[ok]:
            if index in self.used[table]:
                continue
            row = frame.loc[index]
            if "claim_id" in frame and row["claim_id"] in claims_used:
                continue
            if where is not None and not where(row):
                continue
            chosen.append(int(index))
            if "claim_id" in frame:
                claims_used.add(row["claim_id"])
            if len(chosen) == n:
                break
        if len(chosen) < n:
            raise AssertionError(f"the clean extract has too few {table} rows to plant in")
        self.used[table].update(chosen)
        return chosen

    def set(self, table: str, index: int, **values: str) -> None:
        for column, value in values.items():
            self.frames[table].loc[index, column] = value

    def get(self, table: str, index: int, column: str) -> str:
        return str(self.frames[table].loc[index, column])

    def append_copy(self, table: str, index: int, **changes: str) -> int:
        frame = self.frames[table]
        row = frame.loc[[index]].copy()
        for column, value in changes.items():
            row[column] = value
        self.frames[table] = pd.concat([frame, row], ignore_index=True)
        new = len(self.frames[table]) - 1
        self.used[table].add(new)
        return new

    def birth_of(self, member: str) -> str:
        elig = self.frames["eligibility"]
        return str(min(elig.loc[elig["member_id"] == member, "birth_date"]))


def _paid(row: pd.Series) -> bool:
    return bool(row["claim_status"] == "paid")


def _plant_eligibility(x: Extract) -> None:
    t = "eligibility"
    future = _day(AS_OF.isoformat(), 1)
    for i in x.take(t, 2):  # the age rule sees 1899 too
        x.set(t, i, birth_date="1899-06-01")
        x.expect(t, "birth_date", "date_before_1900", i)
        x.expect(t, "birth_date", "age_over_120", i)
    for i in x.take(t, 2):
        x.set(t, i, enrollment_start_date="1899-12-31")
        x.expect(t, "enrollment_start_date", "date_before_1900", i)
        x.expect(t, "enrollment_start_date", "enrollment_before_birth", i)
    for i in x.take(t, 2):
        x.set(t, i, enrollment_start_date="1899-01-01", enrollment_end_date="1899-12-31")
        x.expect(t, "enrollment_end_date", "date_before_1900", i)
        x.expect(t, "enrollment_start_date", "date_before_1900", i)
        x.expect(t, "enrollment_start_date", "enrollment_before_birth", i)
    for i in x.take(t, 2):  # before birth, and before the span starts
        x.set(t, i, death_date="1899-12-31")
        x.expect(t, "death_date", "date_before_1900", i)
        x.expect(t, "death_date", "death_before_birth", i)
        x.expect(t, "enrollment_start_date", "enrollment_after_death", i)
    for i in x.take(t, 2):  # the span starts after the birth, so only the birth is implausible
        x.set(
            t,
            i,
            birth_date=future,
            enrollment_start_date=_day(future, 1),
            enrollment_end_date="",
        )
        x.expect(t, "birth_date", "date_in_future", i)
    for i in x.take(t, 2):
        x.set(t, i, death_date=future)
        x.expect(t, "death_date", "date_in_future", i)
    for i in x.take(t, 2, lambda r: r["enrollment_start_date"] > r["birth_date"]):
        x.set(t, i, death_date=_day(x.get(t, i, "birth_date"), -1))
        x.expect(t, "death_date", "death_before_birth", i)
        x.expect(t, "enrollment_start_date", "enrollment_after_death", i)
    for i in x.take(t, 2):
        x.set(t, i, birth_date="1901-01-01")
        x.expect(t, "birth_date", "age_over_120", i)
    for i in x.take(t, 2):
        x.set(t, i, birth_date=_day(x.get(t, i, "enrollment_start_date"), 1))
        x.expect(t, "enrollment_start_date", "enrollment_before_birth", i)
    for i in x.take(t, 2, lambda r: r["enrollment_start_date"] > _day(r["birth_date"], 1)):
        x.set(t, i, death_date=_day(x.get(t, i, "enrollment_start_date"), -1))
        x.expect(t, "enrollment_start_date", "enrollment_after_death", i)
    for i in x.take(t, 2):  # the same span delivered twice: the copy overlaps it
        new = x.append_copy(t, i)
        x.expect(t, "enrollment_start_date", "overlapping_spans", new)
    for i in x.take(t, 2):  # a later span of the member, with another birth date
        start = x.get(t, i, "enrollment_start_date")
        x.set(t, i, enrollment_end_date=_day(start, 10))
        new = x.append_copy(
            t,
            i,
            enrollment_start_date=_day(start, 11),
            enrollment_end_date="",
            birth_date=_day(x.get(t, i, "birth_date"), -1),
        )
        x.expect(t, "birth_date", "birth_date_differs", new)


def _plant_claim_dates(x: Extract, t: str, service: str, end: str | None) -> None:
    future = _day(AS_OF.isoformat(), 1)
    for i in x.take(t, 2):  # also before the member's birth (and, for a line, far from its end)
        x.set(t, i, **{service: "1899-12-31"})
        x.expect(t, service, "date_before_1900", i)
        x.expect(t, service, "service_before_birth", i)
        if end is not None:
            x.expect(t, end, "service_span_too_long", i)
    for i in x.take(t, 2, lambda r: r["paid_date"] != ""):
        x.set(t, i, paid_date="1899-12-31")
        x.expect(t, "paid_date", "date_before_1900", i)
        x.expect(t, "paid_date", "paid_before_service", i)
    for i in x.take(t, 2, lambda r: r["paid_date"] != ""):  # paid before it was served
        x.set(t, i, **{service: future})
        if end is not None:
            x.set(t, i, **{end: future})
            x.expect(t, end, "date_in_future", i)
        x.expect(t, service, "date_in_future", i)
        x.expect(t, "paid_date", "paid_before_service", i)
    for i in x.take(t, 2):
        x.set(t, i, paid_date=future)
        x.expect(t, "paid_date", "date_in_future", i)
    for i in x.take(t, 2, lambda r: r["paid_date"] != ""):
        x.set(t, i, paid_date=_day(x.get(t, i, service), -1))
        x.expect(t, "paid_date", "paid_before_service", i)
    for i in x.take(t, 2):
        born = x.birth_of(x.get(t, i, "member_id"))
        x.set(t, i, **{service: _day(born, -1)})
        if end is not None:
            x.set(t, i, **{end: _day(born, -1)})
        x.expect(t, service, "service_before_birth", i)


def _plant_amounts(x: Extract, t: str, amounts: tuple[str, ...], balanced: bool) -> None:
    """Amount signs by status; ``balanced``: the table's allowed = paid + member_paid, which
    any change of one amount breaks (pharmacy)."""

    def side_effects(i: int) -> None:
        allowed = abs(float(x.get(t, i, "allowed_amount") or 0))
        if abs(float(x.get(t, i, "paid_amount") or 0)) > allowed:
            x.expect(t, "paid_amount", "paid_exceeds_allowed", i)
        if balanced:
            x.expect(t, "member_paid_amount", "cost_share_mismatch", i)

    for column in amounts:
        for i in x.take(t, 2, _paid):  # one amount of a paid row negative
            value = _negate(x.get(t, i, column))
            x.set(t, i, **{column: value if float(value or 0) < 0 else "-1.00"})
            x.expect(t, column, "negative_amount", i)
            side_effects(i)
        for i in x.take(t, 2, _paid):  # a reversal with one amount left positive
            for a in amounts:
                if a != column:
                    x.set(t, i, **{a: _negate(x.get(t, i, a))})
            if float(x.get(t, i, column) or 0) <= 0:
                x.set(t, i, **{column: "1.00"})
            x.set(t, i, claim_status="reversed")
            x.expect(t, column, "positive_amount_on_reversal", i)
            side_effects(i)
    for i in x.take(t, 2, lambda r: _paid(r) and float(r["paid_amount"]) > 0):
        x.set(t, i, claim_status="denied")
        x.expect(t, "paid_amount", "paid_on_denied", i)
    for i in x.take(t, 2, _paid):
        x.set(t, i, paid_amount=_money(float(x.get(t, i, "allowed_amount")) + 1))
        x.expect(t, "paid_amount", "paid_exceeds_allowed", i)
        if balanced:
            x.expect(t, "member_paid_amount", "cost_share_mismatch", i)


def _plant_medical(x: Extract) -> None:
    t = "medical_claims"
    _plant_claim_dates(x, t, "claim_start_date", "claim_end_date")
    _plant_amounts(x, t, MONEY_MEDICAL, balanced=False)
    future = _day(AS_OF.isoformat(), 1)
    no_stay = lambda r: r["admission_date"] == "" and r["discharge_date"] == ""  # noqa: E731
    for i in x.take(t, 2):
        x.set(t, i, claim_end_date="1899-12-31")
        x.expect(t, "claim_end_date", "date_before_1900", i)
        x.expect(t, "claim_end_date", "end_before_start", i)
    for i in x.take(t, 2):  # also more than a year after the line started
        x.set(t, i, claim_end_date=future)
        x.expect(t, "claim_end_date", "date_in_future", i)
        x.expect(t, "claim_end_date", "service_span_too_long", i)
    for column in ("admission_date", "discharge_date"):
        for i in x.take(t, 2, no_stay):
            x.set(t, i, **{column: "1899-12-31"})
            x.expect(t, column, "date_before_1900", i)
        for i in x.take(t, 2, no_stay):
            x.set(t, i, **{column: future})
            x.expect(t, column, "date_in_future", i)
    for i in x.take(t, 2, no_stay):
        x.set(t, i, admission_date="2026-01-10", discharge_date="2026-01-05")
        x.expect(t, "discharge_date", "admission_after_discharge", i)
    for i in x.take(t, 2):
        x.set(t, i, claim_end_date=_day(x.get(t, i, "claim_start_date"), -1))
        x.expect(t, "claim_end_date", "end_before_start", i)
    for i in x.take(t, 2):
        x.set(t, i, claim_end_date=_day(x.get(t, i, "claim_start_date"), 400))
        x.expect(t, "claim_end_date", "service_span_too_long", i)
    for i in x.take(t, 2):
        x.set(t, i, claim_line="0")
        x.expect(t, "claim_line", "line_number_not_positive", i)
    for i in x.take(t, 2):
        x.set(t, i, claim_version="0")
        x.expect(t, "claim_version", "version_not_positive", i)
    for i in x.take(t, 2):
        x.expect(t, "claim_id", "duplicate_claim_line", x.append_copy(t, i))


def _plant_pharmacy(x: Extract) -> None:
    t = "pharmacy_claims"
    _plant_claim_dates(x, t, "fill_date", None)
    _plant_amounts(x, t, MONEY_PHARMACY, balanced=True)
    for value in ("-5", "0", "400"):
        for i in x.take(t, 1, _paid):
            x.set(t, i, days_supply=value)
            x.expect(t, "days_supply", "days_supply_out_of_range", i)
    for value in ("0", "-3", "100001"):
        for i in x.take(t, 1, _paid):
            x.set(t, i, quantity=value)
            x.expect(t, "quantity", "quantity_out_of_range", i)
    for i in x.take(t, 2, _paid):  # a reversal may negate the days and the quantity
        x.set(t, i, claim_status="reversed", days_supply="-30", quantity="-30")
        for a in MONEY_PHARMACY:
            x.set(t, i, **{a: _negate(x.get(t, i, a))})
    for i in x.take(t, 2):
        x.set(t, i, member_paid_amount=_money(float(x.get(t, i, "member_paid_amount")) + 1))
        x.expect(t, "member_paid_amount", "cost_share_mismatch", i)
    for i in x.take(t, 2):
        x.expect(t, "claim_id", "duplicate_fill", x.append_copy(t, i))


def break_extract(directory: Path) -> dict[Key, set[int]]:
    """Plant every rule's rows into the extract in ``directory`` (edited in place); return the
    rows each rule must flag."""
    x = Extract.read(directory)
    _plant_eligibility(x)
    _plant_medical(x)
    _plant_pharmacy(x)
    x.write(directory)
    missing = {r.key for r in RULES} - set(x.expected)
    if missing:
        raise AssertionError(f"rules without a plant: {sorted(missing)}")
    return x.expected


def rename_member(directory: Path, old: str, new: str) -> None:
    """Give a member another id in every table (to plant a recognisable value)."""
    for table in TABLES:
        path = directory / f"{table}.csv"
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.loc[frame["member_id"] == old, "member_id"] = new
        frame.to_csv(path, index=False)
