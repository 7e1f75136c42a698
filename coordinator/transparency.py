"""The coordinator's transparency report: what was asked, why, by whom, and what came of it.

Counts only, suitable to publish (``oversight transparency --period 2026``): of the rounds
created in a period, by purpose and requesting office, the rounds, carriers asked and
answering, queries by metric and by grouping, carriers' refusals by reason (the wire code and
its fixed public message), cells the carriers withheld, and rounds whose results were deleted
on expiry. Nothing in it is a value of a result.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.store import CarrierRoundState, RoundStore
from fedoversight import wire
from fedoversight.errors import REVIEWER_REJECTED, OversightError
from fedoversight.periods import Period
from fedoversight.v1 import operator_pb2, types_pb2

#: Purpose and office of rounds created before purposes.
NO_PURPOSE = "(none)"
#: Item of a query without grouping.
TOTAL = "total"


def _fixed_messages() -> frozenset[str]:
    """Every fixed public message of the error tree, and the reviewer's rejection (what a
    refusal's message may be)."""
    seen: set[str] = {REVIEWER_REJECTED}
    todo: list[type[OversightError]] = [OversightError]
    while todo:
        cls = todo.pop()
        seen.add(cls.public)
        todo.extend(cls.__subclasses__())
    return frozenset(seen)


@dataclass(frozen=True)
class Count:
    purpose: str
    office: str
    item: str
    count: int


@dataclass(frozen=True)
class TransparencyReport:
    period: str
    list_version: str
    generated_at: dt.datetime
    rounds: tuple[Count, ...] = ()
    carriers_asked: tuple[Count, ...] = ()
    carriers_answered: tuple[Count, ...] = ()
    metrics: tuple[Count, ...] = ()
    groupings: tuple[Count, ...] = ()
    refusals: tuple[Count, ...] = ()
    cells_withheld: tuple[Count, ...] = ()
    cells_partly_withheld: tuple[Count, ...] = ()
    results_deleted: tuple[Count, ...] = ()

    SECTIONS = (
        ("rounds", "Rounds"),
        ("carriers_asked", "Carriers asked"),
        ("carriers_answered", "Carriers that answered"),
        ("metrics", "Queries by metric"),
        ("groupings", "Queries by grouping"),
        ("refusals", "Carriers' refusals by reason"),
        ("cells_withheld", "Cells withheld by carriers"),
        ("cells_partly_withheld", "Cells partly withheld by carriers"),
        ("results_deleted", "Rounds whose results were deleted on expiry"),
    )

    def section(self, name: str) -> tuple[Count, ...]:
        value: tuple[Count, ...] = getattr(self, name)
        return value

    def total(self, name: str, purpose: str | None = None, item: str | None = None) -> int:
        """A section's count summed (over one purpose, one item, when given)."""
        return sum(
            c.count
            for c in self.section(name)
            if (purpose is None or c.purpose == purpose) and (item is None or c.item == item)
        )

    def json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "period": self.period,
            "purpose_list_version": self.list_version,
            "generated_at": self.generated_at.isoformat(),
        }
        for name, _ in self.SECTIONS:
            out[name] = [
                {"purpose": c.purpose, "office": c.office, "item": c.item, "count": c.count}
                for c in self.section(name)
            ]
        return out


@dataclass
class _Tally:
    counters: dict[str, Counter[tuple[str, str, str]]] = field(
        default_factory=lambda: {name: Counter() for name, _ in TransparencyReport.SECTIONS}
    )

    def add(self, section: str, purpose: str, office: str, item: str = "", n: int = 1) -> None:
        self.counters[section][(purpose, office, item)] += n

    def counts(self, section: str) -> tuple[Count, ...]:
        return tuple(
            Count(p, o, i, n) for (p, o, i), n in sorted(self.counters[section].items()) if n
        )


def period_bounds(period: Period) -> tuple[dt.datetime, dt.datetime]:
    """The period as [start, end) in UTC."""
    start = dt.datetime.combine(period.start_date, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(period.end_date, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)
    return start, end


def refusal_reason(code: int, message: str, fixed: Iterable[str] | None = None) -> str:
    """A refusal as the report gives it: the code's name, and its message when that is one of
    the fixed public messages (anything else a node sent is left out)."""
    try:
        name = types_pb2.ErrorCode.Name(types_pb2.ErrorCode.ValueType(code))
    except ValueError:
        name = f"ERROR_CODE_{code}"
    known = fixed if fixed is not None else _fixed_messages()
    head = message.split(" (", 1)[0]  # a request too large adds its estimate
    return f"{name}: {head}" if head in known else name


def build_report(
    store: RoundStore, period: Period, list_version: str, now: dt.datetime | None = None
) -> TransparencyReport:
    """The report of the rounds created in ``period`` (on the store's thread)."""
    start, end = period_bounds(period)
    records = store.rounds_created(start, end)
    kept = store.round_purposes([r.round_id for r in records])
    fixed = _fixed_messages()
    tally = _Tally()
    for record in records:
        request = wire.decode_request_bytes(record.request_bytes)
        this = kept.get(record.round_id)
        if request.purpose is not None:
            purpose, office = request.purpose.code, request.purpose.office
        else:
            purpose = office = NO_PURPOSE
        tally.add("rounds", purpose, office)
        for query in request.queries:
            tally.add("metrics", purpose, office, query.metric)
            grouping = " x ".join(str(d) for d in query.group_by) or TOTAL
            tally.add("groupings", purpose, office, grouping)
        carriers = store.carrier_rounds(record.round_id)
        tally.add("carriers_asked", purpose, office, n=len(carriers))
        for carrier in carriers:
            if carrier.state is CarrierRoundState.ANSWERED:
                tally.add("carriers_answered", purpose, office)
            elif carrier.state is CarrierRoundState.REFUSED:
                reason = refusal_reason(carrier.error_code, carrier.message, fixed)
                tally.add("refusals", purpose, office, reason)
        if this is not None and this.results_deleted_at is not None:
            tally.add("results_deleted", purpose, office)
            tally.add("cells_withheld", purpose, office, n=this.cells_withheld)
            tally.add("cells_partly_withheld", purpose, office, n=this.cells_partly_withheld)
            continue
        for stored in store.results(record.round_id):
            try:
                result = wire.decode_result_bytes(stored.result_bytes)
            except OversightError:
                continue
            for table in result.tables:
                tally.add("cells_withheld", purpose, office, n=table.disclosure.cells_withheld)
                tally.add(
                    "cells_partly_withheld",
                    purpose,
                    office,
                    n=table.disclosure.cells_partly_withheld,
                )
    return TransparencyReport(
        period=str(period),
        list_version=list_version,
        generated_at=now or dt.datetime.now(dt.UTC),
        **{name: tally.counts(name) for name, _ in TransparencyReport.SECTIONS},
    )


def _counts_pb(counts: Iterable[Count]) -> list[operator_pb2.TransparencyCount]:
    return [
        operator_pb2.TransparencyCount(
            purpose=c.purpose, office=c.office, item=c.item, count=c.count
        )
        for c in counts
    ]


def report_to_pb(report: TransparencyReport) -> operator_pb2.TransparencyReport:
    generated = Timestamp()
    generated.FromDatetime(report.generated_at.astimezone(dt.UTC))
    msg = operator_pb2.TransparencyReport(
        period=report.period, list_version=report.list_version, generated_at=generated
    )
    for name, _ in TransparencyReport.SECTIONS:
        getattr(msg, name).extend(_counts_pb(report.section(name)))
    return msg


def report_from_pb(msg: operator_pb2.TransparencyReport) -> TransparencyReport:
    sections = {
        name: tuple(Count(c.purpose, c.office, c.item, int(c.count)) for c in getattr(msg, name))
        for name, _ in TransparencyReport.SECTIONS
    }
    return TransparencyReport(
        period=msg.period,
        list_version=msg.list_version,
        generated_at=msg.generated_at.ToDatetime(tzinfo=dt.UTC),
        **sections,
    )
