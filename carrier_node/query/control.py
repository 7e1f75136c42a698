"""The carrier's control totals against its data, month by month (``carrier-node check``).

The data's side is what ``ops.data_quality`` (version 2) computes for the months with
declared totals, evaluated by the engine over the node's own source (files or warehouse) and
read raw: the comparison stays at the carrier, where nothing is protected from its own staff.
"""

from __future__ import annotations

from dataclasses import dataclass

from carrier_node.data.control_totals import ControlTotals
from carrier_node.data.source import DataSource
from carrier_node.query.engine import Engine
from fedoversight import wire
from fedoversight.dimensions import Dimension
from fedoversight.periods import MAX_MONTHS, Month, Period

#: The ops.data_quality version with control totals, and its statistic prefix per table.
CONTROL_VERSION = 2
_PREFIXES = {"medical_claims": "medical", "pharmacy_claims": "pharmacy"}


@dataclass(frozen=True)
class ControlComparison:
    """One declared month of one table beside what the data holds."""

    table: str
    month: Month
    declared_claims: int
    data_claims: int
    declared_paid_cents: int
    data_paid_cents: int

    @property
    def matches(self) -> bool:
        return (self.declared_claims, self.declared_paid_cents) == (
            self.data_claims,
            self.data_paid_cents,
        )

    @property
    def missing_claims(self) -> int:
        """Declared less held (negative: the data holds more than declared)."""
        return self.declared_claims - self.data_claims

    @property
    def missing_paid_cents(self) -> int:
        return self.declared_paid_cents - self.data_paid_cents

    def describe(self) -> str:
        what = "matches its control totals" if self.matches else "differs from its control totals"
        return (
            f"{self.table} {self.month} {what}: claims {self.data_claims:,} in the data,"
            f" {self.declared_claims:,} declared ({_signed(-self.missing_claims)}); paid"
            f" {dollars(self.data_paid_cents)} in the data, {dollars(self.declared_paid_cents)}"
            f" declared ({_signed_dollars(-self.missing_paid_cents)})"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "table": self.table,
            "month": str(self.month),
            "matches": self.matches,
            "declared_claims": self.declared_claims,
            "data_claims": self.data_claims,
            "declared_paid_cents": self.declared_paid_cents,
            "data_paid_cents": self.data_paid_cents,
        }


def dollars(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"


def _signed(n: int) -> str:
    return f"{n:+,}"


def _signed_dollars(cents: int) -> str:
    return ("+" if cents >= 0 else "") + dollars(cents)


def compare_control_totals(
    source: DataSource, carrier_id: str, totals: ControlTotals
) -> list[ControlComparison]:
    """Every declared (table, month), in order, beside the claims and paid the data holds."""
    if not totals:
        return []
    engine = Engine(source, carrier_id, control_totals=totals)
    held: dict[tuple[str, Month], tuple[int, int]] = {}
    months = sorted({e.month for e in totals.entries})
    for period in _periods(months[0], months[-1]):
        query = wire.make_query(
            "ops.data_quality", version=CONTROL_VERSION, group_by=(Dimension.MONTH,)
        )
        for cell in engine.evaluate(period, query).cells:
            month = Month.parse(dict(cell.key)[Dimension.MONTH])
            for table, prefix in _PREFIXES.items():
                held[table, month] = (
                    cell.value(f"{prefix}_claims_in_data"),
                    cell.value(f"{prefix}_paid_in_data_cents"),
                )
    out = []
    for entry in totals.entries:
        claims, paid = held.get((entry.table, entry.month), (0, 0))
        out.append(
            ControlComparison(
                entry.table, entry.month, entry.claims, claims, entry.paid_cents, paid
            )
        )
    return out


def _periods(first: Month, last: Month) -> list[Period]:
    """``first`` to ``last`` in periods of at most the longest a query may cover."""
    out = []
    start = first
    while start <= last:
        end = start
        for _ in range(MAX_MONTHS - 1):
            if end >= last:
                break
            end = end.next()
        out.append(Period(start, end))
        start = end.next()
    return out
