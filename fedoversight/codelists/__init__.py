"""Public code lists shipped with the catalogue (see NOTICE for their origin).

``service_category_rules.csv`` is the declarative definition of service categories: a claim
line matches a rule when every non-empty condition of the rule holds (values in one condition
are alternatives, ``a-b`` is an inclusive range of equal-length codes). Of all the rules a line
matches, the one whose category comes first in the priority order of
``service_categories.csv`` wins; a line that matches none is ``other``. Pharmacy claims are the
``pharmacy`` category at both levels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

OTHER = ("other", "other", "other")


@dataclass(frozen=True)
class ServiceCategory:
    service_category_1: str
    service_category_2: str
    service_category_3: str
    priority: int


@dataclass(frozen=True)
class CodeCondition:
    """Alternatives for one claim field: exact codes and inclusive ranges."""

    codes: tuple[str, ...]
    ranges: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> CodeCondition | None:
        parts = text.split()
        if not parts:
            return None
        codes = tuple(p for p in parts if "-" not in p)
        ranges = tuple(tuple(p.split("-", 1)) for p in parts if "-" in p)
        for low, high in ranges:
            if len(low) != len(high) or low > high:
                raise ValueError(f"bad code range {low}-{high}")
        return cls(codes, ranges)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ServiceCategoryRule:
    category: ServiceCategory
    claim_type: str | None
    bill_type_prefix: tuple[str, ...]
    revenue_code: CodeCondition | None
    place_of_service: CodeCondition | None
    hcpcs: CodeCondition | None
    drg: CodeCondition | None
    drg_type: str | None


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8-sig")
    return list(csv.DictReader(text.splitlines()))


@cache
def service_categories() -> tuple[ServiceCategory, ...]:
    return tuple(
        ServiceCategory(
            r["service_category_1"],
            r["service_category_2"],
            r["service_category_3"],
            int(r["priority"]),
        )
        for r in _rows("service_categories.csv")
    )


PHARMACY = "pharmacy"


@cache
def category_names(level: int) -> tuple[str, ...]:
    """Every category of ``level`` (1 or 2) a claim can fall in: those of the shipped list,
    ``other`` and ``pharmacy``, sorted."""
    names = {
        c.service_category_1 if level == 1 else c.service_category_2 for c in service_categories()
    }
    return tuple(sorted(names | {OTHER[0], PHARMACY}))


@cache
def service_category_rules() -> tuple[ServiceCategoryRule, ...]:
    """Rules in priority order (lowest priority number first)."""
    by_name = {
        (c.service_category_1, c.service_category_2, c.service_category_3): c
        for c in service_categories()
    }
    rules = []
    for r in _rows("service_category_rules.csv"):
        category = by_name[
            (r["service_category_1"], r["service_category_2"], r["service_category_3"])
        ]
        rules.append(
            ServiceCategoryRule(
                category=category,
                claim_type=r["claim_type"] or None,
                bill_type_prefix=tuple(r["bill_type_prefix"].split()),
                revenue_code=CodeCondition.parse(r["revenue_code"]),
                place_of_service=CodeCondition.parse(r["place_of_service"]),
                hcpcs=CodeCondition.parse(r["hcpcs"]),
                drg=CodeCondition.parse(r["drg"]),
                drg_type=r["drg_type"] or None,
            )
        )
    return tuple(sorted(rules, key=lambda rule: rule.category.priority))


@cache
def drg_types() -> dict[str, str]:
    """MS-DRG code -> ``M`` (medical) or ``P`` (surgical)."""
    return {r["ms_drg_code"]: r["medical_surgical"] for r in _rows("ms_drg.csv")}


@cache
def place_of_service_codes() -> frozenset[str]:
    return frozenset(r["place_of_service_code"] for r in _rows("place_of_service.csv"))


@cache
def revenue_codes() -> frozenset[str]:
    return frozenset(r["revenue_center_code"] for r in _rows("revenue_center.csv"))
