"""The closed set of grouping dimensions and the values each may take.

A group-key or filter value crosses the wire only if it matches its dimension's pattern (or is
one of its closed values), so no free text from a carrier's data can ride along in a key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from fedoversight.errors import InvalidRequestError

#: Shown for a missing or unrecognised value of a dimension.
UNKNOWN = "unknown"


class Dimension(StrEnum):
    CARRIER = "carrier"
    PROGRAM = "program"
    PLAN_CODE = "plan_code"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    AGE_BAND = "age_band"
    SEX = "sex"
    STATE = "state"
    MEDICARE_PRIMARY = "medicare_primary"
    ENROLLEE_TYPE = "enrollee_type"
    SERVICE_CATEGORY = "service_category"
    SERVICE_CATEGORY_2 = "service_category_2"
    DRUG_CLASS = "drug_class"

    @classmethod
    def parse(cls, text: str) -> Dimension:
        try:
            return cls(text.strip())
        except ValueError:
            raise InvalidRequestError(f"unknown dimension {text!r}") from None

    @classmethod
    def parse_list(cls, text: str) -> tuple[Dimension, ...]:
        dims = tuple(cls.parse(p) for p in text.split(",") if p.strip())
        if len(set(dims)) != len(dims):
            raise InvalidRequestError("a dimension is named twice")
        return dims


#: Age bands (age in whole years), as (label, lowest age, highest age or None).
AGE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("0-17", 0, 17),
    ("18-25", 18, 25),
    ("26-44", 26, 44),
    ("45-64", 45, 64),
    ("65+", 65, None),
)

SERVICE_CATEGORIES_1 = (
    "inpatient",
    "outpatient",
    "office-based",
    "ancillary",
    "other",
    "pharmacy",
)


@dataclass(frozen=True)
class ValueRule:
    pattern: re.Pattern[str] | None = None
    closed: frozenset[str] | None = None

    def accepts(self, value: str) -> bool:
        if value == UNKNOWN:
            return True
        if self.closed is not None:
            return value in self.closed
        return bool(self.pattern and self.pattern.fullmatch(value))


def _service_categories_2() -> frozenset[str]:
    from fedoversight.codelists import service_categories

    return frozenset(c.service_category_2 for c in service_categories()) | {"pharmacy"}


_RULES: dict[Dimension, ValueRule] = {
    Dimension.CARRIER: ValueRule(pattern=re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")),
    Dimension.PROGRAM: ValueRule(closed=frozenset({"FEHB", "PSHB"})),
    Dimension.PLAN_CODE: ValueRule(pattern=re.compile(r"[A-Z0-9]{1,8}")),
    Dimension.MONTH: ValueRule(pattern=re.compile(r"\d{4}-(0[1-9]|1[0-2])")),
    Dimension.QUARTER: ValueRule(pattern=re.compile(r"\d{4}Q[1-4]")),
    Dimension.YEAR: ValueRule(pattern=re.compile(r"\d{4}")),
    Dimension.AGE_BAND: ValueRule(closed=frozenset(b[0] for b in AGE_BANDS)),
    Dimension.SEX: ValueRule(closed=frozenset({"F", "M", "U"})),
    Dimension.STATE: ValueRule(pattern=re.compile(r"[A-Z]{2}")),
    Dimension.MEDICARE_PRIMARY: ValueRule(closed=frozenset({"Y", "N"})),
    Dimension.ENROLLEE_TYPE: ValueRule(closed=frozenset({"active", "annuitant", "survivor"})),
    Dimension.SERVICE_CATEGORY: ValueRule(closed=frozenset(SERVICE_CATEGORIES_1)),
    Dimension.SERVICE_CATEGORY_2: ValueRule(),  # closed set filled lazily from the code list
    Dimension.DRUG_CLASS: ValueRule(pattern=re.compile(r"[a-z0-9][a-z0-9 _/-]{0,39}")),
}


#: Dimensions that describe a member month (taken from the enrollment span in force): those of
#: every member-month metric, and the member part of any other key.
MEMBER_DIMENSIONS: frozenset[Dimension] = frozenset(
    {
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
    }
)


def pattern(dimension: Dimension) -> str:
    """The regular expression a value of a pattern-checked dimension matches in full (for
    engines that check values where the data lives)."""
    rule = _RULES[dimension].pattern
    if rule is None:
        raise ValueError(f"{dimension} is a closed set, not a pattern")
    return rule.pattern


def accepts(dimension: Dimension, value: str) -> bool:
    """Whether ``value`` may appear as a key or filter value of ``dimension``."""
    if dimension is Dimension.SERVICE_CATEGORY_2:
        return value == UNKNOWN or value in _service_categories_2()
    return _RULES[dimension].accepts(value)


def check_value(dimension: Dimension, value: str) -> str:
    if not accepts(dimension, value):
        # The value itself is not echoed: it may have come from anywhere.
        raise InvalidRequestError(f"a value of dimension {dimension} is not of its form")
    return value


def age_band(age: int) -> str:
    for label, low, high in AGE_BANDS:
        if age >= low and (high is None or age <= high):
            return label
    return UNKNOWN
