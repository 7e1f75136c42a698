"""A coordinator and 65 simulated carriers over real gRPC on loopback, checked against the
independent pandas oracle over the union of the carriers' data."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from carrier_node.config import audit_log_path, disclosure_secret_path
from carrier_node.daemon import NodeDaemon
from carrier_node.disclosure import NodeSecret
from carrier_node.policy import Policy
from carrier_node.records.audit import head_path, read_entries
from carrier_node.records.state import node_state_path
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import RequestSpec
from fedoversight.errors import UnknownMetricError
from fedoversight.periods import Period
from fedoversight.testing import SimulatedFederation
from fedoversight.v1 import federation_pb2, types_pb2
from tests.integration.helpers import compare, query_tables

PERIOD = Period.parse("2026-01:2026-03")
#: Perturbation off: exact values where the rules release them.
EXACT = Policy(perturbation={"enabled": False})

QUERIES = [
    wire.make_query("enrollment.member_months"),
    wire.make_query("enrollment.member_months", group_by=[D.MONTH]),
    wire.make_query("enrollment.member_months", group_by=[D.PLAN_CODE, D.AGE_BAND]),
    wire.make_query("enrollment.member_months", group_by=[D.SEX, D.MEDICARE_PRIMARY, D.MONTH]),
    wire.make_query("cost.pmpm"),
    wire.make_query("cost.pmpm", group_by=[D.MONTH]),
    wire.make_query("cost.pmpm", group_by=[D.AGE_BAND, D.SEX]),
    wire.make_query("cost.pmpm", group_by=[D.PLAN_CODE], filters={D.PROGRAM: ["FEHB"]}),
    wire.make_query("cost.pmpm_by_service_category", group_by=[D.SERVICE_CATEGORY]),
    wire.make_query("cost.pmpm_by_service_category", group_by=[D.SERVICE_CATEGORY_2]),
    wire.make_query("cost.pmpm_by_service_category", group_by=[D.SERVICE_CATEGORY, D.MONTH]),
    wire.make_query("cost.pmpm_by_service_category", group_by=[D.AGE_BAND, D.SERVICE_CATEGORY]),
]


async def test_65_carriers_match_the_oracle_to_the_cent(
    federation_data: dict[str, Path],
    oracle_tables: dict[str, dict[str, pd.DataFrame]],
    tmp_path: Path,
) -> None:
    assert len(federation_data) == 65
    """With perturbation off (the policy's validation mode), every released value is the
    oracle's to the cent; the rules withhold what rests on too few members all the same."""
    sent: list[bytes] = []
    async with SimulatedFederation(
        federation_data,
        tmp_path,
        wiretap=lambda m: sent.append(m.SerializeToString()),
        policy=EXACT,
    ) as fed:
        assert fed.client is not None
        outcome = await fed.client.run_round(PERIOD, QUERIES, deadline_seconds=300)
    assert outcome.state is RoundState.COMPLETE
    assert all(state is CarrierRoundState.ANSWERED for _, state, _ in outcome.carriers)
    totals = {"released": 0, "withheld": 0, "perturbed": 0, "program_incomplete": 0}
    for index, query in enumerate(QUERIES):
        counts = compare(query, PERIOD, query_tables(outcome.tables, index), oracle_tables, EXACT)
        for k, v in counts.items():
            totals[k] += v
    # The check had real work to do: many released values, and small carriers' withheld.
    assert totals["released"] > 2_000
    assert totals["withheld"] > 0 and totals["perturbed"] == 0
    # Program-wide totals of the whole period are complete and equal the oracle.
    program_total = next(
        t
        for t in outcome.tables
        if t.scope == "program" and t.metric == "cost.pmpm" and not t.group_by
    )
    (total,) = program_total.cells
    for name in ("member_months", "members", "allowed_cents", "paid_cents"):
        assert total.stat(name).missing is None, name
    assert all(f.complete for f in total.figures)
    # Every node sent hello, result and perhaps heartbeats; at least one result per carrier.
    results = [m for m in sent if federation_pb2.NodeMessage.FromString(m).HasField("result")]
    assert len(results) == 65


async def test_no_carrier_data_leaves_a_node(
    federation_data: dict[str, Path],
    oracle_tables: dict[str, dict[str, pd.DataFrame]],
    tmp_path: Path,
) -> None:
    """Record every message nodes send; no member id, claim id, birth date or NPI appears."""
    chosen = dict(list(sorted(federation_data.items()))[:6])
    sent: list[bytes] = []
    async with SimulatedFederation(
        chosen, tmp_path, wiretap=lambda m: sent.append(m.SerializeToString())
    ) as fed:
        assert fed.client is not None
        outcome = await fed.client.run_round(PERIOD, QUERIES, deadline_seconds=300)
        # A refused request's messages count too.
        bad = RequestSpec(
            request_id="bad-1",
            round_id="bad",
            catalogue_version="1",
            period=PERIOD,
            queries=(QUERIES[0],),
            issued_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=3),
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
            nonce=os.urandom(16),
            carriers=tuple(sorted(chosen)),
        )
        for carrier_id in chosen:
            fed.coordinator.hub.send(  # type: ignore[union-attr]
                carrier_id,
                federation_pb2.CoordinatorMessage(
                    request=types_pb2.SignedRequest(
                        request=wire.request_to_pb(bad).SerializeToString()
                    )
                ),
            )
        await asyncio.sleep(1.0)
    assert outcome.state is RoundState.COMPLETE
    blob = b"\n".join(sent)
    assert len(sent) > 2 * len(chosen)
    secrets: set[str] = set()
    for carrier_id in chosen:  # the node's disclosure secret and what derives from it
        node_secret = NodeSecret.load_or_create(
            disclosure_secret_path(tmp_path / "nodes", carrier_id), 1
        )
        secrets.update(
            {node_secret.secret.hex(), node_secret.record_secret, node_secret.noise_key.hex()}
        )
        secrets.update(  # the members' record keys
            hashlib.md5((node_secret.record_secret + m).encode()).hexdigest()[:12]
            for m in oracle_tables[carrier_id]["eligibility"]["member_id"].astype(str)
        )
    for tables in (oracle_tables[c] for c in chosen):
        secrets.update(tables["eligibility"]["member_id"].astype(str))
        secrets.update(tables["medical_claims"]["claim_id"].astype(str))
        secrets.update(tables["pharmacy_claims"]["claim_id"].astype(str))
        secrets.update(str(d) for d in tables["eligibility"]["birth_date"].dropna())
        for col in ("facility_npi", "rendering_npi"):
            secrets.update(tables["medical_claims"][col].dropna().astype(str))
    secrets.discard("")
    assert len(secrets) > 1000
    leaked = [s for s in secrets if s.encode() in blob]
    assert leaked == []


async def test_a_carrier_that_vanishes_mid_round_leaves_a_partial_round(
    federation_data: dict[str, Path],
    oracle_tables: dict[str, dict[str, pd.DataFrame]],
    tmp_path: Path,
) -> None:
    chosen = dict(list(sorted(federation_data.items()))[:5])
    vanishing = sorted(chosen)[1]
    async with SimulatedFederation(chosen, tmp_path, disconnect_grace_seconds=1.0) as fed:
        assert fed.client is not None
        gate = asyncio.Event()
        node = fed.nodes[vanishing]
        real_evaluate = node.answering.evaluate

        def stalled(request: RequestSpec, budget: object = None) -> object:
            asyncio.run_coroutine_threadsafe(_set(gate), loop)
            import time

            time.sleep(30)  # never answers before it is taken away
            return real_evaluate(request)

        loop = asyncio.get_running_loop()
        node.answering.evaluate = stalled  # type: ignore[method-assign]
        query = wire.make_query("enrollment.member_months", group_by=[D.MONTH])
        round_id = await fed.client.create_round(PERIOD, [query], deadline_seconds=120)
        await asyncio.wait_for(gate.wait(), 30)
        started = asyncio.get_running_loop().time()
        await fed.stop_node(vanishing)
        async for _ in fed.client.watch(round_id, timeout=60):
            pass
        outcome = await fed.client.get_round(round_id)
        assert asyncio.get_running_loop().time() - started < 30  # finished long before deadline
    assert outcome.state is RoundState.PARTIAL
    states = {c: s for c, s, _ in outcome.carriers}
    assert states[vanishing] is CarrierRoundState.DISCONNECTED
    assert sum(s is CarrierRoundState.ANSWERED for s in states.values()) == 4
    rest = {c: t for c, t in oracle_tables.items() if c in chosen and c != vanishing}
    compare(query, PERIOD, outcome.tables, rest, unanswered=1)


async def _set(event: asyncio.Event) -> None:
    event.set()


async def test_bad_data_and_unknown_metrics_end_in_clear_refusals(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    good = sorted(federation_data)[:3]
    dirs = {c: federation_data[c] for c in good}
    # A carrier whose eligibility lacks a required column, one with text in a date column.
    missing = tmp_path / "broken1"
    wrong = tmp_path / "broken2"
    for target, damage in ((missing, "drop"), (wrong, "retype")):
        target.mkdir()
        for f in federation_data[good[0]].iterdir():
            (target / f.name).write_bytes(f.read_bytes())
        frame = pd.read_parquet(target / "eligibility.parquet")
        if damage == "drop":
            frame = frame.drop(columns=["birth_date"])
        else:
            frame["enrollment_start_date"] = "not a date"
        (target / "eligibility.parquet").unlink()
        frame.to_parquet(target / "eligibility.parquet")
    dirs["broken1"], dirs["broken2"] = missing, wrong
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        assert fed.client is not None
        with pytest.raises(UnknownMetricError):
            wire.make_query("cost.nope")
        query = wire.make_query("enrollment.member_months")
        outcome = await fed.client.run_round(PERIOD, [query], deadline_seconds=60)
        # A request for a metric no catalogue has, straight down the stream to a node.
        replies: list[federation_pb2.NodeMessage] = []
        probe = fed.nodes[good[0]]
        probe.connection.wiretap = replies.append
        raw = wire.request_to_pb(
            RequestSpec(
                request_id="probe-1",
                round_id="probe",
                catalogue_version="1",
                period=PERIOD,
                queries=(query,),
                issued_at=dt.datetime.now(dt.UTC),
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
                nonce=os.urandom(16),
                carriers=(good[0],),
            )
        )
        raw.queries[0].metric = "cost.nope"
        assert fed.coordinator is not None
        operator = fed.operator_signer  # genuinely signed: it is the metric that is refused
        assert operator is not None
        data = raw.SerializeToString()
        fed.coordinator.hub.send(
            good[0],
            federation_pb2.CoordinatorMessage(
                request=types_pb2.SignedRequest(
                    request=data, signature=operator.sign(data), key_id=operator.key_id
                )
            ),
        )
        for _ in range(50):
            if replies:
                break
            await asyncio.sleep(0.1)
        # The node is still answering afterwards.
        again = await fed.client.run_round(PERIOD, [query], carriers=[good[0]])
    assert outcome.state is RoundState.PARTIAL
    states = {c: (s, m) for c, s, m in outcome.carriers}
    for broken in ("broken1", "broken2"):
        assert states[broken][0] is CarrierRoundState.REFUSED
        assert states[broken][1] == "the carrier's data source could not answer"
    assert all(states[c][0] is CarrierRoundState.ANSWERED for c in good)
    assert replies and replies[0].HasField("refusal")
    assert replies[0].refusal.code == types_pb2.ERROR_CODE_UNKNOWN_METRIC
    assert again.state is RoundState.COMPLETE


async def test_a_result_is_in_the_audit_log_and_the_outbox_on_disk_before_it_is_sent(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    """The durability order the node promises: what it releases is logged (and kept to be
    resent) before the result goes on the wire, read back from disk at the moment of sending."""
    chosen = dict(sorted(federation_data.items())[:3])
    checked: list[str] = []
    problems: list[str] = []
    nodes: dict[str, NodeDaemon] = {}

    def on_wire(message: federation_pb2.NodeMessage) -> None:
        if not message.HasField("result"):
            return
        result = wire.decode_result_bytes(bytes(message.result.result))
        node = nodes[result.carrier_id]
        digest = hashlib.sha256(message.result.result).hexdigest()
        released = [
            e
            for _, e in read_entries(audit_log_path(node.config))
            if e is not None and e.get("kind") == "released" and e.get("result_sha256") == digest
        ]
        if len(released) != 1:
            problems.append(f"{result.carrier_id}: not in the audit log when sent")
        head = json.loads(head_path(audit_log_path(node.config)).read_text())
        if released and head["seq"] < released[0]["seq"]:
            problems.append(f"{result.carrier_id}: the head lags the released entry")
        with closing(
            sqlite3.connect(node_state_path(node.config.state_dir, result.carrier_id))
        ) as db:
            kept = db.execute(
                "SELECT message FROM outbox WHERE request_id = ?", (result.request_id,)
            ).fetchone()
        if kept is None or federation_pb2.NodeMessage.FromString(kept[0]) != message:
            problems.append(f"{result.carrier_id}: not in the outbox when sent")
        checked.append(result.carrier_id)

    async with SimulatedFederation(chosen, tmp_path, wiretap=on_wire) as fed:
        assert fed.client is not None
        nodes.update(fed.nodes)
        for _ in range(2):
            outcome = await fed.client.run_round(
                PERIOD, [wire.make_query("enrollment.member_months")], deadline_seconds=60
            )
            assert outcome.state is RoundState.COMPLETE
    assert problems == []
    assert sorted(checked) == sorted([*chosen, *chosen])
