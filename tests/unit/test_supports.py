"""What disclosure control needs of each statistic, as the engine computes it in the same pass
as the statistic, against the oracle's independent reading from per-member contributions:
the members a statistic rests on, the largest contribution of one member, the members of a
part's rest, and the least and greatest record key of the support."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from carrier_node.cells import RawTable
from carrier_node.data.files import FileSource
from carrier_node.query.engine import Engine
from fedoversight import wire
from fedoversight.catalogue import METRICS, StatKind, get_metric
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period
from fedoversight.testing import oracle
from oversight_sim.synth import SynthConfig, write_carriers

PERIOD = Period.parse("2026-01:2026-03")
SECRET = "6f1c0d2e9a8b7c6d5e4f3a2b1c0d9e8f"


def _queries() -> list[QuerySpec]:
    out = []
    for spec in METRICS:
        groupings: list[tuple[D, ...]] = [(), (D.AGE_BAND,), (D.MONTH, D.SEX)]
        for dims in groupings:
            dims = tuple(d for d in dims if d in spec.dimensions)
            if spec.one_of:
                dims = (*dims, D.SERVICE_CATEGORY_2)
            if spec.name == "rx.rebate_share":
                dims = (D.QUARTER, D.DRUG_CLASS)
            out.append(wire.make_query(spec.name, group_by=dims))
    return list(dict.fromkeys(out))


QUERIES = _queries()


@pytest.fixture(scope="module")
def carrier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    root = tmp_path_factory.mktemp("supports")
    (directory,) = write_carriers(root, SynthConfig(carriers=1, members=4_000, seed=5, months=3))
    return directory, oracle.load_carrier(directory)


@pytest.fixture(scope="module")
def raws(carrier: tuple[Path, dict[str, pd.DataFrame]]) -> dict[QuerySpec, RawTable]:
    directory, _ = carrier
    source = FileSource(directory, threads=2)
    source.open()
    try:
        engine = Engine(source, directory.name, record_secret=SECRET)
        return dict(zip(QUERIES, engine.evaluate_many(PERIOD, QUERIES), strict=True))
    finally:
        source.close()


def _number(value: object) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    return int(value)  # type: ignore[call-overload]


def _key(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.metric}-{'-'.join(q.group_by)}")
def test_engine_supports_equal_the_oracles(
    query: QuerySpec,
    carrier: tuple[Path, dict[str, pd.DataFrame]],
    raws: dict[QuerySpec, RawTable],
) -> None:
    directory, tables = carrier
    spec = get_metric(query.metric)
    frame = oracle.compute(
        query.metric,
        {directory.name: tables},
        PERIOD,
        query.group_by,
        disclosure=True,
        record_secrets={directory.name: SECRET},
    )
    frame = frame[frame["scope"] == directory.name]
    want = {tuple(str(r[d.value]) for d in query.group_by): r for r in frame.to_dict("records")}
    got = {tuple(v for _, v in c.key): c for c in raws[query].cells}
    assert set(got) == set(want)
    checked = 0
    for key, cell in got.items():
        row = want[key]
        for stat in spec.statistics:
            if stat.kind is StatKind.HISTOGRAM:
                continue
            support = cell.support(stat.name)
            where = (query.metric, key, stat.name)
            if not stat.by_members:
                assert support.top == _number(row.get(f"{stat.name}__top")), where
                continue
            members = (
                row[stat.name]
                if stat.kind is StatKind.MEMBERS
                else row.get(f"{stat.name}__support")
            )
            assert support.members == _number(members), where
            if stat.kind.magnitude:
                assert support.top == _number(row.get(f"{stat.name}__top")), where
            if stat.part_of is not None and stat.kind is not StatKind.MEMBERS:
                assert support.rest == _number(row.get(f"{stat.name}__rest")), where
            assert support.key_low == _key(row.get(f"{stat.name}__kmin")), where
            assert support.key_high == _key(row.get(f"{stat.name}__kmax")), where
            checked += 1
    assert checked > 0


def test_histogram_bins_carry_their_members_and_largest_total(
    carrier: tuple[Path, dict[str, pd.DataFrame]], raws: dict[QuerySpec, RawTable]
) -> None:
    directory, tables = carrier
    (query,) = [q for q in QUERIES if q.metric == "cost.distribution" and not q.group_by]
    (cell,) = raws[query].cells
    histogram = cell.histogram("allowed_histogram")
    totals = oracle.member_period_allowed({directory.name: tables}, PERIOD)
    from fedoversight.histogram import bin_index

    bins = totals.map(bin_index)
    for index, support in enumerate(cell.bin_supports("allowed_histogram")):
        mine = totals[bins == index]
        if support is None:
            assert mine.empty
            continue
        assert support.members == histogram.counts[index] == len(mine)
        assert support.top == int(mine.abs().max())
        assert support.key_low is not None and support.key_low <= (support.key_high or "")


def test_clamped_sums_for_differential_privacy_equal_the_oracles(
    carrier: tuple[Path, dict[str, pd.DataFrame]],
) -> None:
    """Under differential privacy each member's contribution to a cell is clipped to its
    bound before the sum (the bound times the member months the cell can hold)."""
    directory, tables = carrier
    queries = [
        wire.make_query("cost.pmpm", group_by=[D.MONTH]),
        wire.make_query("util.scripts", group_by=[D.AGE_BAND]),
        wire.make_query("cost.high_cost_claimants"),
    ]
    source = FileSource(directory, threads=2)
    source.open()
    try:
        engine = Engine(source, directory.name, record_secret=SECRET, clamped=True)
        raws = engine.evaluate_many(PERIOD, queries)
    finally:
        source.close()
    clamped = 0
    for query, raw in zip(queries, raws, strict=True):
        spec = get_metric(query.metric)
        clamps = {
            s.name: c
            for s in spec.statistics
            if (c := spec.contribution_clamp(s, query.group_by, 3)) is not None
        }
        frame = oracle.compute(
            query.metric,
            {directory.name: tables},
            PERIOD,
            query.group_by,
            disclosure=True,
            clamps=clamps,
        )
        rows = {
            tuple(str(r[d.value]) for d in query.group_by): r
            for r in frame.to_dict("records")
            if r["scope"] == directory.name
        }
        for cell in raw.cells:
            row = rows[tuple(v for _, v in cell.key)]
            for name in clamps:
                if name == "member_months":  # a member month is one: never above the bound
                    assert cell.support(name).clamped == cell.value(name)
                    continue
                assert cell.support(name).clamped == _number(row.get(f"{name}__clamped")), (
                    query.metric,
                    name,
                )
                clamped += cell.support(name).clamped != cell.value(name)
    assert clamped > 0  # some members were above a bound: the clamp did something
