"""A round's tables: each carrier's answer as it came, and the program-wide combination."""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.combine import ScopedTable, carrier_table, combine, leave_out
from coordinator.store import StoredResult
from fedoversight import wire
from fedoversight.domain import QueryTable, RequestSpec


def round_tables(request: RequestSpec, results: Sequence[StoredResult]) -> list[ScopedTable]:
    """Program table first, then one per carrier, for every query of the round. Carriers the
    request names that did not answer leave every program sum incomplete (their values are
    unknown, in any amount)."""
    unanswered = len(set(request.carriers) - {r.carrier_id for r in results})
    decoded = sorted(
        ((r.carrier_id, wire.decode_result_bytes(r.result_bytes)) for r in results),
        key=lambda pair: pair[0],
    )
    out: list[ScopedTable] = []
    for index, _query in enumerate(request.queries):
        by_carrier: dict[str, QueryTable] = {
            carrier_id: result.tables[index] for carrier_id, result in decoded
        }
        if by_carrier:
            out.append(leave_out(combine(by_carrier, request.period), unanswered))
        out.extend(
            carrier_table(carrier_id, table, request.period)
            for carrier_id, table in by_carrier.items()
        )
    return out
