"""The independent oracle: plain pandas over the union of the carriers' data.

Written from the written definitions only — the conventions of the metrics (README.md, under
"Metric catalogue"), the ``definition`` texts of ``fedoversight/catalogue.py`` with its shared
``ATTRIBUTION``, ``FINAL_ACTION``, ``STAYS`` and ``END_AGE`` wording, and the shipped code lists
(read here with pandas and matched by this module's own code). It shares no code with the node
or the coordinator and uses no SQL, so an agreement between the federated answer and this one
is evidence, not an echo. From the shared package it takes only the dimension names and age bands,
periods, the histogram's bin layout, (in its tests) the catalogue's statistic names, and for
:func:`compute`'s disclosure columns the catalogue's declared kinds and parts of statistics
(what disclosure control is declared to need, not how the node works it out).

:func:`compute` returns one row per (scope, cell): ``scope`` is each carrier id plus
``program`` (the same computation over the concatenation of all carriers: a member is a
(carrier, member_id) pair); then one column per group-by dimension holding the value as the wire
spells it; then one column per statistic of the metric — int64, except the histogram statistic
``allowed_histogram`` of ``cost.distribution``, which holds :class:`Histogram` objects. A cell is
returned only when at least one of its members-kind statistics (distinct people: ``members``,
``claimants``, ``stay_members``, ``eligible``, ``adds``, ...) is above zero, or (rebates,
which no member makes) it has rebates: a drug class rebated that nobody filled in the period is
a cell of its own. Service categories are a cell for every other key with member months (zero
where nobody had a claim in them), as the catalogue defines.

Readings of the definitions where the text leaves a choice (each is one place below):

Enrollment and attribution

- A span whose end date is before its start date covers no day (an invalid row is left out).
- When several spans are in force in a month, the one with the latest start date wins; ties go
  to the greatest plan code, then the latest end date (open = latest), then the later row.
- Age is whole years on the first day of the month; a member born after that day has no age
  in any band and is ``unknown`` (as is a missing birth date).
- Money is converted to integer cents from exact decimal dollars (half-up if a value has more
  than two places); integer and float inputs are dollars too. A missing allowed, paid or charge
  amount is an error; a missing cost-share amount (and a missing cost-share column) is zero.
- Dimension values are the data's own codes (a missing or empty value is ``unknown``);
  ``drug_class`` likewise, for a fill and for a rebate row.
- Filters keep the rows of every fact table whose attributes match, so a filter on a member
  attribute also keeps only the claims of the member months it keeps.

Final action (``FINAL_ACTION``)

- A medical line's final row is decided over all rows of the carrier's table, whatever their
  dates; the final row's own fields (date, codes, member) are then used. A missing version, or
  one below 1, is 1. Rows of one line that tie on the greatest claim_version (a repeated key)
  are all final: each counts, as each does in dollar totals (no row order decides).
- A kept pharmacy fill (no row denied or reversed) with several rows takes the least member_id
  and fill_date of its rows, the greatest drug_class (of those present) and days_supply, and
  is generic when any row is. A missing days_supply is 0; a missing generic flag is not
  generic.
- Codes are compared exactly as written (case and leading zeros matter); ranges such as HCPCS
  99202–99215 are inclusive over codes of the same length.

Acute stays (``STAYS``)

- Institutional means claim_type ``institutional``. Stays are built from all final-action lines
  of the table, whatever their dates or enrollment; a stay then counts (util.inpatient: in the
  member month of its start; readmission index stays: of its end) only when that month is an
  enrolled month of the period. A line without any end date ends on its start.
- Lines without a facility_npi are one facility among themselves (they merge with each other).
- A stay at another facility starting on the day of a discharge is a transfer (0 days: not a
  readmission); one starting the next day or later, up to 30 days, is a readmission. The
  readmitting stay need not be in the period nor in an enrolled month.

Per-member metrics (cost.distribution, cost.high_cost_claimants)

- A member's period total is the sum over all enrolled months of the period (the same rows as
  cost.pmpm), whatever the attributes of those months; the member's cell (and the filters) use
  the attributes of the member's latest enrolled month of the period, ``year`` being its year.
  Totals at or below zero are in the histogram's zero bin; a threshold is met at exactly
  $50,000.00 (≥, in cents).

Quality measures (``END_AGE``)

- The member's cell takes every attribute of the member month of the period's last month,
  ``age_band`` included (so age on that month's first day); the measure's age limits use whole
  years on the period's last day. Both limits are inclusive (50 and 74, 18 and 75, 40 and 75).
- Breast cancer screening: "enrolled in every month of the period" means a member month in every
  calendar month (at least one day each; gaps inside a month do not break it); sex is the
  last month's. The mammogram need not fall in an enrolled month, nor in the period.
- Diabetes and HbA1c: the diagnosis and test lines are final-action lines dated
  (claim_start_date) in the period's months, enrolled or not; a line with no bill_type
  (professional) is outside inpatient; ``dx1``…``dx10`` columns that are absent count as empty.
- Statin use: fills are final-action fills dated (fill_date) in the period, enrolled or not;
  two antidiabetic fills are two distinct claim_ids (on any dates).

Other metrics

- enrollment.churn: enrolled in the month before or after means a member month there (any plan,
  any span); a death is a death_date in the month on the span chosen for that month.
- cost.member_cost_share_pmpm: ``claimants`` are members with a medical or pharmacy row counted
  in the cell, as for cost.pmpm.
- cost.out_of_network_share: ``claimants`` are members with a medical row counted in the cell
  (any network flag); pharmacy rows are not part of this metric.
- util.office_visits: a member-day can be both an office and a telehealth visit (one of each).
- rx.specialty_share: a fill's specialty flag (any row true), net allowed and greatest
  days_supply are over all its rows in the table, whatever their dates. With cost_per_30_days
  above zero a fill is specialty when net allowed cents × 30 ≥ the parameter (exactly, as the
  decimal it prints as) × 100 × days_supply; a fill whose greatest days_supply is 0 or missing
  is specialty only by its flag. Its rows counted in the period (all statuses) make up
  specialty_allowed_cents and specialty_members.
- rx.rebate_share: a rebate row's quarter is read as ``YYYYQn`` (or ``YYYY-Qn``); rows of other
  quarters, or whose quarter cannot be read, are left out; its ``year`` is the quarter's year.
  A carrier without a rebates table has no rebates.
- ops.claims_lag: rows are all medical rows (all statuses and versions) dated in an enrolled
  month of the period that have a paid_date; a paid_date in a month before the incurred month is
  in no lag bucket and the row is not counted (nor its member as a claimant).
- ops.denial_rate: the adjudicated line's charge is its final row's charge_amount; claimants are
  members with an adjudicated line counted in the cell.
- ops.data_quality: a row is outside enrollment when its month is not a member month of its
  member (at least one day enrolled in that calendar month, in this carrier). Cells are the
  row's own calendar month. Codes are invalid when present and not in the shipped list
  (deprecated MS-DRGs are in the list); an empty code is missing. claimants are members with any
  medical or pharmacy row dated in the cell.
- ops.data_quality control totals (version 2): a carrier's declared totals are the
  ``control_totals`` entry of its tables (:func:`read_control_totals`, one row per table and
  month); a month is controlled for a table when the carrier declares it, and only the rows
  of controlled months count on the data's side. A claim is a distinct claim_id of one member
  among the table's rows dated in the month (a claim_id two members share is a claim of each),
  counted again in each month it has rows. A declared total rests on the members of the
  data's total it is compared with: its support, largest contribution and record keys are
  theirs (the catalogue's ``mirrors``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction
from functools import cache, cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import fedoversight
from fedoversight.catalogue import StatKind, get_metric
from fedoversight.dimensions import AGE_BANDS, UNKNOWN, Dimension
from fedoversight.histogram import EDGES_CENTS, N_BINS, Histogram
from fedoversight.periods import Month, Period

logger = logging.getLogger(__name__)
CODELISTS = Path(fedoversight.__file__).resolve().parent / "codelists"
PROGRAM_SCOPE = "program"
PHARMACY = "pharmacy"
OTHER = "other"

#: Tables read by :func:`load_carrier`; the first three must be present.
REQUIRED_TABLES = ("eligibility", "medical_claims", "pharmacy_claims")
OPTIONAL_TABLES = ("providers", "rebates")

_DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "eligibility": (
        "birth_date",
        "enrollment_start_date",
        "enrollment_end_date",
        "death_date",
    ),
    "medical_claims": (
        "claim_start_date",
        "claim_end_date",
        "admission_date",
        "discharge_date",
        "paid_date",
    ),
    "pharmacy_claims": ("fill_date", "paid_date"),
}
_MONEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "medical_claims": (
        "charge_amount",
        "allowed_amount",
        "paid_amount",
        "deductible_amount",
        "coinsurance_amount",
        "copay_amount",
    ),
    "pharmacy_claims": ("allowed_amount", "paid_amount", "member_paid_amount"),
    "rebates": ("rebate_amount",),
}
_BOOL_COLUMNS: dict[str, tuple[str, ...]] = {
    "eligibility": ("medicare_primary", "hdhp"),
    "medical_claims": ("in_network",),
    "pharmacy_claims": ("generic", "specialty"),
    "providers": ("in_network",),
}
_INT_COLUMNS: dict[str, tuple[str, ...]] = {
    "medical_claims": ("claim_line", "claim_version"),
    "pharmacy_claims": ("days_supply",),
}
_NUMBER_COLUMNS: dict[str, tuple[str, ...]] = {"pharmacy_claims": ("quantity",)}

_TRUE = frozenset({"true", "t", "1", "y", "yes"})
_FALSE = frozenset({"false", "f", "0", "n", "no"})

# ---------------------------------------------------------------------------------------------
# Loading


def load_carrier(directory: Path) -> dict[str, pd.DataFrame]:
    """Read one carrier's tables from ``NAME.parquet`` or ``NAME.csv`` in ``directory``.

    Codes stay strings with their leading zeros; dates become ``datetime64``; money becomes
    exact decimal dollars (an Arrow decimal column, else :class:`~decimal.Decimal` objects);
    booleans the nullable ``boolean`` dtype.
    """
    tables: dict[str, pd.DataFrame] = {}
    for name in (*REQUIRED_TABLES, *OPTIONAL_TABLES):
        parquet, csv = directory / f"{name}.parquet", directory / f"{name}.csv"
        if parquet.exists():
            # Decimals stay Arrow decimals (exact, and no Python object per amount).
            frame = pq.read_table(parquet).to_pandas(types_mapper=_decimal_as_arrow)
        elif csv.exists():
            frame = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
        elif name in REQUIRED_TABLES:
            raise FileNotFoundError(f"{directory}: no {name}.parquet or {name}.csv")
        else:
            continue
        tables[name] = _convert(name, frame)
    logger.debug("oracle loaded %d tables from %s", len(tables), directory)
    return tables


def _decimal_as_arrow(arrow_type: pa.DataType) -> pd.ArrowDtype | None:
    return pd.ArrowDtype(arrow_type) if pa.types.is_decimal(arrow_type) else None


def _convert(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    typed = {
        *_DATE_COLUMNS.get(table, ()),
        *_MONEY_COLUMNS.get(table, ()),
        *_BOOL_COLUMNS.get(table, ()),
        *_INT_COLUMNS.get(table, ()),
        *_NUMBER_COLUMNS.get(table, ()),
    }
    for column in out.columns:
        if column not in typed:
            out[column] = _codes(out[column])
    for column in _DATE_COLUMNS.get(table, ()):
        if column in out:
            out[column] = _dates(out[column], f"{table}.{column}")
    for column in _MONEY_COLUMNS.get(table, ()):
        if column in out:
            out[column] = _decimals(out[column], f"{table}.{column}")
    for column in _BOOL_COLUMNS.get(table, ()):
        if column in out:
            out[column] = _bools(out[column], f"{table}.{column}")
    for column in _INT_COLUMNS.get(table, ()):
        if column in out:
            out[column] = pd.to_numeric(out[column]).astype("Int64")
    for column in _NUMBER_COLUMNS.get(table, ()):
        if column in out:
            out[column] = pd.to_numeric(out[column])
    return out


def _codes(values: pd.Series) -> pd.Series:
    if values.dtype == "str":
        return values
    return values.astype("str")


def _dates(values: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.astype("datetime64[s]")
    try:
        if pd.api.types.is_string_dtype(values.dtype):
            parsed = pd.to_datetime(values, format="ISO8601")
        else:
            parsed = pd.to_datetime(values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: values that are not ISO dates") from exc
    return parsed.astype("datetime64[s]")


def _bools(values: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean")

    def one(value: object) -> bool | None:
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, bool | np.bool_):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{where}: a value that is not a boolean")

    return pd.Series([one(v) for v in values], index=values.index, dtype="boolean")


def _decimal(value: object, where: str) -> Decimal | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, Decimal):
        return None if value.is_nan() else value
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return None
        return Decimal(repr(float(value)))
    if isinstance(value, int | np.integer):
        return Decimal(int(value))
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{where}: a value that is not a decimal amount") from None


def _arrow_decimals(values: pd.Series) -> pa.Array | None:
    """The column as an Arrow decimal array, when it is one or its strings all parse as one."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_decimal(values.dtype.pyarrow_dtype):
        return pa.array(values)
    if values.dtype == "str":
        text = pa.array(values.str.strip())
        for scale in (2, 9):
            try:
                return pc.cast(text, pa.decimal128(34, scale))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
    return None


def _decimals(values: pd.Series, where: str) -> pd.Series:
    """Exact dollars: an Arrow decimal column when possible, else Decimal objects."""
    arrow = _arrow_decimals(values)
    if arrow is not None:
        return pd.Series(arrow, index=values.index, dtype=pd.ArrowDtype(arrow.type))
    return pd.Series([_decimal(v, where) for v in values], index=values.index, dtype=object)


_HUNDRED = Decimal(100)
_ONE = Decimal(1)


def cents(values: pd.Series, where: str = "amount") -> np.ndarray:
    """Exact integer cents (int64) from dollar amounts; a missing amount is an error.

    Amounts may be Decimal objects, decimal strings, Arrow decimals, floats or integers, all
    in dollars; a value with more than two places is rounded half away from zero.
    """
    if values.isna().any():
        raise ValueError(f"{where}: a missing amount")
    if pd.api.types.is_integer_dtype(values.dtype):
        return np.asarray(values.to_numpy(dtype=np.int64), dtype=np.int64) * 100
    arrow = _arrow_decimals(values)
    if arrow is not None:
        rounded = pc.round(arrow, ndigits=2, round_mode="half_towards_infinity")
        whole = pc.multiply(
            pc.cast(rounded, pa.decimal128(34, 2)), pa.scalar(_HUNDRED, pa.decimal128(3, 0))
        )
        return np.asarray(pc.cast(whole, pa.int64()).to_numpy(), dtype=np.int64)
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        dollars = _decimal(value, where)
        if dollars is None:
            raise ValueError(f"{where}: a missing amount")
        out[i] = int((dollars * _HUNDRED).quantize(_ONE, rounding=ROUND_HALF_UP))
    return out


# ---------------------------------------------------------------------------------------------
# Service categories (from the code list rules, matched here independently)


@dataclass(frozen=True)
class _Codes:
    """Alternatives of one rule condition: exact codes and inclusive equal-length ranges."""

    codes: frozenset[str]
    ranges: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> _Codes | None:
        parts = text.split()
        if not parts:
            return None
        ranges: list[tuple[str, str]] = []
        for part in parts:
            if "-" in part:
                low, high = part.split("-", 1)
                if len(low) != len(high):
                    raise ValueError(f"code list range of unequal lengths: {part}")
                ranges.append((low, high))
        return cls(frozenset(p for p in parts if "-" not in p), tuple(ranges))

    def matches(self, values: pd.Series) -> np.ndarray:
        hit = np.array(values.isin(self.codes).to_numpy(dtype=bool, na_value=False))
        lengths = values.str.len()
        for low, high in self.ranges:
            in_range = (lengths == len(low)) & (values >= low) & (values <= high)
            hit |= in_range.to_numpy(dtype=bool, na_value=False)
        return hit


@dataclass(frozen=True)
class _Rule:
    priority: int
    service_category: str
    service_category_2: str
    claim_type: str | None
    bill_type_prefixes: tuple[str, ...]
    revenue_code: _Codes | None
    place_of_service: _Codes | None
    hcpcs: _Codes | None
    drg: _Codes | None
    drg_type: str | None


def _read_codelist(name: str) -> pd.DataFrame:
    return pd.read_csv(CODELISTS / name, dtype=str, keep_default_na=False, encoding="utf-8-sig")


@cache
def _rules() -> tuple[_Rule, ...]:
    categories = _read_codelist("service_categories.csv")
    priority = {
        (r.service_category_1, r.service_category_2, r.service_category_3): int(r.priority)
        for r in categories.itertuples(index=False)
    }
    rules = [
        _Rule(
            priority=priority[(r.service_category_1, r.service_category_2, r.service_category_3)],
            service_category=r.service_category_1,
            service_category_2=r.service_category_2,
            claim_type=r.claim_type.strip() or None,
            bill_type_prefixes=tuple(r.bill_type_prefix.split()),
            revenue_code=_Codes.parse(r.revenue_code),
            place_of_service=_Codes.parse(r.place_of_service),
            hcpcs=_Codes.parse(r.hcpcs),
            drg=_Codes.parse(r.drg),
            drg_type=r.drg_type.strip() or None,
        )
        for r in _read_codelist("service_category_rules.csv").itertuples(index=False)
    ]
    return tuple(sorted(rules, key=lambda rule: rule.priority))


@cache
def _drg_flags() -> dict[str, str]:
    table = _read_codelist("ms_drg.csv")
    return dict(zip(table["ms_drg_code"], table["medical_surgical"], strict=True))


def _column(lines: pd.DataFrame, name: str) -> pd.Series:
    if name in lines:
        return _codes(lines[name])
    return pd.Series([None] * len(lines), index=lines.index, dtype="str")


_RULE_FIELDS = ("claim_type", "bill_type", "revenue_code", "place_of_service", "hcpcs", "drg")


def _rule_matches(rule: _Rule, fields: Mapping[str, pd.Series]) -> np.ndarray:
    hit = np.ones(len(fields["drg"]), dtype=bool)
    if rule.claim_type is not None:
        hit &= (fields["claim_type"] == rule.claim_type).to_numpy(dtype=bool, na_value=False)
    if rule.bill_type_prefixes:
        hit &= (
            fields["bill_type"]
            .str.startswith(rule.bill_type_prefixes, na=False)
            .to_numpy(dtype=bool, na_value=False)
        )
    conditions = (
        ("revenue_code", rule.revenue_code),
        ("place_of_service", rule.place_of_service),
        ("hcpcs", rule.hcpcs),
        ("drg", rule.drg),
    )
    for name, codes in conditions:
        if codes is not None:
            hit &= codes.matches(fields[name])
    if rule.drg_type is not None:
        hit &= (fields["drg_type"] == rule.drg_type).to_numpy(dtype=bool, na_value=False)
    return hit


def service_categories_of(lines: pd.DataFrame) -> pd.DataFrame:
    """Level 1 and level 2 service category of each medical claim line (same index).

    Of all rules a line matches, the category with the lowest priority number wins; a line
    that matches none is ``other``.
    """
    level_1 = np.full(len(lines), OTHER, dtype=object)
    level_2 = np.full(len(lines), OTHER, dtype=object)
    open_ = np.ones(len(lines), dtype=bool)
    fields = {name: _column(lines, name) for name in _RULE_FIELDS}
    fields["drg_type"] = _codes(fields["drg"].map(_drg_flags()))
    for rule in _rules():
        hit = open_ & _rule_matches(rule, fields)
        level_1[hit] = rule.service_category
        level_2[hit] = rule.service_category_2
        open_ &= ~hit
    return pd.DataFrame(
        {
            Dimension.SERVICE_CATEGORY.value: pd.array(level_1, dtype="str"),
            Dimension.SERVICE_CATEGORY_2.value: pd.array(level_2, dtype="str"),
        },
        index=lines.index,
    )


# ---------------------------------------------------------------------------------------------
# Normalised tables: every carrier's rows in one frame, keyed by (carrier, member)


_MEMBER_ID = "member_id"
_MEMBER = "_who"  # an int64 code per (carrier, member_id): a member is a carrier's member
_MONTH_INDEX = "_month_index"
_ROW = "_row"  # position of a row in its carrier's table: "the later row" of tie-breaks
_BIRTH = "_birth"
_DEATH = "_death"
_ALLOWED = "_allowed_cents"
_PAID = "_paid_cents"
_SCOPE = "scope"
_CARRIER = Dimension.CARRIER.value
_WHO = [_MEMBER]

_CATEGORY_DIMS = frozenset({Dimension.SERVICE_CATEGORY, Dimension.SERVICE_CATEGORY_2})
_MEMBER_MONTH_DIMS = (
    Dimension.CARRIER,
    Dimension.PROGRAM,
    Dimension.PLAN_CODE,
    Dimension.MONTH,
    Dimension.QUARTER,
    Dimension.YEAR,
    Dimension.AGE_BAND,
    Dimension.SEX,
    Dimension.STATE,
    Dimension.MEDICARE_PRIMARY,
    Dimension.ENROLLEE_TYPE,
)
_ATTRIBUTES = [d.value for d in _MEMBER_MONTH_DIMS]
_SPAN_ATTRIBUTES = [
    d.value
    for d in (
        Dimension.PROGRAM,
        Dimension.PLAN_CODE,
        Dimension.SEX,
        Dimension.STATE,
        Dimension.MEDICARE_PRIMARY,
        Dimension.ENROLLEE_TYPE,
    )
]


def _month_index(year: int, month: int) -> int:
    return year * 12 + (month - 1)


def _index_of(month: Month) -> int:
    return _month_index(month.year, month.month)


def _month_at(index: int) -> Month:
    return Month(index // 12, index % 12 + 1)


def _month_indexes(dates: pd.Series) -> pd.Series:
    """Month index of each date (as :func:`_month_index`); missing dates stay missing."""
    return (dates.dt.year * 12 + (dates.dt.month - 1)).astype("Int64")


def _day_numbers(dates: pd.Series) -> pd.Series:
    """Days since 1970-01-01 of each date (Int64; missing dates stay missing)."""
    days = dates.to_numpy(dtype="datetime64[s]").astype("datetime64[D]")
    out = pd.Series(days.astype("int64"), index=dates.index, dtype="Int64")
    out[np.isnat(days)] = pd.NA
    return out


def _from_day_numbers(days: pd.Series) -> pd.Series:
    return pd.Series(
        days.to_numpy(dtype="int64").astype("datetime64[D]").astype("datetime64[s]"),
        index=days.index,
    )


def _age_bands(ages: pd.Series) -> pd.Series:
    bands = np.full(len(ages), UNKNOWN, dtype=object)
    for label, low, high in AGE_BANDS:
        inside = ages >= low
        if high is not None:
            inside &= ages <= high
        bands[inside.to_numpy(dtype=bool, na_value=False)] = label
    return pd.Series(pd.array(bands, dtype="str"), index=ages.index)


def _ages(
    births: pd.Series, years: pd.Series, months: pd.Series, days: int | pd.Series
) -> pd.Series:
    """Whole years of age on the given days (Int64; missing births stay missing)."""
    before_birthday = (births.dt.month > months) | (
        (births.dt.month == months) & (births.dt.day > days)
    )
    return (years - births.dt.year - before_birthday.astype("Int64")).astype("Int64")


def _dimension_text(values: pd.Series) -> pd.Series:
    """A dimension value as a non-null string; missing values are ``unknown``."""
    text = _codes(values)
    return text.where(text.notna() & (text != ""), UNKNOWN)


def _yes_no(values: pd.Series, where: str) -> pd.Series:
    flags = _bools(values, where)
    text = np.full(len(flags), UNKNOWN, dtype=object)
    text[flags.eq(True).to_numpy(dtype=bool, na_value=False)] = "Y"
    text[flags.eq(False).to_numpy(dtype=bool, na_value=False)] = "N"
    return pd.Series(pd.array(text, dtype="str"), index=flags.index)


def _optional(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype="str")


def _between(values: pd.Series, low: int, high: int) -> np.ndarray:
    return np.asarray(values.between(low, high).to_numpy(dtype=bool, na_value=False))


def _spans(eligibility: pd.DataFrame) -> pd.DataFrame:
    """One carrier's enrollment spans with typed dates (attributes as they are: see
    :func:`_span_attributes`)."""
    return pd.DataFrame(
        {
            _MEMBER_ID: _codes(eligibility[_MEMBER_ID]),
            "_from": _dates(eligibility["enrollment_start_date"], "enrollment_start_date"),
            "_to": _dates(eligibility["enrollment_end_date"], "enrollment_end_date"),
            _BIRTH: _dates(eligibility["birth_date"], "birth_date"),
            _DEATH: _dates(_optional(eligibility, "death_date"), "death_date"),
            **{name: _optional(eligibility, name) for name in _SPAN_ATTRIBUTES},
            _ROW: np.arange(len(eligibility)),
        }
    )


def _span_attributes(spans: pd.DataFrame) -> pd.DataFrame:
    """Spans with their attributes as dimension values; spans of no day are left out."""
    out = spans.assign(
        **{
            name: _dimension_text(spans[name])
            for name in _SPAN_ATTRIBUTES
            if name != Dimension.MEDICARE_PRIMARY.value
        },
        **{
            Dimension.MEDICARE_PRIMARY.value: _yes_no(
                spans[Dimension.MEDICARE_PRIMARY.value], "medicare_primary"
            )
        },
    )
    valid = out["_from"].notna() & (out["_to"].isna() | (out["_to"] >= out["_from"]))
    # Categories of strings are sorted, so the plan-code tie-break still sorts by the code.
    return out[valid.to_numpy(dtype=bool)].astype({n: "category" for n in _SPAN_ATTRIBUTES})


def _member_months(spans: pd.DataFrame, low: int, high: int) -> pd.DataFrame:
    """One row per member and enrolled month with index ``low``..``high``, with that month's
    attributes (and ``_birth``, ``_death`` of the span chosen for the month)."""
    first = _month_indexes(spans["_from"]).to_numpy(dtype=np.int64)
    last = _month_indexes(spans["_to"]).fillna(high).to_numpy(dtype=np.int64)
    lo, hi = np.maximum(first, low), np.minimum(last, high)
    count = np.maximum(hi - lo + 1, 0)
    which = np.repeat(np.arange(len(spans)), count)
    offset = np.arange(len(which)) - np.repeat(np.cumsum(count) - count, count)
    months = spans.iloc[which].reset_index(drop=True)
    months[_MONTH_INDEX] = lo[which] + offset
    # Open spans end at the latest date for the tie-break; they still overlap every later month.
    months["_end_key"] = months["_to"].fillna(pd.Timestamp.max.floor("D"))
    chosen = months.sort_values(
        [_MEMBER, _MONTH_INDEX, "_from", Dimension.PLAN_CODE.value, "_end_key", _ROW],
        ascending=[True, True, False, False, False, False],
        kind="mergesort",
    ).drop_duplicates([_MEMBER, _MONTH_INDEX], keep="first")
    index = chosen[_MONTH_INDEX]
    calendar = {i: _month_at(i) for i in range(low, high + 1)}
    ages = _ages(chosen[_BIRTH], index // 12, index % 12 + 1, 1)
    chosen = chosen.assign(
        **{
            Dimension.MONTH.value: index.map({i: str(m) for i, m in calendar.items()}),
            Dimension.QUARTER.value: index.map({i: m.quarter() for i, m in calendar.items()}),
            Dimension.YEAR.value: index.map({i: f"{m.year:04d}" for i, m in calendar.items()}),
            Dimension.AGE_BAND.value: _age_bands(ages),
        }
    )
    columns = [_MEMBER, _MONTH_INDEX, *_ATTRIBUTES, _BIRTH, _DEATH]
    out = chosen[columns].reset_index(drop=True)
    # Categorical dimension columns: merges and groupings take codes, not strings.
    return out.astype({c: "category" for c in _ATTRIBUTES})


def _cents_or_zero(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Cents of ``column``; a missing amount (or a missing column) is zero."""
    out = np.zeros(len(frame), dtype=np.int64)
    if column not in frame:
        return out
    values = frame[column]
    present = values.notna().to_numpy(dtype=bool)
    if present.any():
        out[present] = cents(values[present], column)
    return out


def _pharmacy_categories(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            Dimension.SERVICE_CATEGORY.value: pd.Series(PHARMACY, index=rows.index, dtype="str"),
            Dimension.SERVICE_CATEGORY_2.value: pd.Series(PHARMACY, index=rows.index, dtype="str"),
        }
    )


def _categories_of_distinct(lines: pd.DataFrame) -> pd.DataFrame:
    """:func:`service_categories_of`, matched once per distinct combination of rule fields."""
    fields = [name for name in _RULE_FIELDS if name in lines]
    if not fields or lines.empty:
        return service_categories_of(lines)
    keys = lines[fields].astype("str").fillna("\x00")
    distinct = lines.loc[~keys.duplicated().to_numpy(dtype=bool), fields]
    categories = pd.concat(
        [distinct.astype("str").fillna("\x00"), service_categories_of(distinct)], axis=1
    )
    return keys.merge(categories, on=fields, how="left")[
        [Dimension.SERVICE_CATEGORY.value, Dimension.SERVICE_CATEGORY_2.value]
    ].set_axis(lines.index)


@dataclass(frozen=True)
class _CodeSet:
    """A code condition written as the code lists write one: codes and ``low-high`` ranges."""

    text: str

    def matches(self, values: pd.Series) -> np.ndarray:
        codes = _Codes.parse(self.text)
        assert codes is not None
        return codes.matches(values)


ED_REVENUE = _CodeSet("0450-0452 0459 0981")
ED_HCPCS = _CodeSet("99281-99285")
ED_PLACE = _CodeSet("23")
EM_HCPCS = _CodeSet("99202-99215")
OFFICE_PLACE = _CodeSet("11")
TELEHEALTH_PLACE = _CodeSet("02 10")
MAMMOGRAM_HCPCS = _CodeSet("77061-77063 77065-77067")
HBA1C_HCPCS = _CodeSet("83036 83037")
DIABETES_DX_PREFIXES = ("E10", "E11")
INPATIENT_BILL_TYPE = "11"
ANTIDIABETIC = "antidiabetic"
STATIN = "statin"
SCREENING_MONTHS = 27
READMISSION_DAYS = 30
HCC_THRESHOLDS = ((50_000, "50k"), (100_000, "100k"), (250_000, "250k"), (1_000_000, "1m"))
LAG_MONTHS = 12
_QUARTER = re.compile(r"^(\d{4})-?Q([1-4])$")

_DX = tuple(f"dx{i}" for i in range(1, 11))
_MEDICAL_DATES = ("claim_end_date", "admission_date", "discharge_date", "paid_date")
_FINAL_ACTION = frozenset({"paid", "adjusted"})
_ADJUDICATED = frozenset({"paid", "adjusted", "denied"})
_VOIDING = frozenset({"denied", "reversed"})


@cache
def _code_list(name: str, column: str) -> frozenset[str]:
    return frozenset(_read_codelist(name)[column])


def _medical(table: pd.DataFrame) -> pd.DataFrame:
    """One carrier's medical rows: the columns every medical metric needs (other columns are
    read by :meth:`_Union.field`)."""
    start = _dates(table["claim_start_date"], "claim_start_date")
    return pd.DataFrame(
        {
            _MEMBER_ID: _codes(table[_MEMBER_ID]),
            _ROW: np.arange(len(table)),
            "claim_line": pd.to_numeric(table["claim_line"]).astype("Int64"),
            "_version": pd.to_numeric(_optional(table, "claim_version"))
            .astype("Int64")
            .fillna(1)
            .clip(lower=1),
            "claim_status": _codes(table["claim_status"]).astype("category"),
            "_start": start,
            _MONTH_INDEX: _month_indexes(start),
        }
    )


def _medical_field(table: pd.DataFrame, name: str) -> pd.Series:
    """One column of one carrier's medical rows: codes as strings, dates as dates."""
    values = _optional(table, name)
    if name in _MEDICAL_DATES:
        return _dates(values, name)
    return _codes(values)


def _pharmacy(table: pd.DataFrame) -> pd.DataFrame:
    """One carrier's pharmacy rows."""
    fill = _dates(table["fill_date"], "fill_date")
    specialty = _bools(_optional(table, "specialty"), "specialty")
    return pd.DataFrame(
        {
            _MEMBER_ID: _codes(table[_MEMBER_ID]),
            _ROW: np.arange(len(table)),
            "claim_id": _codes(table["claim_id"]),
            "claim_status": _codes(table["claim_status"]),
            _MONTH_INDEX: _month_indexes(fill),
            Dimension.DRUG_CLASS.value: _dimension_text(_optional(table, "drug_class")),
            "_drug_class_code": _codes(_optional(table, "drug_class")).replace("", pd.NA),
            "_member_text": _codes(table[_MEMBER_ID]),
            "_generic": _bools(_optional(table, "generic"), "generic").fillna(False).astype(bool),
            "_specialty": specialty.fillna(False).astype(bool),
            "_days_supply": pd.to_numeric(_optional(table, "days_supply"))
            .astype("Int64")
            .fillna(0)
            .astype("int64"),
        }
    )


class _Union:
    """All carriers' tables for one period, normalised and prepared lazily as asked."""

    def __init__(
        self,
        tables_by_carrier: Mapping[str, Mapping[str, pd.DataFrame]],
        period: Period,
        parameters: Mapping[str, float],
    ) -> None:
        self.tables = {c: tables_by_carrier[c] for c in sorted(tables_by_carrier)}
        self.period = period
        self.parameters = parameters
        self.low = _index_of(period.first)
        self.high = _index_of(period.last)

    @cached_property
    def member_codes(self) -> dict[str, dict[str, np.ndarray]]:
        """Per carrier and table, the member code of each row: one int64 per (carrier,
        member_id), the same in every table of the carrier and different across carriers."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for number, (carrier, tables) in enumerate(self.tables.items()):
            names = [n for n in REQUIRED_TABLES if n in tables]
            ids = [_codes(tables[n][_MEMBER_ID]).reset_index(drop=True) for n in names]
            codes, _ = pd.factorize(pd.concat(ids, ignore_index=True), use_na_sentinel=False)
            codes = codes.astype(np.int64) + (number << 32)
            ends = np.cumsum([len(i) for i in ids])[:-1]
            out[carrier] = dict(zip(names, np.split(codes, ends), strict=True))
        return out

    @cached_property
    def member_ids(self) -> dict[int, str]:
        """The member id (as the data spells it) of every member code."""
        out: dict[int, str] = {}
        for carrier, tables in self.tables.items():
            for name, codes in self.member_codes[carrier].items():
                ids = _codes(tables[name][_MEMBER_ID]).reset_index(drop=True)
                out.update(zip(codes.tolist(), ids.astype(str).tolist(), strict=True))
        return out

    def each(self, build: Callable[[pd.DataFrame], pd.DataFrame], table: str) -> pd.DataFrame:
        """``build`` of every carrier's ``table`` (reset to positions; its ``_row`` column is
        the position), with the carrier (categorical) and the member code."""
        frames = []
        for number, (carrier, tables) in enumerate(self.tables.items()):
            frame = build(tables[table].reset_index(drop=True))
            codes = self.member_codes[carrier][table]
            frame[_MEMBER] = codes[frame[_ROW].to_numpy(dtype=np.int64)]
            frames.append(frame.drop(columns=_MEMBER_ID).assign(**{_CARRIER: number}))
        out = pd.concat(frames, ignore_index=True)
        out[_CARRIER] = pd.Categorical.from_codes(
            out[_CARRIER].to_numpy(dtype=np.int64), categories=list(self.tables)
        )
        return out

    def medical_cents(self, column: str, missing_is_zero: bool = False) -> np.ndarray:
        """Cents of a medical money column, row for row with :attr:`medical`."""
        return self._cents("medical_claims", column, missing_is_zero)

    def pharmacy_cents(self, column: str, missing_is_zero: bool = False) -> np.ndarray:
        return self._cents("pharmacy_claims", column, missing_is_zero)

    def _cents(self, table: str, column: str, missing_is_zero: bool) -> np.ndarray:
        parts = [
            _cents_or_zero(tables[table], column)
            if missing_is_zero
            else cents(tables[table][column], column)
            for tables in self.tables.values()
        ]
        return np.concatenate([np.zeros(0, dtype=np.int64), *parts])

    # --- enrollment

    @cached_property
    def spans(self) -> pd.DataFrame:
        return _span_attributes(self.each(_spans, "eligibility"))

    @cached_property
    def enrolled(self) -> pd.DataFrame:
        """Member months of the period with their attributes."""
        return _member_months(self.spans, self.low, self.high)

    def attribute(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Rows (member, month index) of enrolled months of the period, with that month's
        attributes (the carrier among them)."""
        rows = rows[_between(rows[_MONTH_INDEX], self.low, self.high)]
        rows = rows.drop(columns=[c for c in _ATTRIBUTES if c in rows])  # the carrier
        rows = rows.astype({_MONTH_INDEX: "int64"})
        months = self.enrolled[[_MEMBER, _MONTH_INDEX, *_ATTRIBUTES]]
        return rows.merge(months, on=[*_WHO, _MONTH_INDEX], how="inner")

    @cached_property
    def counted(self) -> pd.DataFrame:
        """Medical and pharmacy rows counted as for cost.pmpm (allowed and paid cents)."""
        medical = self.medical[[*_WHO, _MONTH_INDEX]].assign(
            **{
                _ALLOWED: self.medical_cents("allowed_amount"),
                _PAID: self.medical_cents("paid_amount"),
            }
        )
        pharmacy = self.pharmacy[[*_WHO, _MONTH_INDEX]].assign(
            **{
                _ALLOWED: self.pharmacy_cents("allowed_amount"),
                _PAID: self.pharmacy_cents("paid_amount"),
            }
        )
        return self.attribute(pd.concat([medical, pharmacy], ignore_index=True))

    def counted_by_category(self) -> pd.DataFrame:
        medical = self.medical
        inside = _between(medical[_MONTH_INDEX], self.low, self.high)
        lines = medical[inside]
        fields = pd.DataFrame({name: self.field(lines, name) for name in _RULE_FIELDS})
        rows = (
            lines[[*_WHO, _MONTH_INDEX]]
            .assign(
                **{
                    _ALLOWED: self.medical_cents("allowed_amount")[inside],
                    _PAID: self.medical_cents("paid_amount")[inside],
                }
            )
            .join(_categories_of_distinct(fields))
        )
        fills = self.pharmacy
        rows_rx = fills[[*_WHO, _MONTH_INDEX]].assign(
            **{
                _ALLOWED: self.pharmacy_cents("allowed_amount"),
                _PAID: self.pharmacy_cents("paid_amount"),
            }
        )
        rows_rx = rows_rx.join(_pharmacy_categories(rows_rx))
        return self.attribute(pd.concat([rows, rows_rx], ignore_index=True))

    @cached_property
    def last_month(self) -> pd.DataFrame:
        """Members enrolled in the period's last month, with that month's attributes."""
        return self.enrolled[(self.enrolled[_MONTH_INDEX] == self.high).to_numpy(dtype=bool)]

    def ages_at_end(self, members: pd.DataFrame) -> pd.Series:
        end = self.period.end_date
        return _ages(members[_BIRTH], end.year, end.month, end.day)

    # --- medical

    @cached_property
    def medical(self) -> pd.DataFrame:
        """Every medical row of every carrier (the same order as :meth:`medical_cents`); a
        frame derived from it keeps its row labels, which :meth:`field` reads by."""
        return self.each(_medical, "medical_claims")

    @cached_property
    def _fields(self) -> dict[str, pd.Series]:
        return {}

    def field(self, rows: pd.DataFrame, name: str) -> pd.Series:
        """Column ``name`` of the medical table for ``rows`` (a frame derived from
        :attr:`medical`); codes as strings, dates as dates, missing when a carrier lacks it."""
        if name not in self._fields:
            parts = [
                _medical_field(tables["medical_claims"].reset_index(drop=True), name)
                for tables in self.tables.values()
            ]
            self._fields[name] = pd.concat(parts, ignore_index=True)
        return self._fields[name].iloc[rows.index.to_numpy()].set_axis(rows.index)

    @cached_property
    def final_rows(self) -> pd.DataFrame:
        """The final rows of every medical line: those of its greatest version (all of them
        when several rows share it)."""
        medical = self.medical
        claim = self.field(medical, "claim_id")
        line = (
            pd.DataFrame({"c": medical[_CARRIER], "i": claim, "l": medical["claim_line"]})
            .groupby(["c", "i", "l"], sort=False, dropna=False, observed=True)
            .ngroup()
        )
        ordered = medical.assign(_line=line).sort_values(
            ["_line", "_version", _ROW], kind="mergesort"
        )
        greatest = ordered.groupby("_line", sort=False)["_version"].transform("max")
        return ordered[(ordered["_version"] == greatest).to_numpy(dtype=bool)]

    @cached_property
    def final_action(self) -> pd.DataFrame:
        final = self.final_rows
        return final[final["claim_status"].isin(_FINAL_ACTION).to_numpy(dtype=bool)]

    def final_action_in_period(self) -> pd.DataFrame:
        lines = self.final_action
        return lines[_between(lines[_MONTH_INDEX], self.low, self.high)]

    @cached_property
    def stays(self) -> pd.DataFrame:
        """Acute stays of every member: member, first and last day numbers, days."""
        lines = self.final_action
        acute = (self.field(lines, "claim_type") == "institutional") & self.field(
            lines, "bill_type"
        ).str.startswith(INPATIENT_BILL_TYPE, na=False)
        lines = lines[acute.to_numpy(dtype=bool, na_value=False)]
        start = _day_numbers(self.field(lines, "admission_date").fillna(lines["_start"]))
        end = _day_numbers(
            self.field(lines, "discharge_date").fillna(self.field(lines, "claim_end_date"))
        )
        spans = pd.DataFrame(
            {
                _MEMBER: lines[_MEMBER].to_numpy(),
                "_facility": self.field(lines, "facility_npi").fillna("\x00").to_numpy(),
                "_from": start.to_numpy(),
                "_to": end.fillna(start).to_numpy(),
            }
        ).dropna(subset=["_from"])
        spans = spans.astype({"_from": "int64", "_to": "int64"})
        group = [*_WHO, "_facility"]
        spans = spans.sort_values([*group, "_from"], kind="mergesort").reset_index(drop=True)
        reach = spans.groupby(group, sort=False)["_to"].cummax()
        previous = reach.groupby([spans[c] for c in group], sort=False).shift(1)
        new_stay = previous.isna() | (spans["_from"] > previous + 1)
        spans["_stay"] = new_stay.to_numpy(dtype=bool).cumsum()
        stays = spans.groupby("_stay", sort=False).agg(
            **{
                _MEMBER: (_MEMBER, "first"),
                "_from": ("_from", "min"),
                "_to": ("_to", "max"),
            }
        )
        stays["_days"] = np.maximum(stays["_to"] - stays["_from"], 1)
        return stays.reset_index(drop=True)

    # --- pharmacy

    @cached_property
    def pharmacy(self) -> pd.DataFrame:
        """Every pharmacy row of every carrier (the same order as :meth:`pharmacy_cents`)."""
        return self.each(_pharmacy, "pharmacy_claims")

    @cached_property
    def kept_fills(self) -> pd.DataFrame:
        """Final-action fills, one row each: the least member_id and fill month of its rows,
        the greatest drug class (of those present) and days supply, generic when a row is."""
        rows = self.pharmacy
        voided = (
            rows["claim_status"]
            .isin(_VOIDING)
            .groupby([rows[_CARRIER], rows["claim_id"]], sort=False, dropna=False, observed=True)
            .transform("any")
        )
        kept = rows[~voided.to_numpy(dtype=bool)]
        keys = [_CARRIER, "claim_id"]
        # The row of the least member id stands for the fill (its member and row number).
        first = kept.sort_values(
            [*keys, "_member_text"], kind="mergesort", na_position="last"
        ).drop_duplicates(keys, keep="first")
        grouped = kept.groupby(keys, sort=False, dropna=False, observed=True)
        profile = grouped.agg(
            **{
                _MONTH_INDEX: (_MONTH_INDEX, "min"),
                "_drug_class_code": ("_drug_class_code", "max"),
                "_generic": ("_generic", "any"),
                "_days_supply": ("_days_supply", "max"),
            }
        ).reset_index()
        fills = first.drop(
            columns=[_MONTH_INDEX, "_drug_class_code", "_generic", "_days_supply"]
        ).merge(profile, on=keys, how="left", validate="one_to_one")
        fills[Dimension.DRUG_CLASS.value] = _dimension_text(fills["_drug_class_code"])
        return fills

    def fills_in_period(self) -> pd.DataFrame:
        fills = self.kept_fills
        return fills[_between(fills[_MONTH_INDEX], self.low, self.high)]


# ---------------------------------------------------------------------------------------------
# Facts: per metric, the tables its statistics are counted from


_Facts = dict[str, pd.DataFrame]
ENROLLED, CLAIMS, ROWS, FILLS, STAYS, VISITS, PEOPLE, LINES, REBATES, CONTROLS = (
    "enrolled",
    "claims",
    "rows",
    "fills",
    "stays",
    "visits",
    "people",
    "lines",
    "rebates",
    "controls",
)
#: The entry of a carrier's tables holding its declared control totals.
CONTROL_TOTALS = "control_totals"
_CONTROLLED = {"medical_claims": "medical", "pharmacy_claims": "pharmacy"}


def read_control_totals(path: Path) -> pd.DataFrame:
    """A carrier's control totals file as a frame: table, month (``YYYY-MM``), claims and
    paid cents (``paid`` is exact decimal dollars, ``paid_cents`` integer cents)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    rows = []
    for table, entries in data.items():
        for entry in entries:
            if "paid_cents" in entry:
                paid = int(entry["paid_cents"])
            else:
                paid = int(Decimal(str(entry["paid"])) * 100)
            rows.append((table, str(entry["month"]), int(entry["claims"]), paid))
    return pd.DataFrame(rows, columns=["table", "month", "claims", "paid_cents"]).astype(
        {"claims": "int64", "paid_cents": "int64"}
    )


def _enrollment_facts(u: _Union) -> _Facts:
    return {ENROLLED: u.enrolled}


def _cost_facts(u: _Union) -> _Facts:
    return {ENROLLED: u.enrolled, CLAIMS: u.counted}


def _category_facts(u: _Union) -> _Facts:
    return {ENROLLED: u.enrolled, CLAIMS: u.counted_by_category()}


def _churn_facts(u: _Union) -> _Facts:
    around = _member_months(u.spans, u.low - 1, u.high + 1)
    enrolled = pd.MultiIndex.from_frame(around[[*_WHO, _MONTH_INDEX]])
    months = around[_between(around[_MONTH_INDEX], u.low, u.high)]
    member, index = months[_MEMBER], months[_MONTH_INDEX]
    death = _month_indexes(months[_DEATH])
    return {
        ENROLLED: months.assign(
            _add=~pd.MultiIndex.from_arrays([member, index - 1]).isin(enrolled),
            _term=~pd.MultiIndex.from_arrays([member, index + 1]).isin(enrolled),
            _death_here=(death == index).to_numpy(dtype=bool, na_value=False),
        )
    }


def _cost_share_facts(u: _Union) -> _Facts:
    medical = u.medical[[*_WHO, _MONTH_INDEX]].assign(
        _deductible=u.medical_cents("deductible_amount", missing_is_zero=True),
        _coinsurance=u.medical_cents("coinsurance_amount", missing_is_zero=True),
        _copay=u.medical_cents("copay_amount", missing_is_zero=True),
        _pharmacy=0,
    )
    pharmacy = u.pharmacy[[*_WHO, _MONTH_INDEX]].assign(
        _deductible=0,
        _coinsurance=0,
        _copay=0,
        _pharmacy=u.pharmacy_cents("member_paid_amount", missing_is_zero=True),
    )
    rows = u.attribute(pd.concat([medical, pharmacy], ignore_index=True))
    rows["_cost_share"] = (
        rows["_deductible"] + rows["_coinsurance"] + rows["_copay"] + rows["_pharmacy"]
    )
    return {ENROLLED: u.enrolled, CLAIMS: rows}


def _person_facts(u: _Union) -> _Facts:
    """One row per member enrolled in the period: latest month's attributes, period allowed."""
    enrolled = u.enrolled.sort_values([*_WHO, _MONTH_INDEX], kind="mergesort")
    people = enrolled.drop_duplicates(_WHO, keep="last").reset_index(drop=True)
    totals = u.counted.groupby(_WHO, sort=False)[_ALLOWED].sum().rename("_total")
    people = people.merge(totals.reset_index(), on=_WHO, how="left")
    people["_total"] = people["_total"].fillna(0).astype("int64")
    for dollars, label in HCC_THRESHOLDS:
        at_least = (people["_total"] >= dollars * 100).to_numpy(dtype=bool)
        people[f"_hcc_{label}"] = at_least
        people[f"_hcc_{label}_cents"] = np.where(at_least, people["_total"], 0)
    return {PEOPLE: people}


def _out_of_network_facts(u: _Union) -> _Facts:
    flags = pd.concat(
        [
            _bools(_optional(t["medical_claims"], "in_network"), "in_network")
            for t in u.tables.values()
        ]
        or [pd.Series(dtype="boolean")],
        ignore_index=True,
    )
    allowed = u.medical_cents("allowed_amount")
    known = np.where(flags.notna().to_numpy(dtype=bool), allowed, 0)
    out = np.where(flags.eq(False).to_numpy(dtype=bool, na_value=False), allowed, 0)
    rows = u.medical[[*_WHO, _MONTH_INDEX]].assign(_known=known, _out=out)
    return {CLAIMS: u.attribute(rows)}


def _inpatient_facts(u: _Union) -> _Facts:
    stays = u.stays
    starts = stays.assign(**{_MONTH_INDEX: _month_indexes(_from_day_numbers(stays["_from"]))})
    return {ENROLLED: u.enrolled, STAYS: u.attribute(starts)}


def _readmission_facts(u: _Union) -> _Facts:
    stays = u.stays
    ends = stays.assign(**{_MONTH_INDEX: _month_indexes(_from_day_numbers(stays["_to"]))})
    index = u.attribute(ends)
    index["_probe"] = index["_to"] + 1
    later = stays[[*_WHO, "_from"]].rename(columns={"_from": "_next"})
    matched = pd.merge_asof(
        index.sort_values("_probe", kind="mergesort"),
        later.sort_values("_next", kind="mergesort"),
        left_on="_probe",
        right_on="_next",
        by=_WHO,
        direction="forward",
    )
    gap = matched["_next"] - matched["_to"]
    matched["_readmitted"] = (gap <= READMISSION_DAYS).to_numpy(dtype=bool, na_value=False)
    return {STAYS: matched}


def _ed_facts(u: _Union) -> _Facts:
    lines = u.final_action_in_period()
    ed = (
        ED_REVENUE.matches(u.field(lines, "revenue_code"))
        | ED_HCPCS.matches(u.field(lines, "hcpcs"))
        | ED_PLACE.matches(u.field(lines, "place_of_service"))
    )
    visits = lines[ed][[*_WHO, _MONTH_INDEX, "_start"]].drop_duplicates([*_WHO, "_start"])
    return {ENROLLED: u.enrolled, VISITS: u.attribute(visits)}


def _office_facts(u: _Union) -> _Facts:
    lines = u.final_action_in_period()
    lines = lines[EM_HCPCS.matches(u.field(lines, "hcpcs"))]
    place = u.field(lines, "place_of_service")
    office = lines[OFFICE_PLACE.matches(place)]
    telehealth = lines[TELEHEALTH_PLACE.matches(place)]
    columns = [*_WHO, _MONTH_INDEX, "_start"]
    visits = pd.concat(
        [
            office[columns].drop_duplicates([*_WHO, "_start"]).assign(_office=True),
            telehealth[columns].drop_duplicates([*_WHO, "_start"]).assign(_office=False),
        ],
        ignore_index=True,
    )
    visits["_telehealth"] = ~visits["_office"].astype(bool)
    return {ENROLLED: u.enrolled, VISITS: u.attribute(visits)}


def _scripts_facts(u: _Union) -> _Facts:
    return {ENROLLED: u.enrolled, FILLS: u.attribute(u.fills_in_period())}


def _fill_facts(u: _Union) -> _Facts:
    return {FILLS: u.attribute(u.fills_in_period())}


def _pharmacy_rows(u: _Union) -> pd.DataFrame:
    return u.pharmacy.assign(
        **{_ALLOWED: u.pharmacy_cents("allowed_amount"), _PAID: u.pharmacy_cents("paid_amount")}
    )


def _specialty_facts(u: _Union) -> _Facts:
    rows = _pharmacy_rows(u)
    by_fill = rows.groupby([_CARRIER, "claim_id"], sort=False, dropna=False, observed=True)
    specialty = np.array(by_fill["_specialty"].transform("any").to_numpy(dtype=bool))
    threshold = u.parameters.get("cost_per_30_days", 0.0)
    if threshold > 0:
        # Exact: net cents × 30 × q ≥ p × days supply, where p/q = threshold dollars × 100.
        per_30 = Fraction(Decimal(repr(float(threshold)))) * 100
        net = by_fill[_ALLOWED].transform("sum").to_numpy(dtype=np.int64).astype(object)
        days = by_fill["_days_supply"].transform("max").to_numpy(dtype=np.int64)
        costly = net * 30 * per_30.denominator >= days.astype(object) * per_30.numerator
        specialty |= np.asarray(costly, dtype=bool) & (days > 0)
    return {ROWS: u.attribute(rows.assign(_is_specialty=specialty))}


def _spend_by_class_facts(u: _Union) -> _Facts:
    return {ROWS: u.attribute(_pharmacy_rows(u)), FILLS: u.attribute(u.fills_in_period())}


def _rebates(table: pd.DataFrame) -> pd.DataFrame:
    """One carrier's rebate rows: quarter (``YYYYQn``; missing when unreadable), class, cents."""
    parts = _codes(table["quarter"]).str.strip().str.upper().str.extract(_QUARTER)
    return pd.DataFrame(
        {
            Dimension.QUARTER.value: (parts[0] + "Q" + parts[1]).where(parts[0].notna()),
            Dimension.YEAR.value: parts[0],
            Dimension.DRUG_CLASS.value: _dimension_text(_optional(table, "drug_class")),
            "_rebate": _cents_or_zero(table, "rebate_amount"),
        }
    )


def _rebate_facts(u: _Union) -> _Facts:
    quarters = {m.quarter() for m in u.period.months()}
    frames = [
        _rebates(tables["rebates"].reset_index(drop=True)).assign(**{_CARRIER: carrier})
        for carrier, tables in u.tables.items()
        if "rebates" in tables
    ]
    columns = [_CARRIER, Dimension.QUARTER.value, Dimension.YEAR.value, Dimension.DRUG_CLASS.value]
    rebates = pd.concat(
        [
            pd.DataFrame(
                {c: pd.Series(dtype="str") for c in columns} | {"_rebate": pd.Series(dtype="int64")}
            ),
            *frames,
        ],
        ignore_index=True,
    )
    rebates = rebates[
        rebates[Dimension.QUARTER.value].isin(quarters).to_numpy(dtype=bool, na_value=False)
    ]
    rebates = rebates.astype({c: "str" for c in columns} | {"_rebate": "int64"})
    return {ROWS: u.attribute(_pharmacy_rows(u)), REBATES: rebates}


def _measured(people: pd.DataFrame, eligible: np.ndarray, done: pd.DataFrame) -> pd.DataFrame:
    """The eligible people, with ``_done`` when they are among ``done`` (carrier, member)."""
    members = people[eligible]
    hit = pd.MultiIndex.from_frame(members[_WHO]).isin(pd.MultiIndex.from_frame(done[_WHO]))
    return members.assign(_done=np.asarray(hit, dtype=bool))


def _members_in(people: pd.DataFrame, chosen: pd.DataFrame) -> np.ndarray:
    return np.asarray(
        pd.MultiIndex.from_frame(people[_WHO]).isin(pd.MultiIndex.from_frame(chosen[_WHO])),
        dtype=bool,
    )


def _breast_cancer_facts(u: _Union) -> _Facts:
    people = u.last_month
    months_enrolled = u.enrolled.groupby(_WHO, sort=False).size().rename("_months")
    people = people.merge(months_enrolled.reset_index(), on=_WHO, how="left")
    eligible = (
        (people[Dimension.SEX.value] == "F")
        & u.ages_at_end(people).between(50, 74)
        & (people["_months"] == len(u.period.months()))
    ).to_numpy(dtype=bool, na_value=False)
    lines = u.final_action
    window = _between(lines[_MONTH_INDEX], u.high - (SCREENING_MONTHS - 1), u.high)
    lines = lines[window]
    screened = lines[MAMMOGRAM_HCPCS.matches(u.field(lines, "hcpcs"))]
    return {PEOPLE: _measured(people, eligible, screened)}


def _diabetes_facts(u: _Union) -> _Facts:
    lines = u.final_action_in_period()
    dx = np.zeros(len(lines), dtype=bool)
    for name in _DX:
        dx |= (
            u.field(lines, name)
            .str.startswith(DIABETES_DX_PREFIXES, na=False)
            .to_numpy(dtype=bool, na_value=False)
        )
    bill_type = u.field(lines, "bill_type")
    inpatient = bill_type.str.startswith(INPATIENT_BILL_TYPE, na=False).to_numpy(
        dtype=bool, na_value=False
    )
    with_inpatient = lines[dx & inpatient][_WHO]
    outpatient_days = lines[dx & ~inpatient].drop_duplicates([*_WHO, "_start"])
    per_member = outpatient_days.groupby(_WHO, sort=False).size()
    with_outpatient = per_member[per_member >= 2].index.to_frame(index=False)
    diabetic = pd.concat([with_inpatient, with_outpatient], ignore_index=True)
    tested = lines[HBA1C_HCPCS.matches(u.field(lines, "hcpcs"))]
    people = u.last_month
    eligible = u.ages_at_end(people).between(18, 75).to_numpy(dtype=bool, na_value=False)
    eligible &= _members_in(people, diabetic)
    return {PEOPLE: _measured(people, eligible, tested)}


def _statin_facts(u: _Union) -> _Facts:
    fills = u.fills_in_period()
    drug_class = fills[Dimension.DRUG_CLASS.value]
    antidiabetic = fills[(drug_class == ANTIDIABETIC).to_numpy(dtype=bool)]
    per_member = antidiabetic.groupby(_WHO, sort=False)["claim_id"].nunique()
    two_fills = per_member[per_member >= 2].index.to_frame(index=False)
    on_statin = fills[(drug_class == STATIN).to_numpy(dtype=bool)]
    people = u.last_month
    eligible = u.ages_at_end(people).between(40, 75).to_numpy(dtype=bool, na_value=False)
    eligible &= _members_in(people, two_fills)
    return {PEOPLE: _measured(people, eligible, on_statin)}


def _claims_lag_facts(u: _Union) -> _Facts:
    medical = u.medical
    rows = medical[[*_WHO, _MONTH_INDEX]].assign(
        _lag=_month_indexes(u.field(medical, "paid_date")) - medical[_MONTH_INDEX],
        **{_PAID: u.medical_cents("paid_amount")},
    )
    rows = rows[(rows["_lag"] >= 0).to_numpy(dtype=bool, na_value=False)]
    lag = np.minimum(rows["_lag"].to_numpy(dtype=np.int64), LAG_MONTHS)
    paid = rows[_PAID].to_numpy(dtype=np.int64)
    rows = rows.assign(
        **{f"_lag_{k:02d}": np.where(lag == k, paid, 0) for k in range(LAG_MONTHS + 1)}
    )
    return {CLAIMS: u.attribute(rows)}


def _denial_facts(u: _Union) -> _Facts:
    final = u.final_rows
    adjudicated = final["claim_status"].isin(_ADJUDICATED).to_numpy(dtype=bool)
    lines = final[adjudicated]
    charges = u.medical_cents("charge_amount")
    charge = charges[lines.index.to_numpy()]  # final_rows keeps the union's row labels
    denied = (lines["claim_status"] == "denied").to_numpy(dtype=bool)
    rows = lines[[*_WHO, _MONTH_INDEX]].assign(
        _denied=denied, _charge=charge, _denied_charge=np.where(denied, charge, 0)
    )
    return {LINES: u.attribute(rows)}


def _data_quality_facts(u: _Union) -> _Facts:
    enrolled = pd.MultiIndex.from_frame(u.enrolled[[*_WHO, _MONTH_INDEX]])
    medical = u.medical[_between(u.medical[_MONTH_INDEX], u.low, u.high)]

    def invalid(codes: pd.Series, name: str, column: str) -> np.ndarray:
        present = codes.notna() & (codes != "")
        known = codes.isin(_code_list(name, column))
        return np.asarray((present & ~known).to_numpy(dtype=bool, na_value=False), dtype=bool)

    def missing(codes: pd.Series) -> pd.Series:
        return codes.isna() | (codes == "")

    claim_type = u.field(medical, "claim_type")
    place = u.field(medical, "place_of_service")
    missing_fields = (
        ((claim_type == "professional") & missing(place))
        | ((claim_type == "institutional") & missing(u.field(medical, "bill_type")))
    ).to_numpy(dtype=bool, na_value=False)
    medical_rows = medical[[_CARRIER, *_WHO, _MONTH_INDEX]].assign(
        _medical=True,
        _pharmacy=False,
        _invalid_place=invalid(place, "place_of_service.csv", "place_of_service_code"),
        _invalid_revenue=invalid(
            u.field(medical, "revenue_code"), "revenue_center.csv", "revenue_center_code"
        ),
        _invalid_drg=invalid(u.field(medical, "drg"), "ms_drg.csv", "ms_drg_code"),
        _missing_fields=missing_fields,
    )
    pharmacy = u.pharmacy[_between(u.pharmacy[_MONTH_INDEX], u.low, u.high)]
    pharmacy_rows = pharmacy[[_CARRIER, *_WHO, _MONTH_INDEX]].assign(
        _medical=False,
        _pharmacy=True,
        _invalid_place=False,
        _invalid_revenue=False,
        _invalid_drg=False,
        _missing_fields=False,
    )
    rows = pd.concat([medical_rows, pharmacy_rows], ignore_index=True)
    rows = rows.astype({_MONTH_INDEX: "int64"})
    outside = ~pd.MultiIndex.from_frame(rows[[*_WHO, _MONTH_INDEX]]).isin(enrolled)
    calendar = {i: _month_at(i) for i in range(u.low, u.high + 1)}
    index = rows[_MONTH_INDEX]
    rows = rows.assign(
        **{
            Dimension.MONTH.value: index.map({i: str(m) for i, m in calendar.items()}),
            Dimension.QUARTER.value: index.map({i: m.quarter() for i, m in calendar.items()}),
            Dimension.YEAR.value: index.map({i: f"{m.year:04d}" for i, m in calendar.items()}),
        }
    )
    rows["_medical_outside"] = rows["_medical"].to_numpy(dtype=bool) & outside
    rows["_pharmacy_outside"] = rows["_pharmacy"].to_numpy(dtype=bool) & outside
    controlled = _controlled_rows(u, medical, pharmacy)
    rows = rows.assign(**{c: controlled[c].to_numpy() for c in controlled.columns})
    return {ROWS: rows, CONTROLS: _declared(u, calendar)}


def _declared_months(u: _Union) -> set[tuple[str, str, int]]:
    """(carrier, table, month index) of every declared control total."""
    out = set()
    for carrier, tables in u.tables.items():
        totals = tables.get(CONTROL_TOTALS)
        if totals is None:
            continue
        for table, month in zip(totals["table"], totals["month"], strict=True):
            year, number = str(month).split("-")
            out.add((carrier, str(table), _month_index(int(year), int(number))))
    return out


def _controlled_rows(u: _Union, medical: pd.DataFrame, pharmacy: pd.DataFrame) -> pd.DataFrame:
    """Row for row with the data-quality rows (medical, then pharmacy): each row's part of the
    claims (1 on the first row of a member's claim_id in the month) and paid of its table in
    a controlled month."""
    declared = _declared_months(u)
    parts = []
    for table, frame, claim_ids, paid in (
        (
            "medical_claims",
            medical,
            u.field(medical, "claim_id"),
            u.medical_cents("paid_amount")[medical.index.to_numpy()],
        ),
        (
            "pharmacy_claims",
            pharmacy,
            pharmacy["claim_id"],
            u.pharmacy_cents("paid_amount")[pharmacy.index.to_numpy()],
        ),
    ):
        carriers = frame[_CARRIER].astype("str").to_numpy()
        months = frame[_MONTH_INDEX].to_numpy(dtype=np.int64)
        controlled = np.array(
            [(c, table, int(m)) in declared for c, m in zip(carriers, months, strict=True)],
            dtype=bool,
        )
        keys = pd.DataFrame(
            {
                "c": carriers,
                "w": frame[_MEMBER].to_numpy(),
                "m": months,
                "id": claim_ids.astype("str").to_numpy(),
            }
        )
        first = ~keys.duplicated().to_numpy(dtype=bool)
        prefix = _CONTROLLED[table]
        columns = {
            f"_{p}_claims": np.zeros(len(frame), dtype=np.int64) for p in _CONTROLLED.values()
        }
        columns |= {
            f"_{p}_paid": np.zeros(len(frame), dtype=np.int64) for p in _CONTROLLED.values()
        }
        columns[f"_{prefix}_claims"] = (controlled & first).astype(np.int64)
        columns[f"_{prefix}_paid"] = np.where(controlled, np.asarray(paid, dtype=np.int64), 0)
        parts.append(pd.DataFrame(columns))
    return pd.concat(parts, ignore_index=True)


def _declared(u: _Union, calendar: Mapping[int, Month]) -> pd.DataFrame:
    """One row per carrier and declared month of the period: its declared totals."""
    rows = []
    for carrier, tables in u.tables.items():
        totals = tables.get(CONTROL_TOTALS)
        if totals is None:
            continue
        for table, month, claims, paid in totals[
            ["table", "month", "claims", "paid_cents"]
        ].itertuples(index=False):
            year, number = str(month).split("-")
            index = _month_index(int(year), int(number))
            if index not in calendar:
                continue
            prefix = _CONTROLLED[str(table)]
            row = {f"_{p}_{w}": 0 for p in _CONTROLLED.values() for w in ("claims", "paid")}
            row[f"_{prefix}_claims"], row[f"_{prefix}_paid"] = int(claims), int(paid)
            m = calendar[index]
            rows.append(
                {
                    _CARRIER: carrier,
                    Dimension.MONTH.value: str(m),
                    Dimension.QUARTER.value: m.quarter(),
                    Dimension.YEAR.value: f"{m.year:04d}",
                    **row,
                }
            )
    columns = [_CARRIER, *(d.value for d in (Dimension.MONTH, Dimension.QUARTER, Dimension.YEAR))]
    values = [f"_{p}_{w}" for p in _CONTROLLED.values() for w in ("claims", "paid")]
    frame = pd.DataFrame(rows, columns=[*columns, *values])
    return frame.astype({c: "str" for c in columns} | {c: "int64" for c in values})


# ---------------------------------------------------------------------------------------------
# Statistics and the metric table


_How = Literal["rows", "members", "sum", "histogram"]


@dataclass(frozen=True)
class _Stat:
    """One statistic: counted over the rows of one fact table (those where ``where`` holds)."""

    name: str
    facts: str
    how: _How  # rows: number of rows; members: distinct members; sum / histogram of ``column``
    column: str | None = None
    where: str | None = None


@dataclass(frozen=True)
class _Metric:
    statistics: tuple[_Stat, ...]
    dimensions: frozenset[Dimension]
    facts: Callable[[_Union], _Facts]
    one_of: frozenset[Dimension] = frozenset()
    parameters: tuple[tuple[str, float], ...] = ()


def _rows_of(name: str, facts: str, where: str | None = None) -> _Stat:
    return _Stat(name, facts, "rows", where=where)


def _members_of(name: str, facts: str, where: str | None = None) -> _Stat:
    return _Stat(name, facts, "members", where=where)


def _sum_of(name: str, facts: str, column: str, where: str | None = None) -> _Stat:
    return _Stat(name, facts, "sum", column=column, where=where)


_MEMBER_DIMS = frozenset(_MEMBER_MONTH_DIMS)
_PERSON_DIMS = _MEMBER_DIMS - {Dimension.MONTH, Dimension.QUARTER}
_ENROLLED_STATS = (_rows_of("member_months", ENROLLED), _members_of("members", ENROLLED))
_COST_STATS = (
    *_ENROLLED_STATS,
    _members_of("claimants", CLAIMS),
    _sum_of("allowed_cents", CLAIMS, _ALLOWED),
    _sum_of("paid_cents", CLAIMS, _PAID),
)
_FILL_STATS = (_members_of("fill_members", FILLS), _rows_of("fills", FILLS))

METRICS: dict[str, _Metric] = {
    "enrollment.member_months": _Metric(_ENROLLED_STATS, _MEMBER_DIMS, _enrollment_facts),
    "enrollment.churn": _Metric(
        (
            *_ENROLLED_STATS,
            _members_of("adds", ENROLLED, "_add"),
            _members_of("terms", ENROLLED, "_term"),
            _members_of("deaths", ENROLLED, "_death_here"),
        ),
        _MEMBER_DIMS,
        _churn_facts,
    ),
    "cost.pmpm": _Metric(_COST_STATS, _MEMBER_DIMS, _cost_facts),
    "cost.pmpm_by_service_category": _Metric(
        _COST_STATS, _MEMBER_DIMS | _CATEGORY_DIMS, _category_facts, one_of=_CATEGORY_DIMS
    ),
    "cost.member_cost_share_pmpm": _Metric(
        (
            *_ENROLLED_STATS,
            _members_of("claimants", CLAIMS),
            _sum_of("cost_share_cents", CLAIMS, "_cost_share"),
            _sum_of("deductible_cents", CLAIMS, "_deductible"),
            _sum_of("coinsurance_cents", CLAIMS, "_coinsurance"),
            _sum_of("copay_cents", CLAIMS, "_copay"),
            _sum_of("pharmacy_member_paid_cents", CLAIMS, "_pharmacy"),
        ),
        _MEMBER_DIMS,
        _cost_share_facts,
    ),
    "cost.distribution": _Metric(
        (
            _members_of("members", PEOPLE),
            _sum_of("allowed_cents", PEOPLE, "_total"),
            _Stat("allowed_histogram", PEOPLE, "histogram", column="_total"),
        ),
        _PERSON_DIMS,
        _person_facts,
    ),
    "cost.high_cost_claimants": _Metric(
        (
            _members_of("members", PEOPLE),
            _sum_of("allowed_cents", PEOPLE, "_total"),
            *(
                stat
                for _, label in HCC_THRESHOLDS
                for stat in (
                    _members_of(f"hcc_{label}", PEOPLE, f"_hcc_{label}"),
                    _sum_of(f"hcc_{label}_allowed_cents", PEOPLE, f"_hcc_{label}_cents"),
                )
            ),
        ),
        _PERSON_DIMS,
        _person_facts,
    ),
    "cost.out_of_network_share": _Metric(
        (
            _members_of("claimants", CLAIMS),
            _sum_of("out_of_network_allowed_cents", CLAIMS, "_out"),
            _sum_of("known_network_allowed_cents", CLAIMS, "_known"),
        ),
        _MEMBER_DIMS,
        _out_of_network_facts,
    ),
    "util.inpatient": _Metric(
        (
            *_ENROLLED_STATS,
            _members_of("stay_members", STAYS),
            _rows_of("stays", STAYS),
            _sum_of("days", STAYS, "_days"),
        ),
        _MEMBER_DIMS,
        _inpatient_facts,
    ),
    "util.ed_visits": _Metric(
        (*_ENROLLED_STATS, _members_of("visit_members", VISITS), _rows_of("visits", VISITS)),
        _MEMBER_DIMS,
        _ed_facts,
    ),
    "util.office_visits": _Metric(
        (
            *_ENROLLED_STATS,
            _members_of("visit_members", VISITS),
            _rows_of("office_visits", VISITS, "_office"),
            _rows_of("telehealth_visits", VISITS, "_telehealth"),
        ),
        _MEMBER_DIMS,
        _office_facts,
    ),
    "util.scripts": _Metric(
        (*_ENROLLED_STATS, *_FILL_STATS, _sum_of("days_supply", FILLS, "_days_supply")),
        _MEMBER_DIMS,
        _scripts_facts,
    ),
    "outcome.readmission_30d": _Metric(
        (
            _members_of("stay_members", STAYS),
            _rows_of("index_stays", STAYS),
            _rows_of("readmissions", STAYS, "_readmitted"),
        ),
        _MEMBER_DIMS,
        _readmission_facts,
    ),
    "rx.generic_dispensing_rate": _Metric(
        (*_FILL_STATS, _rows_of("generic_fills", FILLS, "_generic")),
        _MEMBER_DIMS | {Dimension.DRUG_CLASS},
        _fill_facts,
    ),
    "rx.specialty_share": _Metric(
        (
            _members_of("fill_members", ROWS),
            _members_of("specialty_members", ROWS, "_is_specialty"),
            _sum_of("pharmacy_allowed_cents", ROWS, _ALLOWED),
            _sum_of("specialty_allowed_cents", ROWS, _ALLOWED, "_is_specialty"),
        ),
        _MEMBER_DIMS,
        _specialty_facts,
        parameters=(("cost_per_30_days", 0.0),),
    ),
    "rx.spend_by_class": _Metric(
        (
            _members_of("fill_members", ROWS),
            _sum_of("allowed_cents", ROWS, _ALLOWED),
            _sum_of("paid_cents", ROWS, _PAID),
            _rows_of("fills", FILLS),
        ),
        _MEMBER_DIMS | {Dimension.DRUG_CLASS},
        _spend_by_class_facts,
    ),
    "rx.rebate_share": _Metric(
        (
            _members_of("fill_members", ROWS),
            _sum_of("pharmacy_allowed_cents", ROWS, _ALLOWED),
            _sum_of("rebate_cents", REBATES, "_rebate"),
        ),
        frozenset({Dimension.CARRIER, Dimension.QUARTER, Dimension.YEAR, Dimension.DRUG_CLASS}),
        _rebate_facts,
    ),
    "quality.breast_cancer_screening": _Metric(
        (_members_of("eligible", PEOPLE), _members_of("screened", PEOPLE, "_done")),
        _PERSON_DIMS,
        _breast_cancer_facts,
    ),
    "quality.diabetes_hba1c_testing": _Metric(
        (_members_of("eligible", PEOPLE), _members_of("tested", PEOPLE, "_done")),
        _PERSON_DIMS,
        _diabetes_facts,
    ),
    "quality.statin_use_diabetes": _Metric(
        (_members_of("eligible", PEOPLE), _members_of("on_statin", PEOPLE, "_done")),
        _PERSON_DIMS,
        _statin_facts,
    ),
    "ops.claims_lag": _Metric(
        (
            _members_of("claimants", CLAIMS),
            *(
                _sum_of(f"paid_lag_{k:02d}_cents", CLAIMS, f"_lag_{k:02d}")
                for k in range(LAG_MONTHS + 1)
            ),
        ),
        _MEMBER_DIMS,
        _claims_lag_facts,
    ),
    "ops.denial_rate": _Metric(
        (
            _members_of("claimants", LINES),
            _rows_of("lines", LINES),
            _rows_of("denied_lines", LINES, "_denied"),
            _sum_of("charge_cents", LINES, "_charge"),
            _sum_of("denied_charge_cents", LINES, "_denied_charge"),
        ),
        _MEMBER_DIMS,
        _denial_facts,
    ),
    "ops.data_quality": _Metric(
        (
            _members_of("claimants", ROWS),
            _rows_of("medical_rows", ROWS, "_medical"),
            _rows_of("pharmacy_rows", ROWS, "_pharmacy"),
            _rows_of("medical_outside_enrollment", ROWS, "_medical_outside"),
            _rows_of("pharmacy_outside_enrollment", ROWS, "_pharmacy_outside"),
            _rows_of("invalid_place_of_service", ROWS, "_invalid_place"),
            _rows_of("invalid_revenue_code", ROWS, "_invalid_revenue"),
            _rows_of("invalid_drg", ROWS, "_invalid_drg"),
            _rows_of("missing_fields", ROWS, "_missing_fields"),
            *(
                stat
                for prefix in _CONTROLLED.values()
                for stat in (
                    _sum_of(f"{prefix}_claims_in_data", ROWS, f"_{prefix}_claims"),
                    _sum_of(f"{prefix}_claims_declared", CONTROLS, f"_{prefix}_claims"),
                    _sum_of(f"{prefix}_paid_in_data_cents", ROWS, f"_{prefix}_paid"),
                    _sum_of(f"{prefix}_paid_declared_cents", CONTROLS, f"_{prefix}_paid"),
                )
            ),
        ),
        frozenset({Dimension.CARRIER, Dimension.MONTH, Dimension.QUARTER, Dimension.YEAR}),
        _data_quality_facts,
    ),
}


# ---------------------------------------------------------------------------------------------
# Cells


def _keep(frame: pd.DataFrame, filters: Mapping[Dimension, Sequence[str]]) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for dimension, values in filters.items():
        if dimension.value in frame:
            mask &= frame[dimension.value].isin(set(values)).to_numpy(dtype=bool, na_value=False)
    return frame[mask]


def _bins(totals: np.ndarray) -> np.ndarray:
    """Histogram bin of each total in cents (as :func:`fedoversight.histogram.bin_index`)."""
    edges = np.asarray(EDGES_CENTS, dtype=np.int64)
    above = 1 + np.searchsorted(edges, totals, side="right")
    return np.asarray(np.where(totals <= 0, 0, above), dtype=np.int64)


def _histograms(frame: pd.DataFrame, keys: list[str], column: str) -> pd.Series:
    totals = frame[column].to_numpy(dtype=np.int64)
    binned = frame[keys].assign(_bin=_bins(totals), _cents=totals)
    grouped = binned.groupby([*keys, "_bin"], sort=False, observed=True)["_cents"].agg(
        ["size", "sum"]
    )
    counts: dict[tuple[object, ...], list[int]] = {}
    sums: dict[tuple[object, ...], list[int]] = {}
    for key, size, total in zip(grouped.index, grouped["size"], grouped["sum"], strict=True):
        cell, b = tuple(key[:-1]), int(key[-1])
        counts.setdefault(cell, [0] * N_BINS)[b] = int(size)
        sums.setdefault(cell, [0] * N_BINS)[b] = int(total)
    index = (
        pd.MultiIndex.from_tuples(list(counts), names=keys)
        if len(keys) > 1
        else pd.Index([cell[0] for cell in counts], name=keys[0])
    )
    values = [Histogram(tuple(counts[c]), tuple(sums[c])) for c in counts]
    return pd.Series(values, index=index, dtype=object)


def _statistic(stat: _Stat, frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """The statistic for every cell of ``frame`` (zero where no row meets ``where``)."""
    mask = (
        np.ones(len(frame), dtype=bool)
        if stat.where is None
        else frame[stat.where].to_numpy(dtype=bool, na_value=False)
    )
    if stat.how == "rows":
        hits = frame.assign(_hit=mask.astype(np.int64))
        return hits.groupby(keys, sort=False, observed=True)["_hit"].sum()
    if stat.how == "members":
        people = [*keys, _MEMBER]
        anyone = frame.assign(_hit=mask).groupby(people, sort=False, observed=True)["_hit"].any()
        return anyone.astype(np.int64).groupby(level=keys, sort=False, observed=True).sum()
    assert stat.column is not None
    if stat.how == "sum":
        values = np.where(mask, frame[stat.column].to_numpy(dtype=np.int64), 0)
        return frame.assign(_value=values).groupby(keys, sort=False, observed=True)["_value"].sum()
    return _histograms(frame, keys, stat.column)


def _per_member(stat: _Stat, frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Each member's contribution to ``stat`` in each cell (index: keys and member)."""
    mask = (
        np.ones(len(frame), dtype=bool)
        if stat.where is None
        else frame[stat.where].to_numpy(dtype=bool, na_value=False)
    )
    people = [*keys, _MEMBER]
    if stat.how == "rows":
        values = mask.astype(np.int64)
    elif stat.how == "members":
        hits = frame.assign(_hit=mask).groupby(people, sort=False, observed=True)["_hit"].any()
        return hits.astype(np.int64)
    else:
        assert stat.column is not None
        values = np.where(mask, frame[stat.column].to_numpy(dtype=np.int64), 0)
    return frame.assign(_v=values).groupby(people, sort=False, observed=True)["_v"].sum()


def _record_key(secret: str, member_id: str) -> str:
    """The catalogue-independent reading of the node's record key: the first 12 hex digits
    of MD5 over the secret followed by the member id."""
    return hashlib.md5((secret + member_id).encode()).hexdigest()[:12]


def _disclosure(
    spec: _Metric,
    metric: str,
    facts: _Facts,
    keys: list[str],
    key_of: Callable[[pd.Index], pd.Series] | None,
    clamps: Mapping[str, int],
) -> list[tuple[list[str], pd.DataFrame]]:
    """Per cell of ``keys``, what disclosure control needs of each statistic, from its
    per-member contributions: ``__support`` (members contributing non-zero), ``__top`` (the
    largest absolute contribution, of one row for a total no member contributes to),
    ``__rest`` (members contributing to whole less part, for a declared part), and with
    ``key_of`` (member codes -> record keys) ``__kmin`` and ``__kmax`` of the support. As
    for the statistics, a fact table without some of the keys gives its columns to every cell
    of its other keys: the result is a frame per set of keys present."""
    declared = {s.name: s for s in get_metric(metric).statistics}
    frames: dict[tuple[str, ...], list[pd.DataFrame]] = {}
    per_member: dict[str, pd.Series] = {}
    for stat in spec.statistics:
        frame = facts[stat.facts]
        present = [k for k in keys if k in frame.columns]
        if frame.empty:
            continue  # nothing counts: the columns stay empty
        keys_of_stat = tuple(present)
        mine = declared[stat.name]
        if stat.how == "histogram":
            continue  # see _histogram_disclosure
        if mine.mirrors is not None:
            # A declared total rests on the people of the data's total it mirrors.
            (mirrored,) = [s for s in spec.statistics if s.name == mine.mirrors]
            frame = facts[mirrored.facts]
            present = [k for k in keys if k in frame.columns]
            keys_of_stat = tuple(present)
            if frame.empty:
                continue
            own = _statistic(stat, facts[stat.facts], present) if stat.name in clamps else None
            stat_name, stat = stat.name, mirrored
        else:
            stat_name, own = stat.name, None
        if not mine.by_members:
            assert stat.column is not None
            top = (
                frame.assign(_v=frame[stat.column].abs())
                .groupby(present, sort=False, observed=True)["_v"]
                .max()
            )
            frames.setdefault(keys_of_stat, []).append(pd.DataFrame({f"{stat_name}__top": top}))
            continue
        contributions = _per_member(stat, frame, present)
        per_member[stat.name] = contributions
        nonzero = contributions[contributions != 0]
        columns: dict[str, pd.Series] = {
            f"{stat_name}__support": nonzero.groupby(
                level=present, sort=False, observed=True
            ).size(),
        }
        if mine.kind.magnitude:
            columns[f"{stat_name}__top"] = (
                contributions.abs().groupby(level=present, sort=False, observed=True).max()
            )
        if own is not None:
            columns[f"{stat_name}__clamped"] = own  # nobody's data is in it to clamp
        elif stat.name in clamps:
            bound = clamps[stat.name]
            columns[f"{stat_name}__clamped"] = (
                contributions.clip(-bound, bound)
                .groupby(level=present, sort=False, observed=True)
                .sum()
            )
        if key_of is not None:
            record_keys = key_of(nonzero.index.get_level_values(_MEMBER))
            record_keys.index = nonzero.index
            grouped = record_keys.groupby(level=present, sort=False, observed=True)
            columns[f"{stat_name}__kmin"] = grouped.min()
            columns[f"{stat_name}__kmax"] = grouped.max()
        frames.setdefault(keys_of_stat, []).append(pd.DataFrame(columns))
    for stat in spec.statistics:
        part = declared[stat.name]
        if part.part_of is None or part.kind is StatKind.MEMBERS or stat.name not in per_member:
            continue  # the rest of a MEMBERS part is whole less part
        whole = per_member[part.part_of]
        rest = whole.sub(per_member[stat.name], fill_value=0)
        rest = rest[rest != 0]
        present = [k for k in keys if k in rest.index.names]
        frames.setdefault(tuple(present), []).append(
            pd.DataFrame(
                {
                    f"{stat.name}__rest": rest.groupby(
                        level=present, sort=False, observed=True
                    ).size()
                }
            )
        )
    return [(list(k), pd.concat(f, axis=1).reset_index()) for k, f in frames.items()]


def _cells(spec: _Metric, facts: _Facts, keys: list[str]) -> pd.DataFrame:
    """Statistics per cell of ``keys``. A fact table without some of the keys (member months
    have no service category) gives its statistics to every cell of its other keys."""
    complete: list[pd.DataFrame] = []
    partial: list[tuple[list[str], pd.DataFrame]] = []
    for name in dict.fromkeys(s.facts for s in spec.statistics):
        frame = facts[name]
        present = [k for k in keys if k in frame.columns]
        mine = [s for s in spec.statistics if s.facts == name]
        if frame.empty:
            stats = pd.DataFrame(
                {k: pd.Series(dtype="str") for k in present}
                | {s.name: pd.Series(dtype="int64") for s in mine}
            )
        else:
            stats = pd.DataFrame({s.name: _statistic(s, frame, present) for s in mine})
            stats = stats.reset_index()
        if present == keys:
            complete.append(stats)
        else:
            partial.append((present, stats))
    assert complete, "every metric has a fact table with every key"
    cells = complete[0]
    for stats in complete[1:]:
        cells = cells.merge(stats, on=keys, how="outer")
    for present, stats in partial:
        cells = cells.merge(stats, on=present, how="left")
    return cells


def _category_universe(dimension: Dimension) -> list[str]:
    """Every category of a level: those of the shipped list, other and pharmacy."""
    column = (
        "service_category_1" if dimension is Dimension.SERVICE_CATEGORY else "service_category_2"
    )
    names = set(_read_codelist("service_categories.csv")[column]) | {OTHER, PHARMACY}
    return sorted(names)


def _every_category(
    spec: _Metric,
    out: pd.DataFrame,
    keys: list[str],
    facts: list[_Facts],
    filters: Mapping[Dimension, Sequence[str]],
) -> pd.DataFrame:
    """Cells of every category (within the filter) for every cell of the other keys with
    member months: "every category divides the member months of its other keys" — a category
    nobody had a claim in is a cell of zeros over those member months."""
    (dimension,) = [d for d in spec.one_of if d.value in keys]
    wanted = filters.get(dimension)
    universe = [c for c in _category_universe(dimension) if wanted is None or c in wanted]
    others = [k for k in keys if k != dimension.value]
    enrolled = _Metric(
        tuple(s for s in spec.statistics if s.facts == ENROLLED), spec.dimensions, spec.facts
    )
    dens = pd.concat([_cells(enrolled, f, others) for f in facts], ignore_index=True)
    grid = dens.merge(pd.DataFrame({dimension.value: universe}), how="cross")
    claims = [s.name for s in spec.statistics if s.facts != ENROLLED]
    found = out[[*keys, *claims]]
    for column in keys:
        grid[column] = grid[column].astype("str")
        found = found.assign(**{column: found[column].astype("str")})
    return grid.merge(found, on=keys, how="left")


def compute(
    metric: str,
    tables_by_carrier: Mapping[str, Mapping[str, pd.DataFrame]],
    period: Period,
    group_by: Sequence[Dimension],
    filters: Mapping[Dimension, Sequence[str]] | None = None,
    parameters: Mapping[str, float] | None = None,
    *,
    disclosure: bool = False,
    record_secrets: Mapping[str, str] | None = None,
    clamps: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """The metric's statistics per (scope, cell); see the module docstring for the shape.

    ``parameters`` are the metric's declared parameters (``cost_per_30_days`` of
    rx.specialty_share, 0 when not given); an unknown name or a negative value is refused.
    With ``disclosure``, carrier rows also carry what disclosure control needs of each
    statistic (see :func:`_disclosure`: support, largest contribution, rest; with
    ``record_secrets``, carrier id -> the node's record secret, the support's least and
    greatest record keys; with ``clamps``, statistic -> bound, ``__clamped``: the sum of
    the per-member contributions clipped to the bound); those columns are NaN (None for keys)
    where nothing counts.
    """
    spec = METRICS.get(metric)
    if spec is None:
        raise ValueError(f"the oracle has no metric {metric!r}")
    group_by = tuple(Dimension(d) for d in group_by)
    filters = {Dimension(d): tuple(v) for d, v in (filters or {}).items()}
    if len(set(group_by)) != len(group_by):
        raise ValueError("a dimension is grouped twice")
    for dimension in (*group_by, *filters):
        if dimension not in spec.dimensions:
            raise ValueError(f"{metric} does not accept dimension {dimension}")
    if spec.one_of and len(spec.one_of.intersection(group_by)) != 1:
        raise ValueError(f"{metric} groups by exactly one of {sorted(spec.one_of)}")
    known = dict(spec.parameters)
    for name, value in (parameters or {}).items():
        if name not in known:
            raise ValueError(f"{metric} has no parameter {name!r}")
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"parameter {name} out of range")
    dims = [d.value for d in group_by]
    statistics = [s.name for s in spec.statistics]
    columns = [_SCOPE, *dims, *statistics]
    if not tables_by_carrier:
        return _empty(columns, spec)

    union = _Union(tables_by_carrier, period, {**known, **(parameters or {})})
    facts = {name: _keep(frame, filters) for name, frame in spec.facts(union).items()}
    keys = [_SCOPE, *dims]
    by_carrier = {n: f.assign(**{_SCOPE: f[_CARRIER]}) for n, f in facts.items()}
    program = {n: f.assign(**{_SCOPE: PROGRAM_SCOPE}) for n, f in facts.items()}
    out = pd.concat(
        [_cells(spec, by_carrier, keys), _cells(spec, program, keys)], ignore_index=True
    )
    if spec.one_of:
        out = _every_category(spec, out, keys, [by_carrier, program], filters)
    extra: list[str] = []
    if disclosure:
        key_of = None
        if record_secrets is not None:
            ids, carriers = union.member_ids, list(union.tables)

            def key_of(codes: pd.Index) -> pd.Series:
                return pd.Series(
                    [
                        _record_key(record_secrets[carriers[int(c) >> 32]], ids[int(c)])
                        for c in codes
                    ],
                    dtype=object,
                )

        for column in keys:
            out[column] = out[column].astype("str")
        for present, found in _disclosure(spec, metric, by_carrier, keys, key_of, clamps or {}):
            for column in present:
                found[column] = found[column].astype("str")
            extra += [c for c in found.columns if c not in present]
            out = out.merge(found, on=present, how="left")
    for statistic in spec.statistics:
        if statistic.how == "histogram":
            out[statistic.name] = [
                h if isinstance(h, Histogram) else Histogram.empty() for h in out[statistic.name]
            ]
        else:
            out[statistic.name] = out[statistic.name].fillna(0).astype("int64")
    people = [s.name for s in spec.statistics if s.how == "members"]
    # A cell is people (or rebates or declared totals, which no member makes: a class rebated
    # that nobody filled, a declared month without data).
    rebated = [s.name for s in spec.statistics if s.facts in (REBATES, CONTROLS)]
    kept = (out[people] > 0).any(axis=1) | (out[rebated] != 0).any(axis=1)
    out = out[kept.to_numpy(dtype=bool)][[*columns, *extra]]
    if out.empty:
        return _empty(columns, spec)
    for column in keys:
        out[column] = out[column].astype("str")
    scope_order = {scope: i for i, scope in enumerate([*sorted(tables_by_carrier), PROGRAM_SCOPE])}
    out = out.sort_values(
        keys, key=lambda s: s.map(scope_order) if s.name == _SCOPE else s, kind="mergesort"
    )
    return out.reset_index(drop=True)


def _empty(columns: list[str], spec: _Metric) -> pd.DataFrame:
    kinds = {s.name: s.how for s in spec.statistics}
    return pd.DataFrame(
        {
            c: pd.Series(
                dtype="str" if c not in kinds else "object" if kinds[c] == "histogram" else "int64"
            )
            for c in columns
        }
    )


def member_period_allowed(
    tables_by_carrier: Mapping[str, Mapping[str, pd.DataFrame]], period: Period
) -> pd.Series:
    """Every member's period allowed total in cents (the raw values cost.distribution bins)."""
    people = _person_facts(_Union(tables_by_carrier, period, {}))[PEOPLE]
    return people["_total"].astype("int64")


def expected(
    metric: str,
    carriers: Mapping[str, Path | Mapping[str, pd.DataFrame]],
    period: Period | str,
    by: Sequence[Dimension | str] = (),
    filters: Mapping[Dimension | str, Sequence[str]] | None = None,
    parameters: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """:func:`compute` for a test: ``carriers`` maps carrier id to its data directory (read
    with :func:`load_carrier`) or to its tables already read; ``period`` may be text
    (``"2026-01:2026-03"``) and dimensions their names."""
    tables: dict[str, Mapping[str, pd.DataFrame]] = {}
    for carrier, value in sorted(carriers.items()):
        tables[carrier] = load_carrier(value) if isinstance(value, Path) else value
    span = Period.parse(period) if isinstance(period, str) else period
    return compute(
        metric,
        tables,
        span,
        [Dimension(d) for d in by],
        {Dimension(d): list(v) for d, v in (filters or {}).items()},
        parameters,
    )
