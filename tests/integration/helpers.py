"""Comparison of federated tables with the oracle."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from carrier_node.policy import Policy
from coordinator.combine import ScopedTable
from fedoversight.catalogue import MetricSpec, StatisticSpec, StatKind, get_metric
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec, Status, StatValue, StatValueType
from fedoversight.histogram import Histogram
from fedoversight.periods import Period
from fedoversight.testing import oracle

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


def noise_bounds(kind: StatKind, top: int, policy: Policy) -> tuple[int, int]:
    """The least and greatest absolute noise the policy's perturbation adds to a value of
    ``kind`` whose largest contribution of one member is ``top`` (docs/disclosure.md)."""
    p = policy.perturbation
    counts = p.count_max_noise if kind in (StatKind.MEMBERS, StatKind.COUNT, StatKind.AMOUNT) else 0
    if not kind.magnitude or top == 0:
        return 0, counts
    low = p.p_percent / 100 * top
    high = math.ceil(p.p_percent / 100 * top * (1 + p.spread))
    return max(0, math.floor(low) - counts), max(1, high) + counts


def expected_withheld(
    spec: MetricSpec,
    stat: StatisticSpec,
    row: Mapping[str, object],
    floor: int,
    sensitive: bool,
) -> bool:
    """Whether the rules of docs/disclosure.md withhold ``stat`` of an oracle row: it rests
    on 1 to floor − 1 members (a sensitive cell's on fewer than its floor, zero included), or
    it is a part whose rest does."""
    if not stat.by_members:
        return False
    if stat.kind is StatKind.MEMBERS:
        support = as_count(row[stat.name])
    else:
        support = as_count(row.get(f"{stat.name}__support"))
    if sensitive and support < floor:
        return True
    if 0 < support < floor:
        return True
    if stat.part_of is None:
        return False
    if stat.kind is StatKind.MEMBERS:
        rest = as_count(row[stat.part_of]) - support
    else:
        rest = as_count(row.get(f"{stat.name}__rest"))
    return 0 < rest < floor


def as_count(value: object) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    return int(value)  # type: ignore[call-overload]


def compare(
    query: QuerySpec,
    period: Period,
    scoped: Sequence[ScopedTable],
    tables: Mapping[str, Mapping[str, pd.DataFrame]],
    policy: Policy | None = None,
    unanswered: int = 0,
) -> dict[str, int]:
    """Assert every carrier value is what the policy makes of the oracle's; return counts.

    Carrier scope: a value is withheld exactly when the rules say so from the oracle's
    supports (:func:`expected_withheld`), with what it leaves out; every other value equals
    the oracle's (perturbation off) or lies within the documented noise of it (on: counts
    within ±D, magnitudes between p% and p%·(1 + spread) of their largest contribution; true
    zeros exact). Program scope: each statistic is the sum of the values the carriers
    released, says how many carriers it leaves out (those withholding it and the
    ``unanswered`` ones, whose values are unknown) and bounds what they left out; a complete
    statistic is the oracle's over the union exactly (off) or within the sum of the carriers'
    noise bounds (on).
    """
    policy = policy or Policy()
    perturbed = policy.perturbation.enabled
    spec = get_metric(query.metric, query.version)
    params = dict(query.parameters) or None
    frame = oracle.compute(
        query.metric,
        tables,
        period,
        query.group_by,
        dict(query.filters) or None,
        **({"parameters": params} if params else {}),
        disclosure=True,
    )
    dims = [d.value for d in query.group_by]
    want = {(str(r["scope"]), tuple(str(r[d]) for d in dims)): r for r in frame.to_dict("records")}
    categories = dict(query.filters).get(D.SERVICE_CATEGORY_2, ())
    counts = {"released": 0, "withheld": 0, "perturbed": 0, "program_incomplete": 0}
    mine = [t for t in scoped if t.metric == query.metric and t.group_by == query.group_by]
    assert mine, f"no tables for {query}"
    carrier_cells: dict[tuple[str, ...], list[tuple[str, Mapping[str, StatValue]]]] = {}
    # (key) -> the most every carrier's released values may be off the truth, per statistic
    noise_room: dict[tuple[str, ...], dict[str, int]] = {}
    for table in mine:
        if table.scope == "program":
            continue
        seen = set()
        for cell in table.cells:
            key = tuple(v for _, v in cell.key)
            seen.add(key)
            where = f"{query.metric} {table.scope} {key}"
            row = want.get((table.scope, key))
            key_values = {d.value: v for d, v in cell.key}
            floor = policy.threshold_for(key_values, categories)
            sensitive = policy.is_sensitive(key_values, categories)
            if row is None:  # a sensitive category listed although nobody is there
                assert sensitive and all(
                    s.status.withheld for s in cell.stats if spec.statistic(s.name).by_members
                ), where
                continue
            stats = {s.name: s for s in cell.stats}
            carrier_cells.setdefault(key, []).append((table.scope, stats))
            room = noise_room.setdefault(key, {})
            for stat_spec in spec.statistics:
                stat = stats[stat_spec.name]
                truth = row[stat_spec.name]
                if stat_spec.kind is StatKind.HISTOGRAM:
                    _check_histogram(stat, truth, floor, policy, where)
                    counts["withheld" if stat.status.withheld else "released"] += 1
                    continue
                if expected_withheld(spec, stat_spec, row, floor, sensitive):
                    assert stat.status.withheld and stat.value is None, (where, stat_spec.name)
                    assert stat.missing is not None and stat.missing.carriers == 1
                    if stat.missing.at_most is not None:
                        assert int(truth) <= stat.missing.at_most, (where, stat_spec.name)
                    counts["withheld"] += 1
                    continue
                assert not stat.status.withheld, (where, stat_spec.name, "withheld")
                value = stat.value
                assert isinstance(value, int), (where, stat_spec.name)
                top = as_count(row.get(f"{stat_spec.name}__top"))
                if not perturbed or (
                    int(truth) == 0
                    and as_count(row.get(f"{stat_spec.name}__support", truth)) == 0
                    and (stat_spec.by_members)
                ):
                    assert value == int(truth), (where, stat_spec.name, value, truth)
                    assert stat.status is Status.RELEASED
                    counts["released"] += 1
                    continue
                low, high = noise_bounds(stat_spec.kind, top, policy)
                assert stat.status is Status.PERTURBED, (where, stat_spec.name)
                assert low <= abs(value - int(truth)) <= high, (
                    where,
                    stat_spec.name,
                    value,
                    truth,
                    low,
                    high,
                )
                room[stat_spec.name] = room.get(stat_spec.name, 0) + high
                counts["perturbed"] += 1
        for (scope, key), _row in want.items():
            if scope == table.scope:
                assert key in seen, f"{query.metric} {scope} {key}: missing"
    (program,) = [t for t in mine if t.scope == "program"]
    for cell in program.cells:
        key = tuple(v for _, v in cell.key)
        parts = carrier_cells.get(key, [])
        truth = want.get(("program", key))
        for stat in cell.stats:
            name = stat.name
            released = [c[name] for _, c in parts if not c[name].status.withheld]
            withheld = [c[name] for _, c in parts if c[name].status.withheld]
            if isinstance(stat.value, Histogram) or spec.statistic(name).kind is (
                StatKind.HISTOGRAM
            ):
                continue
            assert stat.value == (
                sum(int(v.value) for v in released)  # type: ignore[arg-type]
                if released
                else None
            ), (query.metric, key, name)
            if withheld or unanswered:
                counts["program_incomplete"] += 1
                assert stat.missing is not None, (query.metric, key, name)
                assert stat.missing.carriers == len(withheld) + unanswered, (
                    query.metric,
                    key,
                    name,
                )
                if unanswered:
                    assert stat.missing.at_most is None, (query.metric, key, name)
                if stat.missing.at_most is not None and truth is not None:
                    left_out = int(truth[name]) - sum(
                        int(want[(scope, key)][name])
                        for scope, c in parts
                        if not c[name].status.withheld
                    )
                    assert left_out <= stat.missing.at_most, (query.metric, key, name)
                continue
            assert stat.missing is None, (query.metric, key, name)
            if truth is not None and stat.value is not None:
                off = abs(int(stat.value) - int(truth[name]))
                assert off <= noise_room.get(key, {}).get(name, 0), (
                    query.metric,
                    key,
                    name,
                    stat.value,
                    truth[name],
                )
        inputs = {f.name: set(f.inputs) for f in spec.figures}
        left_out = {s.name for s in cell.stats if s.missing is not None}
        for figure in cell.figures:
            if inputs[figure.name] & left_out:
                assert not figure.complete, f"{query.metric} program {key} {figure.name}"
    return counts


def _check_histogram(
    stat: StatValue, truth: object, floor: int, policy: Policy, where: str
) -> None:
    """A carrier's histogram: withheld when its members are too few; else every bin of 1 to
    floor − 1 members withheld and the others within the noise of the oracle's bins."""
    assert isinstance(truth, Histogram)
    if 0 < truth.total_count < floor:
        assert stat.status.withheld, where
        return
    value = stat.value
    assert isinstance(value, Histogram), where
    small = tuple(i for i, c in enumerate(truth.counts) if 0 < c < floor)
    assert value.withheld_bins == small, where
    noise = policy.perturbation.count_max_noise if policy.perturbation.enabled else 0
    for i, (got, count) in enumerate(zip(value.counts, truth.counts, strict=True)):
        if i in small:
            assert got == 0 and value.sums_cents[i] == 0, where
        else:
            assert abs(got - count) <= noise, (where, i)
    if not policy.perturbation.enabled:
        assert all(
            value.sums_cents[i] == truth.sums_cents[i]
            for i in range(len(truth.counts))
            if i not in small
        ), where
