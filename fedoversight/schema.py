"""The carrier data schema of DESIGN (it stays at the carrier; both the node and the synthetic
generator read this one declaration).

Codes are strings (leading zeros kept), dates ISO dates, amounts decimal dollars.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ColumnType(StrEnum):
    CODE = "code"  # a string code; leading zeros matter
    DATE = "date"
    MONEY = "money"  # decimal dollars, two places
    BOOL = "bool"
    INT = "int"
    NUMBER = "number"  # a decimal quantity (e.g. drug units)


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = True
    #: A required column whose values may be empty (e.g. an open enrollment end date).
    nullable: bool = False
    #: Allowed values when the column is a closed code set.
    values: frozenset[str] | None = None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    required: bool = True

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def required_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.required)


C, D, M, B, N, INT = (
    ColumnType.CODE, ColumnType.DATE, ColumnType.MONEY, ColumnType.BOOL, ColumnType.NUMBER,
    ColumnType.INT,
)
CLAIM_STATUSES = frozenset({"paid", "denied", "reversed", "adjusted"})

ELIGIBILITY = Table(
    "eligibility",
    (
        Column("member_id", C),
        Column("program", C, values=frozenset({"FEHB", "PSHB"})),
        Column("plan_code", C),
        Column("birth_date", D),
        Column("sex", C, values=frozenset({"F", "M", "U"})),
        Column("state", C, nullable=True),
        Column("enrollment_start_date", D),
        Column("enrollment_end_date", D, nullable=True),
        Column("medicare_primary", B),
        Column("subscriber_id", C, required=False, nullable=True),
        Column("relationship", C, required=False, nullable=True),
        Column("death_date", D, required=False, nullable=True),
        Column("enrollee_type", C, required=False, nullable=True,
               values=frozenset({"active", "annuitant", "survivor"})),
        Column("coverage_tier", C, required=False, nullable=True),
        Column("hdhp", B, required=False, nullable=True),
    ),
)

MEDICAL_CLAIMS = Table(
    "medical_claims",
    (
        Column("claim_id", C),
        Column("claim_line", INT),
        Column("claim_status", C, values=CLAIM_STATUSES),
        Column("member_id", C),
        Column("claim_type", C, values=frozenset({"institutional", "professional"})),
        Column("claim_start_date", D),
        Column("claim_end_date", D),
        Column("admission_date", D, nullable=True),
        Column("discharge_date", D, nullable=True),
        Column("discharge_status", C, nullable=True),
        Column("place_of_service", C, nullable=True),
        Column("bill_type", C, nullable=True),
        Column("revenue_code", C, nullable=True),
        Column("hcpcs", C, nullable=True),
        Column("drg", C, nullable=True),
        *(Column(f"dx{i}", C, nullable=True) for i in range(1, 11)),
        Column("facility_npi", C, nullable=True),
        Column("rendering_npi", C, nullable=True),
        Column("in_network", B, nullable=True),
        Column("charge_amount", M),
        Column("allowed_amount", M),
        Column("paid_amount", M),
        Column("paid_date", D, nullable=True),
        Column("deductible_amount", M, required=False, nullable=True),
        Column("coinsurance_amount", M, required=False, nullable=True),
        Column("copay_amount", M, required=False, nullable=True),
        Column("denial_reason", C, required=False, nullable=True),
        Column("claim_version", INT, required=False, nullable=True),
    ),
)

PHARMACY_CLAIMS = Table(
    "pharmacy_claims",
    (
        Column("claim_id", C),
        Column("claim_status", C, values=CLAIM_STATUSES),
        Column("member_id", C),
        Column("fill_date", D),
        Column("paid_date", D, nullable=True),
        Column("ndc", C),
        Column("drug_class", C, nullable=True),
        Column("quantity", N),
        Column("days_supply", INT),
        Column("generic", B),
        Column("specialty", B, required=False, nullable=True),
        Column("channel", C, values=frozenset({"retail", "mail", "specialty"})),
        Column("allowed_amount", M),
        Column("paid_amount", M),
        Column("member_paid_amount", M),
    ),
)

PROVIDERS = Table(
    "providers",
    (
        Column("npi", C),
        Column("entity_type", C),
        Column("taxonomy", C, nullable=True),
        Column("state", C, nullable=True),
        Column("in_network", B),
    ),
    required=False,
)

REBATES = Table(
    "rebates",
    (
        Column("quarter", C),
        Column("drug_class", C, required=False, nullable=True),
        Column("ndc", C, required=False, nullable=True),
        Column("rebate_amount", M),
    ),
    required=False,
)

TABLES: tuple[Table, ...] = (ELIGIBILITY, MEDICAL_CLAIMS, PHARMACY_CLAIMS, PROVIDERS, REBATES)
TABLES_BY_NAME = {t.name: t for t in TABLES}
