"""What a reviewer sees of a held result (manual release mode): every cell's status and the
values that would go out, beside the previous release of the same query.

The previous release is the latest ``released`` entry of the node's audit log (automatic or
approved) that answered the same metric, version, grouping, filters and parameters; the audit
log keeps every released result, so nothing else needs storing. Entries written before the
log recorded the queries are matched on metric, version and grouping alone, and only for a
query without filters or parameters.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from carrier_node.records.audit import JsonValue, read_entries
from carrier_node.records.state import HeldRelease
from fedoversight import wire
from fedoversight.catalogue import StatKind, get_metric
from fedoversight.domain import CellKey, CellResult, QueryTable, ResultSpec, Status, StatValueType
from fedoversight.histogram import Histogram
from fedoversight.v1 import federation_pb2

STATUS_LABELS = {
    Status.RELEASED: "released",
    Status.WITHHELD: "withheld",
    Status.PERTURBED: "perturbed",
}


@dataclass(frozen=True)
class PreviousRelease:
    request_id: str
    round_id: str
    released_at: str
    period: str
    #: The reviewer who approved it ("" for an automatic release).
    approved_by: str
    table: QueryTable


@dataclass(frozen=True)
class StatReview:
    name: str
    kind: StatKind
    status: Status
    value: StatValueType | None
    previous_status: Status | None
    previous_value: StatValueType | None

    @property
    def change(self) -> float | None:
        """Value less the previous one (for a histogram: its count of members); None unless
        both went out."""
        now, before = _number(self.value), _number(self.previous_value)
        if now is None or before is None:
            return None
        return now - before

    @property
    def change_percent(self) -> float | None:
        change, before = self.change, _number(self.previous_value)
        if change is None or not before:
            return None
        return 100.0 * change / before


@dataclass(frozen=True)
class CellReview:
    key: CellKey
    status: Status
    stats: tuple[StatReview, ...]
    #: The cell was in the previous release's table (with whatever status).
    in_previous: bool


@dataclass(frozen=True)
class TableReview:
    query: dict[str, JsonValue]
    table: QueryTable
    previous: PreviousRelease | None
    cells: tuple[CellReview, ...]


@dataclass(frozen=True)
class Review:
    held: HeldRelease
    result: ResultSpec
    tables: tuple[TableReview, ...]
    #: The purpose the signed request declared (code, list version, justification, office),
    #: as the audit log recorded it on admission; None when it declared none.
    purpose: dict[str, str] | None = None

    @property
    def expired(self) -> bool:
        return dt.datetime.fromisoformat(self.held.expires_at) <= dt.datetime.now(dt.UTC)


def _number(value: StatValueType | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, Histogram):
        return float(value.total_count)
    return float(value)


def held_result(held: HeldRelease) -> ResultSpec:
    message = federation_pb2.NodeMessage.FromString(held.message)
    return wire.decode_result_bytes(bytes(message.result.result))


def _same_query(
    old: dict[str, JsonValue] | None,
    new: dict[str, JsonValue],
    old_table: QueryTable,
    new_table: QueryTable,
) -> bool:
    if old is not None:
        return old == new
    return (
        not new.get("filters")
        and not new.get("parameters")
        and (old_table.metric, old_table.version, old_table.group_by)
        == (new_table.metric, new_table.version, new_table.group_by)
    )


def previous_releases(
    audit_path: Path, held: HeldRelease, tables: Sequence[QueryTable]
) -> list[PreviousRelease | None]:
    """For each table of a held result, the latest earlier release of the same query."""
    found: list[PreviousRelease | None] = [None] * len(tables)
    if not audit_path.exists():
        return found
    for _, entry in read_entries(audit_path):
        if entry is None or entry.get("kind") != "released":
            continue
        if entry.get("request_id") == held.request_id or not isinstance(entry.get("result"), str):
            continue
        raw_queries = entry.get("queries")
        queries = raw_queries if isinstance(raw_queries, list) else None
        try:
            old = wire.decode_result_bytes(base64.b64decode(str(entry["result"])))
        except Exception:  # an entry this version cannot read: no comparison from it
            continue
        for i, (query, table) in enumerate(zip(held.queries, tables, strict=True)):
            for j, old_table in enumerate(old.tables):
                old_query = queries[j] if queries is not None and j < len(queries) else None
                if queries is not None and not isinstance(old_query, dict):
                    continue
                if _same_query(old_query, query, old_table, table):  # type: ignore[arg-type]
                    found[i] = PreviousRelease(
                        request_id=str(entry.get("request_id", "")),
                        round_id=str(entry.get("round_id", "")),
                        released_at=str(entry.get("time", "")),
                        period=str(entry.get("period", "")),
                        approved_by=str(entry.get("approved_by", "")),
                        table=old_table,
                    )
                    break
    return found


def review(held: HeldRelease, audit_path: Path) -> Review:
    """Everything ``carrier-node approve ID`` shows of a held result."""
    result = held_result(held)
    previous = previous_releases(audit_path, held, result.tables)
    tables = []
    for query, table, prev in zip(held.queries, result.tables, previous, strict=True):
        spec = get_metric(table.metric, table.version)
        before: dict[CellKey, CellResult] = (
            {c.key: c for c in prev.table.cells} if prev is not None else {}
        )
        cells = []
        for cell in table.cells:
            old = before.get(cell.key)
            stats = []
            for stat in cell.stats:
                old_stat = None
                if old is not None:
                    old_stat = next((s for s in old.stats if s.name == stat.name), None)
                stats.append(
                    StatReview(
                        name=stat.name,
                        kind=spec.statistic(stat.name).kind,
                        status=stat.status,
                        value=stat.value,
                        previous_status=old_stat.status if old_stat is not None else None,
                        previous_value=old_stat.value if old_stat is not None else None,
                    )
                )
            cells.append(CellReview(cell.key, cell.status, tuple(stats), old is not None))
        tables.append(TableReview(query, table, prev, tuple(cells)))
    return Review(held, result, tuple(tables), declared_purpose(audit_path, held.request_id))


def declared_purpose(audit_path: Path, request_id: str) -> dict[str, str] | None:
    """The purpose the audit log recorded when it admitted ``request_id`` (the last admission
    of it; None when it declared none)."""
    found: dict[str, str] | None = None
    for _, entry in read_entries(audit_path):
        if entry is None or entry.get("request_id") != request_id:
            continue
        if entry.get("kind") != "admitted":
            continue
        raw = entry.get("purpose")
        found = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else None
    return found


# --- presentation ---------------------------------------------------------------------------


def format_value(kind: StatKind, value: StatValueType | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, Histogram):
        return f"{value.total_count:,} members, ${value.total_cents / 100:,.2f}"
    if kind is StatKind.CENTS:
        return f"${value / 100:,.2f}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


def format_change(stat: StatReview) -> str:
    if stat.previous_status is None:
        return "new"
    change = stat.change
    if change is None:
        if stat.status.withheld and not stat.previous_status.withheld:
            return "now withheld"
        if stat.previous_status.withheld and not stat.status.withheld:
            return "was withheld"
        return "—"
    if stat.kind is StatKind.CENTS:
        text = f"{'+' if change >= 0 else '-'}${abs(change) / 100:,.2f}"
    elif stat.kind is StatKind.HISTOGRAM:
        text = f"{change:+,.0f} members"
    else:
        text = f"{change:+,.0f}" if float(change).is_integer() else f"{change:+,.2f}"
    percent = stat.change_percent
    return text if percent is None else f"{text} ({percent:+.1f}%)"


def describe_query(query: dict[str, JsonValue]) -> str:
    text = f"{query.get('metric')}@{query.get('version')}"
    group_by = query.get("group_by")
    if isinstance(group_by, list) and group_by:
        text += " by " + ",".join(str(d) for d in group_by)
    filters = query.get("filters")
    if isinstance(filters, dict) and filters:
        text += " where " + "; ".join(
            f"{d} in {','.join(str(v) for v in values) if isinstance(values, list) else values}"
            for d, values in filters.items()
        )
    parameters = query.get("parameters")
    if isinstance(parameters, dict) and parameters:
        text += " with " + ", ".join(f"{k}={v}" for k, v in parameters.items())
    return text


def _json_value(value: StatValueType | None) -> JsonValue:
    if isinstance(value, Histogram):
        return {"members": value.total_count, "total_cents": value.total_cents}
    return value


def review_json(view: Review) -> dict[str, JsonValue]:
    """The review as plain JSON (``carrier-node approve ID --json``)."""
    held = view.held
    tables: list[JsonValue] = []
    for t in view.tables:
        prev = t.previous
        cells: list[JsonValue] = []
        for cell in t.cells:
            stats: list[JsonValue] = [
                {
                    "name": s.name,
                    "status": str(s.status),
                    "value": _json_value(s.value),
                    "previous_status": str(s.previous_status) if s.previous_status else None,
                    "previous_value": _json_value(s.previous_value),
                    "change": s.change,
                }
                for s in cell.stats
            ]
            cells.append(
                {
                    "key": {str(d): v for d, v in cell.key},
                    "status": str(cell.status),
                    "stats": stats,
                }
            )
        d = t.table.disclosure
        tables.append(
            {
                "query": t.query,
                "metric": t.table.metric,
                "version": t.table.version,
                "group_by": [str(g) for g in t.table.group_by],
                "disclosure": {
                    "method": str(d.method),
                    "released": d.cells_released,
                    "withheld": d.cells_withheld,
                    "partly_withheld": d.cells_partly_withheld,
                    "perturbed": d.cells_perturbed,
                    "withheld_statistics": {str(r): n for r, n in d.withheld},
                    "min_cell_size": d.min_cell_size,
                },
                "previous": None
                if prev is None
                else {
                    "request_id": prev.request_id,
                    "round_id": prev.round_id,
                    "released_at": prev.released_at,
                    "period": prev.period,
                    "approved_by": prev.approved_by,
                },
                "cells": cells,
            }
        )
    return {
        "request_id": held.request_id,
        "round_id": held.round_id,
        "status": str(held.status),
        "held_at": held.created_at,
        "expires_at": held.expires_at,
        "expired": view.expired,
        "period": held.period,
        "purpose": dict[str, JsonValue](view.purpose) if view.purpose is not None else None,
        "reviewer": held.reviewer,
        "decided_at": held.decided_at,
        "data_snapshot": view.result.data_snapshot,
        "tables": tables,
    }
