"""A thousand carriers in one test run: a coordinator and 1,000 light node daemons in this
process over real gRPC, mutual TLS and signatures (see :mod:`oversight_sim.canned`).

The carriers share four synthetic datasets and answer from canned engines; everything else of
every node (gate, policy, disclosure control, signing, audit log, outbox) and of the
coordinator is the real thing. One round must reach every carrier, take exactly one answer
from each, and combine them into what the carriers' canned answers imply.
"""

from __future__ import annotations

import collections
from pathlib import Path

from carrier_node.policy import Policy
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.periods import Period
from fedoversight.v1 import types_pb2
from oversight_sim.canned import CannedEngine, spread
from oversight_sim.harness import SimulatedFederation
from oversight_sim.synth import SynthConfig, write_carriers
from tests.integration.helpers import query_tables

CARRIERS = 1_000
PERIOD = Period.parse("2026-01:2026-03")
#: Perturbation off: released values are the carriers' own, so sums can be checked exactly.
EXACT = Policy(perturbation={"enabled": False})
QUERIES = [
    wire.make_query("enrollment.member_months"),
    wire.make_query("enrollment.member_months", group_by=[D.MONTH]),
    wire.make_query("cost.pmpm"),
]
STATS = {
    "enrollment.member_months": ("member_months", "members"),
    "cost.pmpm": ("member_months", "members", "allowed_cents", "paid_cents"),
}


async def test_a_round_over_1000_carriers_counts_every_answer_once(tmp_path: Path) -> None:
    datasets = write_carriers(
        tmp_path / "data", SynthConfig(carriers=4, members=4_000, seed=5, months=3)
    )
    carriers = spread(datasets, CARRIERS)
    assert len(carriers) == CARRIERS
    async with SimulatedFederation(
        carriers, tmp_path / "run", policy=EXACT, canned=True, connect_timeout=300
    ) as fed:
        assert fed.client is not None and fed.coordinator is not None
        assert len(fed.coordinator.hub.sessions) == CARRIERS
        outcome = await fed.client.run_round(PERIOD, QUERIES, deadline_seconds=300)
        receipts = await fed.client.get_receipts(outcome.round_id)
        # What each dataset's canned engine answers (raw cells, before protection: with
        # perturbation off and these large cells, exactly what a carrier releases).
        canned = {
            d: {
                q.metric + str(q.group_by): {
                    c.key: dict(c.values)
                    for c in CannedEngine(answers, "c0001").evaluate(PERIOD, q).cells
                }
                for q in QUERIES
            }
            for d, answers in fed.answers.items()
        }
    # Every carrier answered, once; the store holds one receipt per carrier.
    assert outcome.state is RoundState.COMPLETE
    states = collections.Counter(state for _, state, _ in outcome.carriers)
    assert states == {CarrierRoundState.ANSWERED: CARRIERS}
    assert sorted(c for c, _, _ in outcome.carriers) == sorted(carriers)
    answered = [r.carrier_id for r in receipts.receipts]
    assert sorted(answered) == sorted(carriers)  # none lost, none twice
    assert sorted(receipts.answered) == sorted(carriers)
    for receipt in receipts.receipts:
        result = wire.decode_result_bytes(receipt.result.result)
        assert result.carrier_id == receipt.carrier_id and result.round_id == outcome.round_id
        assert receipt.result.signature  # signed by the carrier's key
    assert isinstance(receipts.request, types_pb2.SignedRequest)
    per_dataset = collections.Counter(carriers.values())
    for index, query in enumerate(QUERIES):
        program, *own = query_tables(outcome.tables, index)
        assert program.scope == "program"
        assert sorted(t.scope for t in own) == sorted(carriers)  # one table per carrier
        want = canned[next(iter(canned))][query.metric + str(query.group_by)]
        assert len(program.cells) == len(want) >= 1
        for cell in program.cells:
            for name in STATS[query.metric]:
                stat = cell.stat(name)
                expected = sum(
                    n * canned[d][query.metric + str(query.group_by)][cell.key][name]
                    for d, n in per_dataset.items()
                )
                assert stat.missing is None, (query.metric, cell.key, name)
                assert stat.value == expected, (query.metric, cell.key, name)
        # Each carrier's own table is its dataset's canned answer.
        for table in own:
            answer = canned[carriers[table.scope]][query.metric + str(query.group_by)]
            for cell in table.cells:
                for name in STATS[query.metric]:
                    assert cell.stat(name).value == answer[cell.key][name]
