"""Consistency of the perturbation over a real carrier, through the engine and the node's
disclosure control (hypothesis draws the queries):

- the same cell gets the same value in any query (another grouping, a filter selecting it),
  in any metric reporting it, and after a restart of the node (its secret reloaded);
- a change of contents (a late claim) draws new noise for the cells it touches, and only for
  them;
- no released value rests on 1 to 10 members (the oracle's supports say so independently).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrier_node.data.files import FileSource
from carrier_node.disclosure import Discloser, NodeSecret
from carrier_node.policy import Policy
from carrier_node.query.engine import Engine
from fedoversight import catalogue, wire
from fedoversight.catalogue import StatKind, get_metric
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec, QueryTable, RequestSpec
from fedoversight.periods import Period
from fedoversight.testing import oracle
from oversight_sim.synth import SynthConfig, write_carriers
from tests.integration.helpers import as_count, expected_withheld

PERIOD = Period.parse("2026-01:2026-03")
POLICY = Policy()
MEMBER_METRICS = (
    "enrollment.member_months",
    "cost.pmpm",
    "util.inpatient",
    "util.ed_visits",
    "util.scripts",
    "util.office_visits",
    "cost.member_cost_share_pmpm",
)
DIMS = (
    D.MONTH,
    D.QUARTER,
    D.AGE_BAND,
    D.SEX,
    D.PLAN_CODE,
    D.STATE,
    D.ENROLLEE_TYPE,
    D.MEDICARE_PRIMARY,
)


class Node:
    """A carrier's engine and disclosure control as its daemon builds them."""

    def __init__(self, directory: Path, state: Path) -> None:
        self.secret = NodeSecret.load_or_create(state / "secret.json", 1)
        self.source = FileSource(directory, threads=2)
        self.source.open()
        self.engine = Engine(self.source, directory.name, record_secret=self.secret.record_secret)
        self.discloser = Discloser(POLICY, self.secret)

    def answer(self, queries: list[QuerySpec]) -> list[QueryTable]:
        now = dt.datetime.now(dt.UTC)
        request = RequestSpec(
            "r", "r", catalogue.CATALOGUE_VERSION, PERIOD, tuple(queries), now, now, os.urandom(16)
        )
        tables, _ = self.discloser.protect(request, self.engine.evaluate_many(PERIOD, queries))
        return tables

    def close(self) -> None:
        self.source.close()


@pytest.fixture(scope="module")
def carrier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("consistency")
    (directory,) = write_carriers(root, SynthConfig(carriers=1, members=3_000, seed=9, months=3))
    return directory


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("node-state")


@pytest.fixture(scope="module")
def node(carrier: Path, state: Path) -> Iterator[Node]:
    made = Node(carrier, state)
    yield made
    made.close()


def _values(table: QueryTable) -> dict[tuple[str, ...], dict[str, object]]:
    return {tuple(v for _, v in c.key): {s.name: s.value for s in c.stats} for c in table.cells}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_a_cell_has_one_value_in_every_query_and_metric(node: Node, data: st.DataObject) -> None:
    first, second = (
        data.draw(st.sampled_from(MEMBER_METRICS)),
        data.draw(st.sampled_from(MEMBER_METRICS)),
    )
    dims = data.draw(st.lists(st.sampled_from(DIMS), min_size=1, max_size=2, unique=True))
    by_all = wire.make_query(first, group_by=dims)
    (grouped,) = node.answer([by_all])
    cells = _values(grouped)
    assert cells
    key = data.draw(st.sampled_from(sorted(cells)))
    # The same cell selected by a filter instead of a grouping, in another metric.
    kept = data.draw(st.integers(0, len(dims) - 1))
    filters = {dims[kept]: [key[kept]]}
    rest = [d for i, d in enumerate(dims) if i != kept]
    selected = wire.make_query(second, group_by=rest, filters=filters)
    (other,) = node.answer([selected])
    same = _values(other)[tuple(v for i, v in enumerate(key) if i != kept)]
    for name in ("member_months", "members"):
        assert cells[key][name] == same[name], (first, second, dims, key, name)


def test_a_restart_gives_the_same_answer(node: Node, carrier: Path, state: Path) -> None:
    queries = [
        wire.make_query("cost.pmpm", group_by=[D.MONTH, D.AGE_BAND]),
        wire.make_query("util.scripts", group_by=[D.SEX]),
        wire.make_query("cost.distribution", group_by=[D.AGE_BAND]),
    ]
    before = node.answer(queries)
    restarted = Node(carrier, state)
    try:
        assert restarted.answer(queries) == before
    finally:
        restarted.close()


def test_a_late_claim_draws_new_noise_for_the_cells_it_touches_only(
    carrier: Path, tmp_path: Path
) -> None:
    copy = tmp_path / carrier.name
    shutil.copytree(carrier, copy)
    state = tmp_path / "state"
    query = wire.make_query("cost.pmpm", group_by=[D.MONTH, D.PLAN_CODE, D.AGE_BAND])
    node = Node(copy, state)
    try:
        (before,) = node.answer([query])
        raw_before = {c.key: c for c in node.engine.evaluate(PERIOD, query).cells}
    finally:
        node.close()
    claims = pq.read_table(copy / "medical_claims.parquet")
    frame = claims.to_pandas()
    late = frame[frame["claim_start_date"].astype(str).str.startswith("2026-02")].head(40).copy()
    late["claim_id"] = late["claim_id"].astype(str) + "-late"
    late["allowed_amount"] = late["allowed_amount"].map(lambda v: v + 137)
    pq.write_table(
        pa.Table.from_pandas(
            pd.concat([frame, late], ignore_index=True), schema=claims.schema, preserve_index=False
        ),
        copy / "medical_claims.parquet",
    )
    node = Node(copy, state)
    try:
        (after,) = node.answer([query])
        raw_after = {c.key: c for c in node.engine.evaluate(PERIOD, query).cells}
    finally:
        node.close()
    released_before = {c.key: c.stat("allowed_cents") for c in before.cells}
    touched = untouched = redrawn = 0
    for cell in after.cells:
        stat, old = cell.stat("allowed_cents"), released_before[cell.key]
        truth_after = raw_after[cell.key].value("allowed_cents")
        truth_before = raw_before[cell.key].value("allowed_cents")
        if stat.status.withheld or old.status.withheld:
            continue
        if truth_after == truth_before:
            untouched += 1
            assert stat.value == old.value  # same contents, same release
            continue
        touched += 1
        noise_before = old.value - truth_before  # type: ignore[operator]
        noise_after = stat.value - truth_after  # type: ignore[operator]
        redrawn += noise_before != noise_after
        # The change of the release is never the late claims' dollars.
        assert stat.value - old.value != truth_after - truth_before  # type: ignore[operator]
    assert touched >= 5 and untouched >= 5
    assert redrawn == touched


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_no_released_value_rests_on_one_to_ten_members(
    node: Node, carrier: Path, data: st.DataObject
) -> None:
    spec = data.draw(st.sampled_from([m for m in catalogue.METRICS if not m.one_of]))
    usable = [d for d in (*DIMS, D.DRUG_CLASS) if d in spec.dimensions]
    dims = data.draw(st.lists(st.sampled_from(usable), max_size=2, unique=True))
    query = wire.make_query(spec.name, group_by=dims)
    (table,) = node.answer([query])
    frame = oracle.compute(
        spec.name,
        {carrier.name: oracle.load_carrier(carrier)},
        PERIOD,
        tuple(dims),
        disclosure=True,
    )
    rows = {
        tuple(str(r[d.value]) for d in dims): r
        for r in frame.to_dict("records")
        if r["scope"] == carrier.name
    }
    for cell in table.cells:
        row = rows[tuple(v for _, v in cell.key)]
        for stat in cell.stats:
            declared = get_metric(spec.name).statistic(stat.name)
            if declared.kind is StatKind.HISTOGRAM or not declared.by_members:
                continue
            support = as_count(
                row[stat.name]
                if declared.kind is StatKind.MEMBERS
                else row.get(f"{stat.name}__support")
            )
            if not stat.status.withheld:
                assert support == 0 or support >= POLICY.min_cell_size, (spec.name, stat.name)
            assert stat.status.withheld == expected_withheld(
                get_metric(spec.name), declared, row, POLICY.min_cell_size, False
            )
