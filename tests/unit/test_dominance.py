"""The p% dominance rule on dollar cells: the engine's member contributions, checked against
independent pandas computations, and what the disclosure pipeline does with them.

A small synthetic carrier gets one planted member with a huge allowed amount in January; that
member dominates January's dollar totals and nothing else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carrier_node import metrics
from carrier_node.datasource import FileSource
from carrier_node.engine import Engine, RawCell, RawTable
from carrier_node.policy import Dominance, Policy
from carrier_node.protect import COMPLEMENTARY, DOMINANCE, Protector, TableDecision, dominated
from carrier_node.sdc.audit import intervals
from carrier_node.sdc.tables import Table
from fedoversight import catalogue
from fedoversight.catalogue import METRICS, StatKind, get_metric
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec, QueryTable, RequestSpec, Status
from fedoversight.periods import Period
from oversight_sim.synth import SynthConfig, write_carriers
from tests import oracle
from tests.unit.test_metrics_engine import Data, MemorySource

CARRIER = "c001"
PERIOD = Period.parse("2026-01:2026-03")
#: The planted member's January claim: far above any month's total of everyone else.
PLANTED_ALLOWED = Decimal("20000000.00")
PLANTED_PAID = Decimal("19000000.00")
P_PERCENT = Policy().dominance.p_percent


# --- data -------------------------------------------------------------------------------------


def planted_carrier(root: Path) -> tuple[Path, str]:
    """A 1,500-member carrier (three months) written under ``root``, with one member's planted
    January claim; its directory and the member's id."""
    (directory,) = write_carriers(root, SynthConfig(carriers=1, members=1500, seed=23, months=3))
    eligibility = pq.read_table(directory / "eligibility.parquet").to_pandas()
    spans = eligibility.groupby("member_id").size()
    single = eligibility[eligibility["member_id"].map(spans) == 1]
    whole_quarter = single[
        (pd.to_datetime(single["enrollment_start_date"]) <= "2026-01-01")
        & (
            single["enrollment_end_date"].isna()
            | (pd.to_datetime(single["enrollment_end_date"]) >= "2026-03-31")
        )
    ]
    member = str(whole_quarter["member_id"].iloc[0])
    path = directory / "medical_claims.parquet"
    medical = pq.read_table(path)
    rows = medical.to_pylist()
    template = next(r for r in rows if r["claim_type"] == "professional")
    day = dt.date(2026, 1, 15)
    planted_row = template | {
        "claim_id": "PLANTED0001",
        "claim_line": 1,
        "member_id": member,
        "claim_status": "paid",
        "claim_start_date": day,
        "claim_end_date": day,
        "paid_date": dt.date(2026, 1, 29),
        "charge_amount": PLANTED_ALLOWED,
        "allowed_amount": PLANTED_ALLOWED,
        "paid_amount": PLANTED_PAID,
    }
    if "claim_version" in planted_row:
        planted_row["claim_version"] = 1
    extra = pa.Table.from_pylist([planted_row], schema=medical.schema)
    pq.write_table(pa.concat_tables([medical, extra]), path)
    return directory, member


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return planted_carrier(tmp_path_factory.mktemp("dominance"))


@pytest.fixture(scope="module")
def engine(planted: tuple[Path, str]) -> Iterator[Engine]:
    source = FileSource(planted[0])
    source.open()
    try:
        yield Engine(source, CARRIER)
    finally:
        source.close()


def _request(*queries: QuerySpec) -> RequestSpec:
    now = dt.datetime.now(dt.UTC)
    return RequestSpec(
        request_id="r-dominance",
        round_id="round",
        catalogue_version=catalogue.CATALOGUE_VERSION,
        period=PERIOD,
        queries=queries,
        issued_at=now,
        expires_at=now,
        nonce=b"\0" * 16,
    )


def _protect(raw: RawTable, policy: Policy | None = None) -> tuple[QueryTable, TableDecision]:
    policy = policy or Policy(differencing_guard=False)
    tables, decisions = Protector(policy).protect(_request(raw.query), [raw])
    return tables[0], decisions[0]


def _contributions(cell: RawCell) -> dict[str, tuple[int, int, int]]:
    return dict(cell.contributions)


# --- an independent pandas computation: cost.pmpm by month -----------------------------------


def _cents(values: pd.Series) -> pd.Series:
    return values.map(lambda v: int(Decimal(str(v)) * 100)).astype("int64")


def _pandas_member_months(directory: Path) -> pd.DataFrame:
    """cost.pmpm's rows summed per member and month, read straight from the files: medical
    (claim_start_date) and pharmacy (fill_date) rows of every status, counted in a month when
    an enrollment span of the member covers a day of it."""
    eligibility = pq.read_table(directory / "eligibility.parquet").to_pandas()
    medical = pq.read_table(directory / "medical_claims.parquet").to_pandas()
    pharmacy = pq.read_table(directory / "pharmacy_claims.parquet").to_pandas()
    rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "member_id": medical["member_id"],
                    "day": pd.to_datetime(medical["claim_start_date"]),
                    "allowed": _cents(medical["allowed_amount"]),
                    "paid": _cents(medical["paid_amount"]),
                }
            ),
            pd.DataFrame(
                {
                    "member_id": pharmacy["member_id"],
                    "day": pd.to_datetime(pharmacy["fill_date"]),
                    "allowed": _cents(pharmacy["allowed_amount"]),
                    "paid": _cents(pharmacy["paid_amount"]),
                }
            ),
        ],
        ignore_index=True,
    )
    rows["month"] = rows["day"].dt.strftime("%Y-%m")
    rows = rows[rows["month"].isin([str(m) for m in PERIOD.months()])]
    enrolled = set()
    for m in PERIOD.months():
        first, last = pd.Timestamp(m.first_day), pd.Timestamp(m.last_day)
        start = pd.to_datetime(eligibility["enrollment_start_date"])
        end = pd.to_datetime(eligibility["enrollment_end_date"])
        covers = (start <= last) & (end.isna() | (end >= first)) & (end.isna() | (end >= start))
        enrolled |= {(member, str(m)) for member in eligibility.loc[covers, "member_id"]}
    keep = [(r, m) in enrolled for r, m in zip(rows["member_id"], rows["month"], strict=True)]
    rows = rows[np.asarray(keep, dtype=bool)]
    return rows.groupby(["month", "member_id"], as_index=False)[["allowed", "paid"]].sum()


def _top_two(values: pd.Series) -> tuple[int, int, int]:
    """(total, largest, runner-up), contributions below zero read as 0."""
    ordered = sorted((int(v) for v in values), reverse=True)
    largest = max(ordered[0], 0) if ordered else 0
    second = max(ordered[1], 0) if len(ordered) > 1 else 0
    return int(sum(ordered)), largest, second


def test_contributions_match_pandas_and_the_planted_member_dominates_january(
    planted: tuple[Path, str], engine: Engine
) -> None:
    directory, _ = planted
    raw = engine.evaluate(PERIOD, QuerySpec("cost.pmpm", 1, (D.MONTH,)))
    per_member = _pandas_member_months(directory)
    by_month = {cell.key[0][1]: cell for cell in raw.cells}
    assert sorted(by_month) == ["2026-01", "2026-02", "2026-03"]
    for month, cell in by_month.items():
        mine = per_member[per_member["month"] == month]
        got = _contributions(cell)
        assert set(got) == {"allowed_cents", "paid_cents"}
        for stat, column in (("allowed_cents", "allowed"), ("paid_cents", "paid")):
            assert got[stat] == _top_two(mine[column]), (month, stat)
            assert got[stat][0] == cell.value(stat)
            assert cell.value("claimants") == len(mine)
    january = _contributions(by_month["2026-01"])["allowed_cents"]
    assert january[1] >= int(PLANTED_ALLOWED * 100)  # the planted member is the largest
    assert dominated(*january, P_PERCENT)
    for month in ("2026-02", "2026-03"):
        for stat in ("allowed_cents", "paid_cents"):
            assert not dominated(*_contributions(by_month[month])[stat], P_PERCENT), month


def test_the_dominated_total_is_withheld_for_dominance_the_others_released(
    engine: Engine,
) -> None:
    raw = engine.evaluate(PERIOD, QuerySpec("cost.pmpm", 1, (D.MONTH,)))
    table, decision = _protect(raw)
    months = [cell.key[0][1] for cell in raw.cells]
    january = months.index("2026-01")
    assert decision.reasons == {}  # no cell is withheld whole: its counts stand
    assert decision.withheld[january] == {"allowed_cents": DOMINANCE, "paid_cents": DOMINANCE}
    cell = table.cells[january]
    for stat in ("allowed_cents", "paid_cents"):
        assert cell.stat(stat).status is Status.SUPPRESSED_PRIMARY
        assert cell.stat(stat).value is None
    assert cell.stat("member_months").value == raw.cells[january].value("member_months")
    assert table.disclosure.cells_suppressed_primary == 1
    # One month of three is a line with the total as margin: another month's dollars must go
    # too, and the one left is released exactly.
    # January's $2.06B against the total less the other months: any month released would
    # bound January from above within p% (the others hold about $50M each, under 10% of it),
    # so the other months' dollars go too; their counts stand.
    others = [i for i in decision.withheld if i != january]
    assert len(others) == 2
    for i in others:
        assert set(decision.withheld[i].values()) == {COMPLEMENTARY}
        assert table.cells[i].stat("allowed_cents").status is Status.SUPPRESSED_COMPLEMENTARY
        assert table.cells[i].stat("members").value == raw.cells[i].value("members")
    # With every month's dollars hidden, only the total bounds January; and the total is
    # itself dominated by the same member, so it is withheld when asked for.
    whole, whole_decision = _protect(engine.evaluate(PERIOD, QuerySpec("cost.pmpm", 1)))
    assert whole_decision.withheld == {0: {"allowed_cents": DOMINANCE, "paid_cents": DOMINANCE}}
    assert whole.cells[0].stat("allowed_cents").value is None


def test_without_the_rule_or_with_a_small_p_the_cell_is_released(engine: Engine) -> None:
    raw = engine.evaluate(PERIOD, QuerySpec("cost.pmpm", 1, (D.MONTH,)))
    off = Policy(differencing_guard=False, dominance=Dominance(enabled=False))
    table, decision = _protect(raw, off)
    assert decision.reasons == {}
    assert all(c.status is Status.RELEASED for c in table.cells)
    # At p = 0.1% the rest of January (about $0.6M) hides $20M well enough.
    lenient = Policy(differencing_guard=False, dominance=Dominance(p_percent=0.1))
    assert _protect(raw, lenient)[1].withheld == {}
    # Dropping the contributions (as before the engine reported them) releases it too: the
    # rule fires only from what the engine measured.
    bare = RawTable(raw.query, tuple(dataclasses.replace(c, contributions=()) for c in raw.cells))
    assert _protect(bare)[1].withheld == {}
    assert _protect(raw)[1].withheld  # (while with them it is withheld)


def test_complementary_suppression_protects_the_dominated_cell_in_two_dimensions(
    planted: tuple[Path, str], engine: Engine
) -> None:
    raw = engine.evaluate(PERIOD, QuerySpec("cost.pmpm", 1, (D.MONTH, D.SEX)))
    table, decision = _protect(raw)
    dominated_cells = [i for i, c in enumerate(raw.cells)
                       if dominated(*_contributions(c)["allowed_cents"], P_PERCENT)]
    assert dominated_cells, "the planted member's cell is dominated"
    assert any(raw.cells[i].key[0][1] == "2026-01" for i in dominated_cells)
    hidden = set(decision.reasons) | {
        i for i, d in decision.withheld.items() if "allowed_cents" in d}
    assert set(dominated_cells) <= hidden
    # Every line through a dominated cell hides another cell's dollars as well.
    keys = tuple(c.key for c in raw.cells)
    dollars = Table(keys=keys, values=tuple(c.value("allowed_cents") for c in raw.cells))
    for i in dominated_cells:
        for line in (line for line in dollars.lines() if i in line):
            assert len(hidden.intersection(line)) >= 2, line
    # And what the released dollars and every margin give an analyst leaves each dominated
    # total at least p% of itself away from its upper and its lower bound, or (where a margin
    # alone already bounds it closer: January's row, itself a dominated total) no closer than
    # the margins alone do.
    found = intervals(dollars, hidden, 1)
    alone = intervals(dollars, range(len(keys)), 1)
    for i in dominated_cells:
        value = dollars.values[i]
        for iv in (found[i], alone[i]):
            assert iv.low <= value <= iv.high
        slack = min(found[i].high - value, value - found[i].low)
        floor = min(alone[i].high - value, value - alone[i].low)
        assert slack >= min(P_PERCENT / 100 * value, floor) - 1e-6, (i, found[i], value)
    for i in hidden:
        assert table.cells[i].stat("allowed_cents").value is None


def test_every_dollar_statistic_has_contributions_but_rebates() -> None:
    for spec in METRICS:
        cents = {s.name for s in spec.statistics if s.kind is StatKind.CENTS}
        contributed = set(metrics.contributed_statistics(spec))
        exempt = metrics.NO_MEMBER_CONTRIBUTIONS.get(spec.key, frozenset())
        assert contributed | exempt == cents and not contributed & exempt, spec.key
    assert {"rx.rebate_share@1": frozenset({"rebate_cents"})} == metrics.NO_MEMBER_CONTRIBUTIONS


# --- every dollar metric against the oracle's facts ------------------------------------------

#: One query per metric with dollar statistics (groupings that split members' rows apart).
DOLLAR_QUERIES = [
    QuerySpec("cost.pmpm", 1, (D.MONTH, D.AGE_BAND)),
    QuerySpec("cost.pmpm_by_service_category", 1, (D.SERVICE_CATEGORY,)),
    QuerySpec("cost.pmpm_by_service_category", 1, (D.SERVICE_CATEGORY_2, D.MONTH)),
    QuerySpec("cost.member_cost_share_pmpm", 1, (D.MONTH,)),
    QuerySpec("cost.distribution", 1, (D.AGE_BAND,)),
    QuerySpec("cost.high_cost_claimants", 1, (D.SEX,)),
    QuerySpec("cost.out_of_network_share", 1, (D.MONTH,)),
    QuerySpec("rx.specialty_share", 1, (D.QUARTER,), (), (("cost_per_30_days", 500.0),)),
    QuerySpec("rx.spend_by_class", 1, (D.DRUG_CLASS, D.MONTH)),
    QuerySpec("rx.rebate_share", 1, (D.QUARTER, D.DRUG_CLASS)),
    QuerySpec("ops.claims_lag", 1, (D.MONTH,)),
    QuerySpec("ops.denial_rate", 1, (D.AGE_BAND,)),
    QuerySpec("ops.denial_rate", 1),
]


def test_every_dollar_metric_is_queried_here() -> None:
    with_cents = {s.name for s in METRICS if any(x.kind is StatKind.CENTS for x in s.statistics)}
    assert {q.metric for q in DOLLAR_QUERIES} == with_cents


@pytest.fixture(scope="module")
def oracle_tables(planted: tuple[Path, str]) -> dict[str, pd.DataFrame]:
    return oracle.load_carrier(planted[0])


def _oracle_contributions(
    tables: dict[str, pd.DataFrame], query: QuerySpec
) -> dict[tuple[str, ...], dict[str, tuple[int, int, int]]]:
    """(total, largest, runner-up) per cell and dollar statistic, from the oracle's own fact
    tables (plain pandas, sharing nothing with the node): each statistic's rows summed per
    member and cell; members of the cell without a row of that statistic contribute 0."""
    spec = oracle.METRICS[query.metric]
    parameters = dict(spec.parameters) | dict(query.parameters)
    union = oracle._Union({CARRIER: tables}, PERIOD, parameters)
    facts = spec.facts(union)
    keys = [d.value for d in query.group_by]
    contributed = set(metrics.contributed_statistics(get_metric(query.metric, 1)))
    out: dict[tuple[str, ...], dict[str, tuple[int, int, int]]] = {}
    for stat in spec.statistics:
        if stat.name not in contributed:
            continue
        assert stat.how == "sum" and stat.column is not None
        frame = facts[stat.facts]
        mask = (
            np.ones(len(frame), dtype=bool)
            if stat.where is None
            else frame[stat.where].to_numpy(dtype=bool, na_value=False)
        )
        values = np.where(mask, frame[stat.column].to_numpy(dtype=np.int64), 0)
        who = [*keys, oracle._MEMBER]
        per_member = frame[who].assign(_v=values).groupby(who, observed=True)["_v"].sum()
        if keys:
            grouped: Any = per_member.groupby(level=keys, observed=True)
        else:
            grouped = [((), per_member)]
        for key, members in grouped:
            cell = tuple(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            out.setdefault(cell, {})[stat.name] = _top_two(members)
    return out


@pytest.mark.parametrize("query", DOLLAR_QUERIES, ids=lambda q: f"{q.metric}-{len(q.group_by)}")
def test_contributions_match_the_oracle(
    engine: Engine, oracle_tables: dict[str, pd.DataFrame], query: QuerySpec
) -> None:
    raw = engine.evaluate(PERIOD, query)
    want = _oracle_contributions(oracle_tables, query)
    assert any(top1 > 0 for c in raw.cells for _, (_, top1, _) in c.contributions)
    for cell in raw.cells:
        key = tuple(v for _, v in cell.key)
        got = _contributions(cell)
        assert set(got) == set(metrics.contributed_statistics(get_metric(query.metric, 1)))
        for stat, triple in got.items():
            assert triple[0] == cell.value(stat)
            expected = want.get(key, {}).get(stat, (0, 0, 0))
            assert triple == expected, (key, stat)


def test_person_metrics_see_the_planted_member_as_their_largest_contribution(
    engine: Engine,
) -> None:
    (hcc,) = engine.evaluate(PERIOD, QuerySpec("cost.high_cost_claimants", 1)).cells
    got = _contributions(hcc)
    planted = int(PLANTED_ALLOWED * 100)
    assert got["allowed_cents"][1] >= planted
    assert got["hcc_1m_allowed_cents"][1] == got["allowed_cents"][1]  # the same person
    # (That cell rests on one member at $1M and is withheld as a small cell anyway.)
    raw = engine.evaluate(PERIOD, QuerySpec("cost.distribution", 1))
    (cell,) = raw.cells
    assert _contributions(cell)["allowed_cents"] == (
        hcc.value("allowed_cents"),
        *got["allowed_cents"][1:],
    )
    table, decision = _protect(raw)
    assert decision.withheld == {0: {"allowed_cents": DOMINANCE, "allowed_histogram": DOMINANCE}}
    (cell,) = table.cells
    assert cell.stat("allowed_cents").value is None
    assert cell.stat("allowed_histogram").value is None  # the histogram goes with it
    assert cell.stat("members").value == raw.cells[0].value("members")


# --- hand-built cells: ties, negative net, a lone member ---------------------------------------


def test_ties_negative_members_and_lone_members() -> None:
    data = Data()
    for member in ("a", "b", "c", "d", "e", "neg"):
        data.member(member)
    data.medical("a", "2026-01-05", allowed_amount="300.00", paid_amount="10.00")
    data.medical("a", "2026-01-06", allowed_amount="200.00", paid_amount="10.00")
    data.medical("b", "2026-01-07", allowed_amount="500.00", paid_amount="5.00")  # ties a
    data.medical("c", "2026-01-08", allowed_amount="40.00", paid_amount="1.00")
    data.fill("neg", "2026-01-09", allowed_amount="-70.00", paid_amount="-70.00")
    data.medical("d", "2026-02-03", allowed_amount="80.00", paid_amount="80.00")
    data.fill("e", "2026-02-04", allowed_amount="-30.00", paid_amount="-30.00")  # nets < 0
    data.medical("d", "2026-03-03", allowed_amount="-5.00", paid_amount="-5.00")  # alone, < 0
    query = QuerySpec("cost.pmpm", 1, (D.MONTH,))
    raw = Engine(MemorySource(data.rows), "c042").evaluate(PERIOD, query)
    got = {cell.key[0][1]: _contributions(cell) for cell in raw.cells}
    assert got["2026-01"]["allowed_cents"] == (97_000, 50_000, 50_000)
    assert got["2026-01"]["paid_cents"] == (-4_400, 2_000, 500)
    assert got["2026-02"]["allowed_cents"] == (5_000, 8_000, 0)
    assert got["2026-03"]["allowed_cents"] == (-500, 0, 0)
    # The tie: each of the two could estimate the other exactly from the total less theirs
    # and the small rest, so the cell is dominated.
    assert dominated(97_000, 50_000, 50_000, P_PERCENT)
