"""A thousand carriers in one test run, through the plugin's fixtures: a coordinator and
1,000 light node daemons in this process over real gRPC, mutual TLS and signatures (see
:mod:`oversight_sim.canned`).

The carriers share four synthetic datasets and answer from canned engines (the scenario's
``datasets``); everything else of every node (gate, policy, disclosure control, signing, audit
log, outbox) and of the coordinator is the real thing. One round must reach every carrier,
take exactly one answer from each, and combine them into what the oracle computes over each
carrier's dataset.
"""

from __future__ import annotations

import collections

import pandas as pd
import pytest

from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.testing import Federation, oracle
from fedoversight.v1 import types_pb2

CARRIERS = 1_000
PERIOD = "2026-01:2026-03"
QUERIES = [
    wire.make_query("enrollment.member_months"),
    wire.make_query("enrollment.member_months", group_by=[D.MONTH]),
    wire.make_query("cost.pmpm"),
]
STATS = {
    "enrollment.member_months": ("member_months", "members"),
    "cost.pmpm": ("member_months", "members", "allowed_cents", "paid_cents"),
}
#: Perturbation off: released values are the carriers' own, so sums can be checked exactly.
SCALE = {
    "carriers": CARRIERS,
    "datasets": 4,
    "members": 4_000,
    "seed": 5,
    "months": 3,
    "connect_timeout": 300,
    "deadline_seconds": 300,
    "policy": {"perturbation": {"enabled": False}},
}


def _values(frame: pd.DataFrame, metric: str, by: list[str]) -> dict[tuple[object, ...], int]:
    """(scope, *cell, statistic) -> exact value of the metric's statistics in ``frame``."""
    rows = frame[(frame["metric"] == metric) & frame["statistic"].isin(STATS[metric])]
    if by:
        rows = rows[rows[by].notna().all(axis=1)]
    else:
        rows = rows[[all(pd.isna(v) for v in r) for r in rows[["month"]].itertuples(index=False)]]
    out = {}
    for row in rows.itertuples(index=False):
        cell = tuple(getattr(row, d).strftime("%Y-%m") for d in by)
        out[(row.scope, *cell, row.statistic)] = int(row.value_int)
    return out


@pytest.mark.federation(**SCALE)
def test_a_round_over_1000_carriers_counts_every_answer_once(federation: Federation) -> None:
    carriers = federation.carriers
    assert len(carriers) == CARRIERS and len(carriers.datasets) == 4
    assert federation.harness.coordinator is not None
    assert len(federation.harness.coordinator.hub.sessions) == CARRIERS
    client = federation.client
    frame = client.run_queries(PERIOD, QUERIES)
    outcome = client.last_outcome
    assert outcome is not None
    receipts = federation.call(client.operator.get_receipts(outcome.round_id))
    # Every carrier answered, once; the store holds one receipt per carrier.
    assert frame.attrs["state"] == "complete"
    states = collections.Counter(c["state"] for c in frame.attrs["carriers"])
    assert states == {"answered": CARRIERS}
    answered = [r.carrier_id for r in receipts.receipts]
    assert sorted(answered) == sorted(carriers)  # none lost, none twice
    assert sorted(receipts.answered) == sorted(carriers)
    for receipt in receipts.receipts:
        result = wire.decode_result_bytes(receipt.result.result)
        assert result.carrier_id == receipt.carrier_id and result.round_id == outcome.round_id
        assert receipt.result.signature  # signed by the carrier's key
    assert isinstance(receipts.request, types_pb2.SignedRequest)
    per_dataset = collections.Counter(carriers.values())
    for query in QUERIES:
        by = [str(d) for d in query.group_by]
        got = _values(frame, query.metric, by)
        # What the oracle computes over each dataset: each carrier's own value, and the
        # program's the sum over carriers.
        want: dict[tuple[object, ...], int] = collections.Counter()
        for dataset, n in per_dataset.items():
            expected = oracle.expected(query.metric, {"d": dataset}, PERIOD, by=by)
            expected = expected[expected["scope"] == "d"]
            for row in expected.to_dict("records"):
                cell = tuple(row[d] for d in by)
                for stat in STATS[query.metric]:
                    want[("program", *cell, stat)] += n * int(row[stat])
                    for carrier in (c for c, d in carriers.items() if d == dataset):
                        want[(carrier, *cell, stat)] = int(row[stat])
        assert got == dict(want), query.metric
