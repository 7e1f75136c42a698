"""Control totals: the monthly claim counts and paid dollars of the carrier's own financial
reporting, declared in a TOML file its node config names (``control_totals_file``).

The node compares them with what its data holds (``carrier-node check``, and the
``ops.data_quality`` statistics the agency sees), so an incomplete extract shows as a month
whose data falls short of its declared totals. One entry per table and month::

    [[medical_claims]]
    month = "2026-01"
    claims = 48210             # distinct claims dated in the month
    paid = "10234567.89"       # dollars, as a decimal string (or paid_cents = 1023456789)

Amounts are exact: a decimal string of dollars with at most two places, or integer cents;
a TOML float is refused (it cannot hold every amount of cents exactly).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from fedoversight.config import describe_validation_error
from fedoversight.errors import ConfigError, OversightError
from fedoversight.periods import Month, Period

#: The tables control totals may be declared for, and the column dating each row to a month.
CONTROLLED_TABLES: dict[str, str] = {
    "medical_claims": "claim_start_date",
    "pharmacy_claims": "fill_date",
}

_DOLLARS = re.compile(r"^-?\d+(\.\d{1,2})?$")


@dataclass(frozen=True, order=True)
class ControlTotal:
    """One table's declared totals for one month."""

    table: str
    month: Month
    #: Distinct claims (claim_id) with a row dated in the month.
    claims: int
    #: Σ paid_amount of the rows dated in the month (every version), in cents.
    paid_cents: int


@dataclass(frozen=True)
class ControlTotals:
    """Every declared total, sorted by table and month (hashable: part of how queries are
    built, see :class:`carrier_node.query.render.Keying`)."""

    entries: tuple[ControlTotal, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def of(self, table: str) -> tuple[ControlTotal, ...]:
        return tuple(e for e in self.entries if e.table == table)

    @classmethod
    def load(cls, path: Path) -> ControlTotals:
        """Read and validate a control totals file; a :class:`ConfigError` names the file and,
        one line each, every key that is wrong."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read control totals {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"control totals {path} is not valid TOML: {exc}") from exc
        try:
            model = _TotalsFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                f"invalid control totals in {path}:\n{describe_validation_error(exc)}"
            ) from exc
        return model.totals()


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    month: StrictStr = Field(description="the calendar month, YYYY-MM")
    claims: Annotated[StrictInt, Field(ge=0, description="distinct claims dated in the month")]
    paid: StrictStr | None = Field(
        default=None, description="Σ paid_amount in dollars, a decimal string ('1234.56')"
    )
    paid_cents: StrictInt | None = Field(default=None, description="Σ paid_amount in cents")

    @field_validator("month")
    @classmethod
    def _month(cls, value: str) -> str:
        try:
            month = Month.parse(value)
            Period(month, month)  # a month queries can cover
        except OversightError as exc:
            raise ValueError("month must be YYYY-MM") from exc
        return value

    @field_validator("paid")
    @classmethod
    def _dollars(cls, value: str | None) -> str | None:
        if value is not None and not _DOLLARS.match(value.strip()):
            raise ValueError("paid must be dollars with at most two decimals, e.g. '1234.56'")
        return value

    @model_validator(mode="after")
    def _one_amount(self) -> _Entry:
        if (self.paid is None) == (self.paid_cents is None):
            raise ValueError("give exactly one of paid (dollars, a string) or paid_cents")
        return self

    def cents(self) -> int:
        if self.paid_cents is not None:
            return self.paid_cents
        assert self.paid is not None
        try:
            return int(Decimal(self.paid.strip()) * 100)
        except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
            raise ValueError(self.paid) from exc


class _TotalsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    medical_claims: tuple[_Entry, ...] = ()
    pharmacy_claims: tuple[_Entry, ...] = ()

    @model_validator(mode="after")
    def _once_a_month(self) -> _TotalsFile:
        for table in CONTROLLED_TABLES:
            months = [e.month for e in getattr(self, table)]
            twice = sorted({m for m in months if months.count(m) > 1})
            if twice:
                raise ValueError(f"{table}: month {twice[0]} is declared twice")
        return self

    def totals(self) -> ControlTotals:
        entries = [
            ControlTotal(table, Month.parse(e.month), e.claims, e.cents())
            for table in CONTROLLED_TABLES
            for e in getattr(self, table)
        ]
        return ControlTotals(tuple(sorted(entries)))
