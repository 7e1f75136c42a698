"""Every metric of the catalogue, federated over 65 simulated carriers on real gRPC, checked
cell by cell against the independent pandas oracle over the union of the carriers' data."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from coordinator.client import RoundOutcome
from coordinator.store import RoundState
from fedoversight import wire
from fedoversight.catalogue import METRICS
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec
from fedoversight.histogram import RELATIVE_ERROR_BOUND, Histogram, bin_index
from fedoversight.periods import Period
from fedoversight.testing import SimulatedFederation
from tests.integration.helpers import compare, query_tables

PERIOD = Period.parse("2026-01:2026-03")


def q(metric: str, *dims: D, **filters: list[str]) -> QuerySpec:
    return wire.make_query(
        metric, group_by=dims, filters={D(k): v for k, v in filters.items()} or None
    )


#: (period, queries) per round; each metric with a few groupings.
ROUNDS: list[tuple[Period, list[QuerySpec]]] = [
    (
        PERIOD,
        [
            q("enrollment.member_months", D.QUARTER, D.ENROLLEE_TYPE),
            q("cost.member_cost_share_pmpm"),
            q("cost.member_cost_share_pmpm", D.MONTH),
            q("cost.distribution"),
            q("cost.distribution", D.AGE_BAND),
            q("cost.high_cost_claimants"),
            q("cost.high_cost_claimants", D.MEDICARE_PRIMARY),
            q("cost.out_of_network_share"),
            q("cost.out_of_network_share", D.MONTH),
            q("util.inpatient"),
            q("util.inpatient", D.AGE_BAND),
            q("util.ed_visits"),
            q("util.ed_visits", D.MONTH, D.SEX),
            q("util.office_visits"),
            q("util.office_visits", D.AGE_BAND),
            q("util.scripts"),
            q("util.scripts", D.MONTH),
        ],
    ),
    (
        PERIOD,
        [
            q("rx.generic_dispensing_rate"),
            q("rx.generic_dispensing_rate", D.DRUG_CLASS),
            q("rx.specialty_share"),
            wire.make_query("rx.specialty_share", parameters={"cost_per_30_days": 1000.0}),
            q("rx.spend_by_class", D.DRUG_CLASS),
            q("rx.spend_by_class", D.DRUG_CLASS, D.MONTH),
            q("rx.rebate_share", D.QUARTER),
            q("rx.rebate_share", D.QUARTER, D.DRUG_CLASS),
            q("quality.breast_cancer_screening"),
            q("quality.breast_cancer_screening", D.PROGRAM),
            q("quality.diabetes_hba1c_testing"),
            q("quality.diabetes_hba1c_testing", D.SEX),
            q("quality.statin_use_diabetes"),
            q("ops.claims_lag", D.MONTH),
            q("ops.denial_rate"),
            q("ops.denial_rate", D.MONTH),
            q("ops.data_quality", D.MONTH),
            q("cost.pmpm", D.PLAN_CODE, program=["FEHB"]),
        ],
    ),
    (
        Period.parse("2026-02"),
        [
            q("enrollment.churn"),
            q("enrollment.churn", D.AGE_BAND),
        ],
    ),
    (
        Period.parse("2026-01:2026-02"),
        [
            q("outcome.readmission_30d"),
            q("outcome.readmission_30d", D.MONTH),
        ],
    ),
]


def test_every_catalogue_metric_is_exercised() -> None:
    covered = {query.metric for _, queries in ROUNDS for query in queries}
    covered |= {"enrollment.member_months", "cost.pmpm", "cost.pmpm_by_service_category"}
    assert covered == {m.name for m in METRICS}


#: The whole catalogue over 65 carriers in one process: the first test waits for its rounds.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def outcomes(
    federation_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> list[RoundOutcome]:
    import asyncio

    async def run() -> list[RoundOutcome]:
        out = []
        async with SimulatedFederation(
            federation_data, tmp_path_factory.mktemp("catalogue")
        ) as fed:
            assert fed.client is not None
            for period, queries in ROUNDS:
                out.append(await fed.client.run_round(period, queries, deadline_seconds=600))
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("round_index", "query_index"),
    [(r, i) for r, (_, queries) in enumerate(ROUNDS) for i in range(len(queries))],
)
def test_metric_matches_the_oracle(
    outcomes: list[RoundOutcome],
    oracle_tables: dict[str, dict[str, pd.DataFrame]],
    round_index: int,
    query_index: int,
) -> None:
    period, queries = ROUNDS[round_index]
    outcome = outcomes[round_index]
    assert outcome.state is RoundState.COMPLETE
    tables = query_tables(outcome.tables, query_index)
    counts = compare(queries[query_index], period, tables, oracle_tables)
    assert counts["perturbed"] > 0, counts


def test_percentiles_are_within_the_stated_bound(
    outcomes: list[RoundOutcome], oracle_tables: dict[str, dict[str, pd.DataFrame]]
) -> None:
    from fedoversight.testing import oracle

    distribution = query_tables(outcomes[0].tables, 3)  # cost.distribution, no grouping
    program = distribution[0]
    assert program.scope == "program" and program.metric == "cost.distribution"
    (cell,) = program.cells
    # The percentiles are read from the sum of the carriers' released histograms: members of
    # a carrier's withheld histogram or bins are not in it, and every released bin count is
    # off by at most the count noise. So the figure for q lies within half a bin of the true
    # quantiles of the released carriers' members at q ± (those left out and the noise) ÷ n.
    released = {
        t.scope
        for t in distribution[1:]
        if t.cells and not t.cells[0].stat("allowed_histogram").status.withheld
    }
    assert len(released) >= 50
    histogram = cell.stat("allowed_histogram")
    assert isinstance(histogram.value, Histogram)
    assert histogram.missing is not None  # the small bins of small carriers are withheld
    totals = oracle.member_period_allowed({c: oracle_tables[c] for c in released}, PERIOD)
    exact = totals.sort_values().to_numpy()
    n = len(exact)
    in_small_bins = 0
    for carrier in released:
        mine = oracle.member_period_allowed({carrier: oracle_tables[carrier]}, PERIOD)
        bins = mine.map(bin_index).value_counts()
        in_small_bins += int(bins[bins < 11].sum())
    assert 0 < in_small_bins <= (histogram.missing.members_at_most or 0)
    noise = 5 * sum(1 for c in histogram.value.counts if c)
    slack = (in_small_bins + noise) / n

    def quantile(q: float) -> float:
        return float(exact[min(n - 1, max(0, math.ceil(q * n) - 1))]) / 100

    for q_ in (50, 75, 90, 95, 99):
        figure = next(f for f in cell.figures if f.name == f"p{q_}")
        low, high = quantile(q_ / 100 - slack), quantile(q_ / 100 + slack)
        assert (1 - RELATIVE_ERROR_BOUND) * low - 0.01 <= figure.value, (q_, figure.value, low)
        assert figure.value <= (1 + RELATIVE_ERROR_BOUND) * high + 0.01, (q_, figure.value, high)
        assert not figure.complete
