"""Comparison of federated tables with the oracle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from coordinator.combine import ScopedTable
from fedoversight.catalogue import StatKind, get_metric
from fedoversight.domain import QuerySpec, StatValueType
from fedoversight.histogram import Histogram
from fedoversight.periods import Period
from tests import oracle

Key = tuple[str, tuple[str, ...]]


def _value(raw: object) -> StatValueType:
    if isinstance(raw, Histogram):
        return raw
    if isinstance(raw, tuple) and len(raw) == 2:
        return Histogram(tuple(int(x) for x in raw[0]), tuple(int(x) for x in raw[1]))
    return int(raw)  # type: ignore[call-overload,no-any-return]


def expected(
    query: QuerySpec, period: Period, tables: Mapping[str, Mapping[str, pd.DataFrame]]
) -> dict[Key, dict[str, StatValueType]]:
    """(scope, key values) -> statistics, from the oracle."""
    params = dict(query.parameters) or None
    kwargs = {"parameters": params} if params else {}
    frame = oracle.compute(
        query.metric, tables, period, query.group_by, dict(query.filters) or None, **kwargs
    )
    dims = [d.value for d in query.group_by]
    stats = [s.name for s in get_metric(query.metric, query.version).statistics]
    out = {}
    for row in frame.to_dict("records"):
        key = tuple(str(row[d]) for d in dims)
        out[(str(row["scope"]), key)] = {s: _value(row[s]) for s in stats}
    return out


def query_tables(tables: Sequence[ScopedTable], index: int) -> list[ScopedTable]:
    """The tables answering the round's ``index``-th query (each block opens with the
    program table, then one per carrier, in query order)."""
    blocks: list[list[ScopedTable]] = []
    for table in tables:
        if table.scope == "program":
            blocks.append([])
        blocks[-1].append(table)
    return blocks[index]


def compare(
    query: QuerySpec,
    period: Period,
    scoped: Sequence[ScopedTable],
    tables: Mapping[str, Mapping[str, pd.DataFrame]],
    min_cell: int = 11,
) -> dict[str, int]:
    """Assert every released cell equals the oracle; return counts of what was checked.

    Carrier scope: every released statistic equals the oracle exactly; every oracle cell that
    rests on 1..min_cell-1 members is present and withheld whole; other withheld cells and
    statistics (complementary, differencing, dominance on dollar totals) are counted. Program
    scope: complete cells equal the oracle over the union; in incomplete cells each statistic
    equals the sum over the carriers that released it.
    """
    spec = get_metric(query.metric, query.version)
    member_stats = [s.name for s in spec.statistics if s.kind is StatKind.MEMBERS]
    want = expected(query, period, tables)
    counts = {"released": 0, "small": 0, "other_withheld": 0, "program_incomplete": 0}
    mine = [t for t in scoped if t.metric == query.metric and t.group_by == query.group_by]
    assert mine, f"no tables for {query}"
    # (scope, key) -> names of the statistics the carrier released in that cell
    released_by_carrier: dict[Key, set[str]] = {}
    for table in mine:
        if table.scope == "program":
            continue
        for cell in table.cells:
            key = tuple(v for _, v in cell.key)
            truth = want.get((table.scope, key))
            assert truth is not None, f"{query.metric} {table.scope} {key}: not in the oracle"
            released = {s.name for s in cell.stats if not s.status.suppressed}
            released_by_carrier[(table.scope, key)] = released
            small = any(0 < int(truth[n]) < min_cell for n in member_stats)  # type: ignore[call-overload]
            if released:
                assert not small, f"{query.metric} {table.scope} {key}: small cell released"
            for stat in cell.stats:
                if stat.name in released:
                    assert stat.value == truth[stat.name], (
                        f"{query.metric} {table.scope} {key} {stat.name}:"
                        f" {stat.value} != {truth[stat.name]}"
                    )
                else:
                    assert stat.value is None
            if len(released) == len(cell.stats):
                counts["released"] += 1
            else:
                counts["small" if small else "other_withheld"] += 1
    for (scope, key), _truth in want.items():
        if scope != "program":
            assert (scope, key) in released_by_carrier, f"{query.metric} {scope} {key}: missing"
    program = [t for t in mine if t.scope == "program"]
    assert len(program) == 1
    for cell in program[0].cells:
        key = tuple(v for _, v in cell.key)
        if not cell.incomplete:
            truth = want[("program", key)]
            for stat in cell.stats:
                assert stat.value == truth[stat.name], (
                    f"{query.metric} program {key} {stat.name}: {stat.value} != {truth[stat.name]}"
                )
        else:
            counts["program_incomplete"] += 1
            for stat in cell.stats:
                # Each statistic is the sum over the carriers that released it.
                parts = [
                    want[(scope, k)][stat.name]
                    for (scope, k), names in released_by_carrier.items()
                    if k == key and stat.name in names
                ]
                partial: StatValueType | None = None
                for part in parts:
                    partial = part if partial is None else partial + part  # type: ignore[operator]
                assert stat.value == partial, f"{query.metric} program {key} {stat.name}"
            # A figure resting on a statistic some carrier withheld is marked incomplete.
            left_out = {
                name for (scope, k), names in released_by_carrier.items() if k == key
                for name in want[(scope, k)] if name not in names
            }
            assert left_out
            inputs = {f.name: set(f.inputs) for f in spec.figures}
            for figure in cell.figures:
                if inputs[figure.name] & left_out:
                    assert not figure.complete, f"{query.metric} program {key} {figure.name}"
    program_keys = {k for s, k in want if s == "program"}
    assert {tuple(v for _, v in c.key) for c in program[0].cells} == program_keys
    return counts
