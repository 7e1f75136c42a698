"""Purposes, offices, retention and transparency over real gRPC (docs/purpose.md).

One federation of three small carriers, two offices and four rounds: a purpose one carrier
refuses, a grouping its policy forbids for another purpose, a viewer of another office denied,
a round whose results expire (values gone, receipts still provable), the access log recording
every read, and both transparency reports checked against the rounds run here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from carrier_node.cli import main as carrier_main
from carrier_node.policy import Policy, PurposePolicy, PurposeRule
from carrier_node.records.audit import read_entries
from carrier_node.records.transparency import audit_report
from coordinator.cli import app as oversight_app
from coordinator.client import RoundOutcome
from coordinator.config import OfficeEntry, PurposeEntry, Role
from coordinator.export import write_export
from coordinator.provision import OperatorPlan
from coordinator.receipts import verify_kept_copy, verify_round
from coordinator.rounds import new_request, sign_request
from coordinator.store import CarrierRoundState, KeptReceipt, RoundState
from coordinator.transparency import TransparencyReport, report_from_pb
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import Purpose
from fedoversight.errors import (
    InvalidRequestError,
    OversightError,
    PolicyRefusedError,
    PurposeGranularityError,
    PurposeRefusedError,
)
from fedoversight.periods import Period
from fedoversight.signing import Verifier
from fedoversight.testing import OPERATOR, TOKEN_OPERATOR, VIEWER, SimulatedFederation
from fedoversight.v1 import operator_pb2, operator_pb2_grpc, types_pb2

PERIOD = Period.parse("2026-01:2026-03")
PMPM = wire.make_query("cost.pmpm", group_by=[D.AGE_BAND])
MONTHS = wire.make_query("enrollment.member_months", group_by=[D.MONTH, D.AGE_BAND, D.SEX])
SCREENING = wire.make_query("quality.breast_cancer_screening", group_by=[D.PLAN_CODE])

PURPOSES = (
    PurposeEntry(code="plan-cost-oversight", title="Plan cost oversight", retention_days=30),
    PurposeEntry(code="quality-oversight", title="Quality oversight", retention_days=365),
    PurposeEntry(
        code="rate-negotiation-support", title="Rate negotiation support", retention_days=365
    ),
    PurposeEntry(code="program-integrity", title="Program integrity", retention_days=0),
)
OFFICES = (
    OfficeEntry(
        name="actuarial",
        purposes=("plan-cost-oversight", "rate-negotiation-support", "program-integrity"),
    ),
    OfficeEntry(name="quality", purposes=("quality-oversight",)),
)
QUALITY_VIEWER = "quinn"
QUALITY_OPERATOR = "olga"
#: The carrier holding the agency to its purposes: no program integrity, and no month x age
#: band x sex for rate negotiation.
STRICT = Policy(
    purposes=PurposePolicy(
        accepted=("plan-cost-oversight", "quality-oversight", "rate-negotiation-support"),
        rules={
            "rate-negotiation-support": PurposeRule(
                forbidden_groupings=((D.MONTH, D.AGE_BAND, D.SEX),)
            )
        },
    )
)


@pytest.fixture(scope="module")
def carriers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fedoversight.testing import SynthConfig, write_carriers

    root = tmp_path_factory.mktemp("purpose-carriers")
    dirs = write_carriers(root, SynthConfig(carriers=3, members=3000, seed=7, months=3))
    return {d.name: d for d in dirs}


def federation(carriers: dict[str, Path], work: Path, strict: str) -> SimulatedFederation:
    return SimulatedFederation(
        carriers,
        work,
        policies={strict: STRICT},
        coordinator_settings={
            "purposes": PURPOSES,
            "offices": OFFICES,
            "purpose_list_version": "2026.2",
        },
        extra_operators=(
            OperatorPlan(name=QUALITY_VIEWER, role=Role.VIEWER),
            OperatorPlan(name=QUALITY_OPERATOR, role=Role.OPERATOR),
        ),
        operator_offices={
            OPERATOR: "actuarial",
            VIEWER: "actuarial",
            TOKEN_OPERATOR: "actuarial",
            QUALITY_VIEWER: "quality",
            QUALITY_OPERATOR: "quality",
        },
    )


def withheld(outcome: RoundOutcome) -> tuple[int, int]:
    """Cells withheld entirely and partly in the carriers' tables of a round."""
    tables = [t for t in outcome.tables if t.scope != "program" and t.disclosure is not None]
    return (
        sum(t.disclosure.cells_withheld for t in tables if t.disclosure is not None),
        sum(t.disclosure.cells_partly_withheld for t in tables if t.disclosure is not None),
    )


def admitted_purpose(audit: Path, request_id: str) -> object:
    for _, entry in read_entries(audit):
        if entry and entry.get("kind") == "admitted" and entry.get("request_id") == request_id:
            return entry.get("purpose")
    return None


async def test_purposes_offices_retention_and_transparency(
    carriers: dict[str, Path], tmp_path: Path
) -> None:
    strict = sorted(carriers)[-1]
    others = sorted(c for c in carriers if c != strict)
    async with federation(carriers, tmp_path / "run", strict) as fed:
        assert fed.client is not None and fed.coordinator is not None and fed.pki is not None
        store = fed.coordinator.store
        quality = fed.operator_client(QUALITY_OPERATOR)
        quality_viewer = fed.operator_client(QUALITY_VIEWER)
        actuarial_viewer = fed.operator_client(VIEWER)

        # 1. A purpose every carrier accepts: in the signed request, the store, every node's
        # audit log and the export.
        cost = await fed.client.run_round(
            PERIOD,
            [PMPM],
            deadline_seconds=120,
            purpose="plan-cost-oversight",
            justification="premium review ahead of the 2027 rate year",
        )
        assert cost.state is RoundState.COMPLETE
        assert cost.purpose is not None
        assert (cost.purpose.code, cost.purpose.office, cost.purpose.list_version) == (
            "plan-cost-oversight",
            "actuarial",
            "2026.2",
        )
        signed = types_pb2.MetricRequest.FromString(store.get_round(cost.round_id).request_bytes)
        assert signed.purpose.justification == "premium review ahead of the 2027 rate year"
        kept = store.round_purpose(cost.round_id)
        assert kept is not None and kept.office == "actuarial"
        assert kept.retain_until is not None and cost.retain_until == kept.retain_until
        created = store.get_round(cost.round_id).created_at
        assert abs(kept.retain_until - created - dt.timedelta(days=30)) < dt.timedelta(minutes=1)
        for carrier_id, node in fed.nodes.items():
            assert admitted_purpose(node.audit.path, f"{cost.round_id}.q") == {
                "code": "plan-cost-oversight",
                "list_version": "2026.2",
                "justification": "premium review ahead of the 2027 rate year",
                "office": "actuarial",
            }, carrier_id
        export = tmp_path / "cost.json"
        write_export(cost.tables, export, cost.info())
        described = json.loads(export.read_text())["round"]
        assert described["purpose"]["code"] == "plan-cost-oversight"
        assert described["retain_until"] == kept.retain_until.isoformat()
        receipts_before = await fed.client.get_receipts(cost.round_id)

        # 2. A purpose the strict carrier does not accept: refused with the fixed reason.
        integrity = await fed.client.run_round(
            PERIOD,
            [PMPM],
            deadline_seconds=120,
            purpose="program-integrity",
            justification="outlier review of a plan's paid amounts",
        )
        assert integrity.state is RoundState.PARTIAL
        states = {c: (s, m) for c, s, m in integrity.carriers}
        assert states[strict] == (CarrierRoundState.REFUSED, PurposeRefusedError.public)
        assert all(states[c][0] is CarrierRoundState.ANSWERED for c in others)
        assert integrity.retain_until is None  # this purpose keeps results indefinitely

        # 3. A granularity the strict carrier's policy forbids for rate negotiation (and the
        # same grouping answered for plan cost oversight above is another purpose).
        rates = await fed.client.run_round(
            PERIOD,
            [MONTHS, PMPM],
            deadline_seconds=120,
            purpose="rate-negotiation-support",
            justification="utilisation trend for the negotiation of 2027 rates",
        )
        states = {c: (s, m) for c, s, m in rates.carriers}
        assert states[strict] == (CarrierRoundState.REFUSED, PurposeGranularityError.public)
        (code,) = {
            c.error_code for c in store.carrier_rounds(rates.round_id) if c.carrier_id == strict
        }
        assert code == types_pb2.ERROR_CODE_PURPOSE_SCOPE

        # 4. Offices: each asks and reads only the purposes it is entitled to.
        with pytest.raises(PolicyRefusedError, match="not entitled"):
            await quality.create_round(PERIOD, [PMPM], purpose="plan-cost-oversight")
        with pytest.raises(InvalidRequestError, match="not in the coordinator's list"):
            await fed.client.create_round(PERIOD, [PMPM], purpose="marketing")
        screening = await quality.run_round(
            PERIOD,
            [SCREENING],
            deadline_seconds=120,
            purpose="quality-oversight",
            justification="screening rates by plan for the quality report",
        )
        assert screening.state is RoundState.COMPLETE
        assert screening.purpose is not None and screening.purpose.office == "quality"
        with pytest.raises(PolicyRefusedError, match="not entitled"):
            await quality_viewer.get_round(cost.round_id)
        with pytest.raises(PolicyRefusedError, match="not entitled"):
            await quality_viewer.get_receipts(cost.round_id)
        with pytest.raises(PolicyRefusedError, match="not entitled"):
            await actuarial_viewer.get_round(screening.round_id)
        assert {r.round_id for r in await quality_viewer.list_rounds()} == {screening.round_id}
        assert {r.round_id for r in await actuarial_viewer.list_rounds()} == {
            cost.round_id,
            integrity.round_id,
            rates.round_id,
        }
        # Requests operators sign themselves carry their own purpose, of their own office.
        signer = fed.operator_signer
        assert signer is not None
        carriers_named = tuple(sorted(carriers))
        stub = operator_pb2_grpc.OversightStub(fed.client._channel)
        for declared, status in (
            (None, grpc.StatusCode.INVALID_ARGUMENT),  # none declared
            (  # an office not entitled, and not the caller's
                Purpose("quality-oversight", "2026.2", "why", "actuarial"),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
            (  # a list version that is not the coordinator's
                Purpose("plan-cost-oversight", "2026.1", "why", "actuarial"),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ):
            spec = new_request(
                PERIOD, [PMPM], dt.timedelta(hours=1), carriers=carriers_named, purpose=declared
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.CreateRound(
                    operator_pb2.CreateRoundRequest(signed_request=sign_request(spec, signer)),
                    timeout=10,
                )
            assert refused.value.code() is status, declared
        assert len(store.list_rounds(100)) == 4  # none of them made a round
        listed = await quality_viewer.list_purposes()
        assert listed.office == "quality"
        assert [p.code for p in listed.purposes if p.entitled] == ["quality-oversight"]
        read_back = await actuarial_viewer.get_round(cost.round_id)
        assert read_back.tables == cost.tables

        # 5. The access log holds every read of results, granted or denied, in a chain.
        log = store.access_log()
        reads = [(e.operator, e.office, e.action, e.round_id, e.granted) for e in log]
        assert (QUALITY_VIEWER, "quality", "round", cost.round_id, False) in reads
        assert (QUALITY_VIEWER, "quality", "receipts", cost.round_id, False) in reads
        assert (VIEWER, "actuarial", "round", screening.round_id, False) in reads
        assert (VIEWER, "actuarial", "round", cost.round_id, True) in reads
        assert (OPERATOR, "actuarial", "receipts", cost.round_id, True) in reads
        cost_reads = [e for e in store.access_log(cost.round_id) if e.action == "round"]
        # run_round reads it once, the actuarial viewer once; the quality viewer was refused.
        assert [(e.operator, e.granted) for e in cost_reads] == [
            (OPERATOR, True),
            (QUALITY_VIEWER, False),
            (VIEWER, True),
        ]
        assert all(e.purpose == "plan-cost-oversight" for e in cost_reads)
        assert store.verify_access_log()[0]

        # 6. Retention: past 30 days the plan cost round's values are deleted; the other
        # rounds are kept. What was released, and when, stays provable.
        expected_withheld = withheld(cost)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
        assert await fed.coordinator.rounds.delete_expired(later) == [cost.round_id]
        assert store.results(cost.round_id) == []
        gone = await fed.client.get_round(cost.round_id)
        assert gone.tables == () and gone.results_deleted_at == later
        assert gone.state is RoundState.COMPLETE and gone.answered == len(carriers)
        assert (await fed.client.get_round(rates.round_id)).tables  # not expired
        receipts = await fed.client.get_receipts(cost.round_id)
        assert receipts.results_deleted_at.ToDatetime(tzinfo=dt.UTC) == later
        assert receipts.request == receipts_before.request  # the signed request remains
        assert sorted(receipts.answered) == sorted(carriers)
        before = {r.carrier_id: r for r in receipts_before.receipts}
        keys = fed.pki.result_keys_dir
        for receipt in receipts.receipts:
            original = before[receipt.carrier_id]
            assert receipt.result.result == b""  # the values are gone
            assert receipt.result.signature == original.result.signature
            assert receipt.result_sha256 == hashlib.sha256(original.result.result).digest()
            # A kept copy (the carrier's audit log keeps every released result) verifies
            # against what remains, with the carrier's key.
            remains = KeptReceipt(
                cost.round_id,
                receipt.carrier_id,
                False,
                receipt.result_sha256.hex(),
                bytes(receipt.result.signature),
                receipt.result.key_id,
                receipt.received_at.ToDatetime(tzinfo=dt.UTC),
            )
            verifier = Verifier.load(keys / f"{receipt.carrier_id}.pub")
            copy = verify_kept_copy(bytes(original.result.result), remains, verifier)
            assert copy.round_id == cost.round_id
            with pytest.raises(OversightError):
                verify_kept_copy(b"another result", remains, verifier)
            released = [
                e
                for _, e in read_entries(fed.nodes[receipt.carrier_id].audit.path)
                if e and e.get("kind") == "released" and e.get("round_id") == cost.round_id
            ]
            assert [e["result_sha256"] for e in released] == [receipt.result_sha256.hex()]
        verification = verify_round(
            store,
            cost.round_id,
            operator_verifier=fed.operator_signer.verifier if fed.operator_signer else None,
            node_verifiers={c: Verifier.load(keys / f"{c}.pub") for c in carriers},
        )
        assert verification.ok and verification.request_ok
        assert {r.carrier_id for r in verification.receipts if r.deleted} == set(carriers)

        # `oversight round show` says so; `round verify` through the API still passes.
        kit = fed.pki.operators[OPERATOR]
        tls = ["--ca-cert", str(kit.ca_cert), "--cert", str(kit.cert), "--key", str(kit.key)]
        runner = CliRunner()
        shown = await asyncio.to_thread(
            runner.invoke,
            oversight_app,
            ["round", "show", cost.round_id, "--coordinator", fed.address, *tls],
            env={"COLUMNS": "250"},
        )
        assert "results deleted on expiry" in shown.output, shown.output
        assert "plan-cost-oversight" in shown.output and "actuarial" in shown.output
        shown = await asyncio.to_thread(
            runner.invoke,
            oversight_app,
            ["round", "show", rates.round_id, "--coordinator", fed.address, *tls],
            env={"COLUMNS": "250"},
        )
        assert "results kept until" in shown.output, shown.output
        checked = await asyncio.to_thread(
            runner.invoke,
            oversight_app,
            [
                "round",
                "verify",
                cost.round_id,
                "--coordinator",
                fed.address,
                "--operator-key",
                str(fed.pki.operator_public_key),
                "--result-keys",
                str(keys),
                *tls,
            ],
            env={"COLUMNS": "250"},
        )
        assert checked.exit_code == 0, checked.output
        assert "deleted on expiry" in checked.output

        # 7. The coordinator's transparency report, checked against the rounds run here.
        year = str(dt.datetime.now(dt.UTC).year)
        report = report_from_pb(await quality_viewer.transparency_report(year))
        check_coordinator_report(report, cost, integrity, rates, screening, expected_withheld)
        assert report.list_version == "2026.2"

        # 8. The strict carrier's own report from its audit log agrees.
        audit = fed.nodes[strict].audit.path
        mine = audit_report(audit, Period.parse(year))
        assert mine.total("admitted", "plan-cost-oversight") == 1
        assert mine.total("admitted", "quality-oversight") == 1
        assert mine.total("admitted", "program-integrity") == 0
        assert mine.total("released") == 2
        assert mine.sections["refusals"] == (
            (
                (
                    "program-integrity",
                    "actuarial",
                    f"ERROR_CODE_PURPOSE_REFUSED: {PurposeRefusedError.public}",
                ),
                1,
            ),
            (
                (
                    "rate-negotiation-support",
                    "actuarial",
                    f"ERROR_CODE_PURPOSE_SCOPE: {PurposeGranularityError.public}",
                ),
                1,
            ),
        )
        assert mine.total("metrics", item="cost.pmpm") == 1
        assert mine.total("groupings", item="age_band") == 1
        strict_withheld = [
            t.disclosure.cells_withheld
            for t in cost.tables + screening.tables
            if t.scope == strict and t.disclosure is not None
        ]
        assert mine.total("cells_withheld") == sum(strict_withheld)
        printed = await asyncio.to_thread(
            _carrier_cli, ["audit", "report", "--period", year, "--log", str(audit), "--json"]
        )
        assert json.loads(printed) == json.loads(json.dumps(mine.json()))

    # On the coordinator's host, from the round store: the same report, and the access log
    # with its chain checked.
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'insecure = true\nstore_path = "{tmp_path / "run" / "rounds.sqlite3"}"\n'
        'purpose_list_version = "2026.2"\n'
    )
    runner = CliRunner()
    done = runner.invoke(
        oversight_app, ["transparency", "--period", year, "--config", str(config), "--json"]
    )
    assert done.exit_code == 0, done.output
    from_store = json.loads(done.output)
    published = report.json()
    for name, _ in TransparencyReport.SECTIONS:
        assert from_store[name] == published[name], name
    done = runner.invoke(oversight_app, ["access-log", "--config", str(config), "--json"])
    assert done.exit_code == 0, done.output
    entries = json.loads(done.output)
    assert [e["action"] for e in entries][-1] == f"transparency:{Period.parse(year)}"
    assert {(e["operator"], e["granted"]) for e in entries if e["round_id"] == cost.round_id} >= {
        (QUALITY_VIEWER, False),
        (VIEWER, True),
    }


def _carrier_cli(argv: list[str]) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        carrier_main(argv)
    assert done.value.code in (0, None)
    return out.getvalue()


def check_coordinator_report(
    report: TransparencyReport,
    cost: RoundOutcome,
    integrity: RoundOutcome,
    rates: RoundOutcome,
    screening: RoundOutcome,
    cost_withheld: tuple[int, int],
) -> None:
    rounds = {(c.purpose, c.office): c.count for c in report.rounds}
    assert rounds == {
        ("plan-cost-oversight", "actuarial"): 1,
        ("program-integrity", "actuarial"): 1,
        ("rate-negotiation-support", "actuarial"): 1,
        ("quality-oversight", "quality"): 1,
    }
    asked = len(cost.carriers)
    assert report.total("carriers_asked") == 4 * asked
    answered = sum(o.answered for o in (cost, integrity, rates, screening))
    assert report.total("carriers_answered") == answered
    assert report.total("metrics", item="cost.pmpm") == 3
    assert report.total("metrics", item="enrollment.member_months") == 1
    assert report.total("groupings", item="month x age_band x sex") == 1
    assert report.total("groupings", "rate-negotiation-support", "age_band") == 1
    assert {(c.purpose, c.item): c.count for c in report.refusals} == {
        (
            "program-integrity",
            f"ERROR_CODE_PURPOSE_REFUSED: {PurposeRefusedError.public}",
        ): 1,
        (
            "rate-negotiation-support",
            f"ERROR_CODE_PURPOSE_SCOPE: {PurposeGranularityError.public}",
        ): 1,
    }
    assert {(c.purpose, c.count) for c in report.results_deleted} == {("plan-cost-oversight", 1)}
    # Cells withheld: of the deleted round as counted before its deletion, of the others from
    # the results still held.
    assert report.total("cells_withheld", "plan-cost-oversight") == cost_withheld[0]
    assert report.total("cells_partly_withheld", "plan-cost-oversight") == cost_withheld[1]
    for outcome in (integrity, rates, screening):
        assert outcome.purpose is not None
        full, partly = withheld(outcome)
        assert report.total("cells_withheld", outcome.purpose.code) == full
        assert report.total("cells_partly_withheld", outcome.purpose.code) == partly
    assert report.total("cells_withheld") + report.total("cells_partly_withheld") > 0
