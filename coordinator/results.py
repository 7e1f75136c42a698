"""A round's tables: each carrier's answer as it came, and the program-wide combination."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from coordinator.combine import ScopedTable, carrier_table, combine, leave_out
from fedoversight.domain import QueryTable, RequestSpec, ResultSpec

#: What identifies the results stored for a round: (carrier id, received at) of each, by
#: carrier. A stored result is never changed or removed, so a round's tables change exactly
#: when this does.
ResultsKey = tuple[tuple[str, dt.datetime], ...]

#: Rounds whose tables are kept (the most recently read).
TABLES_KEPT = 32


def round_tables(request: RequestSpec, results: Mapping[str, ResultSpec]) -> list[ScopedTable]:
    """Program table first, then one per carrier, for every query of the round, from each
    carrier's decoded result (by carrier id). Carriers the request names that did not answer
    leave every program sum incomplete (their values are unknown, in any amount)."""
    unanswered = len(set(request.carriers) - set(results))
    decoded = sorted(results.items(), key=lambda pair: pair[0])
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


class TableCache:
    """Each round's computed tables with the results they were computed from; a bounded
    number of rounds, the least recently read dropped first."""

    def __init__(self, size: int = TABLES_KEPT) -> None:
        self._size = size
        self._kept: OrderedDict[str, tuple[ResultsKey, Sequence[ScopedTable]]] = OrderedDict()

    def get(self, round_id: str, key: ResultsKey) -> Sequence[ScopedTable] | None:
        """The round's tables when they were computed from exactly these results."""
        entry = self._kept.get(round_id)
        if entry is None or entry[0] != key:
            return None
        self._kept.move_to_end(round_id)
        return entry[1]

    def put(
        self, round_id: str, key: ResultsKey, tables: Sequence[ScopedTable]
    ) -> Sequence[ScopedTable]:
        """Keep the round's tables computed from these results; return them as kept."""
        kept = tuple(tables)
        self._kept[round_id] = (key, kept)
        self._kept.move_to_end(round_id)
        while len(self._kept) > self._size:
            self._kept.popitem(last=False)
        return kept

    def drop(self, round_id: str) -> None:
        """Forget the round's tables (its results were deleted)."""
        self._kept.pop(round_id, None)
