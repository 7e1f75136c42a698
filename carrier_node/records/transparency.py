"""The carrier's transparency report, from its own audit log (``carrier-node audit report``).

Counts only, suitable to publish: of the requests the node decided on in a period (by the time
of the decision), by declared purpose and requesting office, the requests admitted, the
queries by metric and by grouping, the refusals by reason (the wire code and its fixed public
message), the results released and rejected by the reviewer, and the cells withheld entirely
or partly in what was released. Requests that declared no purpose count under ``(none)``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from carrier_node.records.audit import AuditKind, JsonValue, read_entries
from fedoversight.periods import Period

#: Purpose and office of requests that declared none (or were refused before they were read).
NO_PURPOSE = "(none)"

SECTIONS = (
    ("admitted", "Requests admitted"),
    ("metrics", "Queries admitted, by metric"),
    ("groupings", "Queries admitted, by grouping"),
    ("refusals", "Requests refused, by reason"),
    ("released", "Results released"),
    ("rejected", "Results rejected by the carrier's reviewer"),
    ("cells_withheld", "Cells withheld in released results"),
    ("cells_partly_withheld", "Cells partly withheld in released results"),
)


@dataclass(frozen=True)
class CarrierReport:
    period: str
    #: Per section: ((purpose, office, item), count), sorted.
    sections: dict[str, tuple[tuple[tuple[str, str, str], int], ...]]

    def total(self, section: str, purpose: str | None = None, item: str | None = None) -> int:
        return sum(
            n
            for (p, _, i), n in self.sections[section]
            if (purpose is None or p == purpose) and (item is None or i == item)
        )

    def json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"period": self.period}
        for name, _ in SECTIONS:
            out[name] = [
                {"purpose": p, "office": o, "item": i, "count": n}
                for (p, o, i), n in self.sections[name]
            ]
        return out


def _purpose_of(entry: dict[str, JsonValue]) -> tuple[str, str] | None:
    raw = entry.get("purpose")
    if isinstance(raw, dict):
        return str(raw.get("code", NO_PURPOSE)), str(raw.get("office", NO_PURPOSE))
    return None


def _in_period(entry: dict[str, JsonValue], start: dt.datetime, end: dt.datetime) -> bool:
    try:
        when = dt.datetime.fromisoformat(str(entry.get("time", "")))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return start <= when < end


def _grouping(query: str) -> tuple[str, str]:
    """(metric, grouping) of a query as the audit log names it (``metric@1 by a,b where
    ...``)."""
    head = query.split(" where ", 1)[0]
    metric, _, by = head.partition(" by ")
    grouping = " x ".join(d for d in by.split(",") if d) or "total"
    return metric.split("@", 1)[0], grouping


def audit_report(path: Path, period: Period) -> CarrierReport:
    """The report of the decisions the audit log at ``path`` recorded in ``period``."""
    start = dt.datetime.combine(period.start_date, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(period.end_date, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)
    counts: dict[str, Counter[tuple[str, str, str]]] = {name: Counter() for name, _ in SECTIONS}
    purposes: dict[str, tuple[str, str]] = {}  # request id -> (purpose, office), on admission
    admitted: dict[str, list[str]] = {}  # request id -> its queries (last admission)
    refused: dict[str, tuple[str, str, str]] = {}  # request id -> (purpose, office, reason)
    released: dict[str, dict[str, JsonValue]] = {}
    rejected: set[str] = set()
    for _, entry in read_entries(path):
        if entry is None:
            continue
        request_id = str(entry.get("request_id") or "")
        kind = entry.get("kind")
        if kind == AuditKind.ADMITTED:
            purposes[request_id] = _purpose_of(entry) or (NO_PURPOSE, NO_PURPOSE)
        if not _in_period(entry, start, end):
            continue
        if kind == AuditKind.ADMITTED:
            raw = entry.get("queries")
            admitted[request_id] = [str(q) for q in raw] if isinstance(raw, list) else []
            refused.pop(request_id, None)
        elif kind == AuditKind.REFUSED:
            purpose, office = _purpose_of(entry) or purposes.get(
                request_id, (NO_PURPOSE, NO_PURPOSE)
            )
            reason = str(entry.get("code", "?"))
            message = entry.get("public_message")
            if isinstance(message, str) and message:
                reason += f": {message.split(' (', 1)[0]}"
            refused[request_id or f"#{entry.get('seq')}"] = (purpose, office, reason)
        elif kind == AuditKind.RELEASED:
            released[request_id] = entry
        elif kind == AuditKind.REJECTED:
            rejected.add(request_id)
    for request_id, queries in admitted.items():
        purpose, office = purposes.get(request_id, (NO_PURPOSE, NO_PURPOSE))
        counts["admitted"][(purpose, office, "")] += 1
        for query in queries:
            metric, grouping = _grouping(query)
            counts["metrics"][(purpose, office, metric)] += 1
            counts["groupings"][(purpose, office, grouping)] += 1
    for purpose, office, reason in refused.values():
        counts["refusals"][(purpose, office, reason)] += 1
    for request_id, entry in released.items():
        purpose, office = purposes.get(request_id, (NO_PURPOSE, NO_PURPOSE))
        counts["released"][(purpose, office, "")] += 1
        tables = entry.get("tables")
        for table in tables if isinstance(tables, list) else []:
            if isinstance(table, dict):
                withheld, partly = table.get("withheld", 0), table.get("partly_withheld", 0)
                counts["cells_withheld"][(purpose, office, "")] += (
                    withheld if isinstance(withheld, int) else 0
                )
                counts["cells_partly_withheld"][(purpose, office, "")] += (
                    partly if isinstance(partly, int) else 0
                )
    for request_id in rejected:
        purpose, office = purposes.get(request_id, (NO_PURPOSE, NO_PURPOSE))
        counts["rejected"][(purpose, office, "")] += 1
    return CarrierReport(
        period=str(period),
        sections={
            name: tuple(sorted((k, n) for k, n in counts[name].items() if n))
            for name, _ in SECTIONS
        },
    )
