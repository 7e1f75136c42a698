"""What operators see is what is true: through the operator API and the CLI, as operators use
them, against a real deployment (mutual TLS, signed requests and results).

- a withheld carrier value leaves every program statistic it belongs to marked incomplete, with
  what it leaves out, in the API response and in CSV, Parquet and JSON exports;
- a round that misses its quorum exits non-zero and names the carriers and why;
- a late result and a result answering another request leave a closed round as it was;
- a class rebated that nobody filled is a cell of its own, and the program sum has its rebates;
- nothing asked is dropped silently; an idempotency key names one round;
- health, reflection, a token-only operator on the operator port, receipts through the API.
"""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from carrier_node.budget import Budget
from coordinator.cli import app as oversight_app
from coordinator.client import OperatorClient
from coordinator.results import round_tables
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import RequestSpec, Status
from fedoversight.errors import InvalidRequestError, OversightError
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.testing import OPERATOR, TOKEN_OPERATOR, SimulatedFederation
from fedoversight.v1 import types_pb2
from tests.integration.test_trust import small, wait_for
from tests.unit.trust_kit import result_for

PERIOD = Period.parse("2026-01:2026-03")
ROOT = Path(__file__).resolve().parents[2]


def cli(fed: SimulatedFederation, *args: str, name: str = OPERATOR) -> list[str]:
    """The operator's TLS options for the CLI."""
    assert fed.pki is not None
    kit = fed.pki.operators[name]
    return [
        *args,
        "--coordinator",
        fed.address,
        "--ca-cert",
        str(kit.ca_cert),
        "--cert",
        str(kit.cert),
        "--key",
        str(kit.key),
    ]


async def run_cli(args: Sequence[str]) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, oversight_app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


@pytest.mark.usefixtures("wide_terminal")
async def test_a_withheld_value_is_incomplete_in_the_api_and_every_export(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 3)
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        code, out = await run_cli(
            cli(
                fed,
                "round",
                "run",
                "--metric",
                "util.inpatient",
                "--period",
                str(PERIOD),
                "--by",
                "state",
                "--output",
                str(tmp_path / "run.csv"),
            )
        )
        assert code == 0, out
        assert fed.client is not None
        round_id = next(
            line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("round r-")
        )
        outcome = await fed.client.get_round(round_id)
        exports = {}
        for suffix in ("csv", "parquet", "json"):
            path = tmp_path / f"out.{suffix}"
            code, out = await run_cli(cli(fed, "round", "export", round_id, str(path)))
            assert code == 0, out
            exports[suffix] = path
    # In the API response: every program statistic a carrier withheld is incomplete.
    program = outcome.tables[0]
    assert program.scope == "program"
    withheld: dict[tuple[tuple[D, str], ...], set[str]] = {}
    for table in outcome.tables[1:]:
        for cell in table.cells:
            key = tuple((d, v) for d, v in cell.key if d is not D.CARRIER)
            withheld.setdefault(key, set()).update(s.name for s in cell.stats if s.status.withheld)
    marked: list[tuple[str, str]] = []
    for cell in program.cells:
        for stat in cell.stats:
            left_out = stat.name in withheld.get(cell.key, set())
            assert (stat.missing is not None) is left_out, (cell.key, stat.name)
            if left_out:
                assert stat.missing is not None and stat.missing.carriers >= 1
                marked.append((cell.key[0][1], stat.name))
    assert marked, "some carrier withheld a value"
    # The same in the exports.
    with exports["csv"].open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["scope"] == "program"]
    assert {r["round_id"] for r in rows} == {round_id}
    # A sum with some carriers' values is "incomplete", one with none left is "withheld";
    # both say what they leave out.
    flagged = {
        (r["state"], r["statistic"])
        for r in rows
        if r["status"] in ("incomplete", "withheld") and r["missing_carriers"]
    }
    assert set(marked) <= flagged
    table = pq.read_table(exports["parquet"])
    assert json.loads(table.schema.metadata[b"fedoversight.round"])["round_id"] == round_id
    parquet = {
        (r["state"], r["statistic"])
        for r in table.to_pylist()
        if r["scope"] == "program" and r["missing_carriers"]
    }
    assert set(marked) <= parquet
    document = json.loads(exports["json"].read_text())
    assert document["round"]["carriers_asked"] == 3
    in_json = {
        (c["key"]["state"], s["name"])
        for t in document["tables"]
        if t["scope"] == "program"
        for c in t["cells"]
        for s in c["statistics"]
        if s["missing"] and s["missing"]["carriers"] >= 1
    }
    assert set(marked) <= in_json


@pytest.mark.usefixtures("wide_terminal")
async def test_a_round_missing_its_quorum_exits_non_zero_and_names_the_carriers(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 3)
    gone, refusing = sorted(dirs)[:2]
    from carrier_node.policy import Policy

    narrow = Policy(metrics=["cost.pmpm"])
    async with SimulatedFederation(dirs, tmp_path / "run", policies={refusing: narrow}) as fed:
        await fed.stop_node(gone)
        code, out = await run_cli(
            cli(
                fed,
                "round",
                "run",
                "--metric",
                "enrollment.member_months",
                "--period",
                str(PERIOD),
                "--quorum",
                "3",
                "--deadline",
                "5",
            )
        )
        assert code == 4, out  # failed: the quorum of 3 was not met
        assert "FAILED" in out
        assert f"{gone}: not connected" in out
        assert f"{refusing}: refused — the carrier's policy does not answer this request" in out
        # The same round with a quorum of one: partial, exit 3, program sums incomplete.
        code, out = await run_cli(
            cli(
                fed,
                "round",
                "run",
                "--metric",
                "enrollment.member_months",
                "--period",
                str(PERIOD),
                "--quorum",
                "1",
                "--deadline",
                "5",
                "--output",
                str(tmp_path / "partial.csv"),
            )
        )
        assert code == 3, out
        with (tmp_path / "partial.csv").open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["scope"] == "program"]
        assert rows and all(
            r["status"] == "incomplete" and r["missing_carriers"] == "2" for r in rows
        )


async def test_late_and_wrong_results_leave_a_closed_round_as_it_was(
    federation_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = small(federation_data, 2)
    slow, other = sorted(dirs)
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        assert fed.client is not None and fed.coordinator is not None and fed.pki is not None
        node = fed.nodes[slow]
        real = node.answering.evaluate

        def late(request: object, budget: object = None) -> object:
            time.sleep(4)  # past the round's deadline
            return real(request)  # type: ignore[arg-type]

        # A node that does not keep to the deadline (an older one, or a skewed clock): its
        # answer arrives after the round has finished.
        node.answering.budget_for = lambda request, now=None: Budget.unlimited()  # type: ignore[method-assign]
        node.answering.evaluate = late  # type: ignore[method-assign,assignment]
        query = wire.make_query("enrollment.member_months")
        outcome = await fed.client.run_round(PERIOD, [query], deadline_seconds=2)
        assert outcome.state is RoundState.PARTIAL
        before = outcome.tables
        # The slow node's answer arrives after the round finished: kept apart, not merged.
        store = fed.coordinator.store
        assert await wait_for(lambda: bool(store.results(outcome.round_id, late=True)), timeout=20)
        # Its tables were computed once, when first read: reading the round again neither
        # decodes its results nor combines them again.
        computed: list[str] = []
        decoded: list[bytes] = []

        def tables(request: RequestSpec, results: object) -> object:
            computed.append(request.round_id)
            return round_tables(request, results)  # type: ignore[arg-type]

        def decode(data: bytes) -> object:
            decoded.append(data)
            return decode_result(data)

        decode_result = wire.decode_result_bytes
        monkeypatch.setattr("coordinator.rounds.round_tables", tables)
        monkeypatch.setattr(wire, "decode_result_bytes", decode)
        after = await fed.client.get_round(outcome.round_id)
        assert (computed, decoded) == ([], [])
        assert after.tables == before
        assert after.late == (slow,)
        assert dict((c, s) for c, s, _ in after.carriers)[slow] is CarrierRoundState.TIMED_OUT
        # A result genuinely signed by a carrier but answering another request: refused.
        other_round = await fed.client.run_round(PERIOD, [query])
        record = fed.coordinator.store.get_round(other_round.round_id)
        request = wire.decode_request_bytes(record.request_bytes)
        wrong = result_for(request, record.request_bytes, other)
        forged = wrong.replace(other_round.round_id.encode(), outcome.round_id.encode())
        key = Signer.load(fed.pki.carriers[other].result_signing_key)
        await fed.coordinator.rounds.on_result(
            other,
            types_pb2.SignedResult(result=forged, signature=key.sign(forged), key_id=key.key_id),
        )
        decoded.clear()
        again = await fed.client.get_round(outcome.round_id)
        assert again.tables == before and again.carriers == after.carriers
        assert outcome.round_id not in computed and decoded == []


async def test_a_class_rebated_that_nobody_filled_is_in_the_program_sum(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    import pandas as pd

    dirs = {c: d for c, d in small(federation_data, 2).items()}
    chosen = sorted(dirs)[0]
    copy = tmp_path / chosen
    import shutil

    shutil.copytree(dirs[chosen], copy)
    rebates = pd.DataFrame(
        {
            "quarter": ["2026Q1"],
            "drug_class": ["orphan class"],
            "ndc": [None],
            "rebate_amount": ["1234.56"],
        }
    )
    rebates.to_parquet(copy / "rebates.parquet")
    dirs[chosen] = copy
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        assert fed.client is not None
        query = wire.make_query("rx.rebate_share", group_by=[D.QUARTER, D.DRUG_CLASS])
        outcome = await fed.client.run_round(PERIOD, [query])
    program = outcome.tables[0]
    (cell,) = [c for c in program.cells if dict(c.key)[D.DRUG_CLASS] == "orphan class"]
    rebate = cell.stat("rebate_cents")
    assert rebate.status is Status.PERTURBED and rebate.missing is None
    assert abs(int(rebate.value) - 123_456) <= 0.15 * 123_456 + 1  # type: ignore[arg-type]
    assert cell.stat("fill_members").value == 0


async def test_nothing_is_dropped_silently_and_an_idempotency_key_names_one_round(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 1)
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        code, out = await run_cli(
            cli(
                fed,
                "round",
                "run",
                "--metric",
                "quality.breast_cancer_screening",
                "--period",
                str(PERIOD),
                "--by",
                "month",
            )
        )
        assert code == 2 and "does not accept month" in out
        code, out = await run_cli(
            cli(
                fed,
                "round",
                "run",
                "--metric",
                "cost.pmpm",
                "--period",
                str(PERIOD),
                "--output",
                str(tmp_path / "out.xlsx"),
            )
        )
        assert code == 2 and "cannot export to .xlsx" in out
        assert not (tmp_path / "out.xlsx").exists()
        code, out = await run_cli(
            cli(
                fed,
                "round",
                "run",
                "--metric",
                "rx.specialty_share",
                "--period",
                str(PERIOD),
                "--filter",
                "state=VA,MD",
                "--param",
                "cost_per_30_days=600",
            )
        )
        assert code == 0, out
        assert fed.client is not None
        first = await fed.client.create_round(
            PERIOD, [wire.make_query("cost.pmpm")], idempotency_key="monthly-2026-03"
        )
        again = await fed.client.create_round(
            PERIOD, [wire.make_query("cost.pmpm")], idempotency_key="monthly-2026-03"
        )
        assert again == first
        with pytest.raises(InvalidRequestError, match="idempotency key"):
            await fed.client.create_round(
                PERIOD,
                [wire.make_query("enrollment.member_months")],
                idempotency_key="monthly-2026-03",
            )
        # The filter and the parameter reached the round the CLI launched.
        specialty = [
            r
            for r in await fed.client.list_rounds(5)
            if r.queries and r.queries[0].metric == "rx.specialty_share"
        ]
        (query,) = specialty[0].queries
        assert dict(query.parameters) == {"cost_per_30_days": 600.0}
        assert [(f.dimension, list(f.values)) for f in query.filters] == [
            (wire.dimension_to_pb(D.STATE), ["MD", "VA"])
        ]


async def test_health_reflection_a_token_operator_and_receipts_through_the_api(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 2)
    async with SimulatedFederation(dirs, tmp_path / "run", operator_port=True) as fed:
        assert fed.pki is not None and fed.client is not None
        kit = fed.pki.operators[TOKEN_OPERATOR]
        assert kit.token is not None
        # A token alone (no client certificate) on the operator port.
        async with OperatorClient(
            fed.operator_address, ca_cert=kit.ca_cert, token_file=kit.token
        ) as by_token:
            outcome = await by_token.run_round(PERIOD, [wire.make_query("cost.pmpm")])
        assert outcome.state is RoundState.COMPLETE
        # On the main port every caller shows a certificate: a token alone does not connect.
        async with OperatorClient(
            fed.address, ca_cert=kit.ca_cert, token_file=kit.token
        ) as no_cert:
            with pytest.raises(OversightError):
                await no_cert.list_rounds()
        # gRPC health, as probes and standard tools ask it.
        credentials = grpc.ssl_channel_credentials(root_certificates=kit.ca_cert.read_bytes())
        async with grpc.aio.secure_channel(fed.operator_address, credentials) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "fedoversight.v1.Oversight"):
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=10
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # Receipts through the API, checked with the auditor's own keys.
        pki = fed.pki
        code, out = await run_cli(
            cli(
                fed,
                "round",
                "verify",
                outcome.round_id,
                "--operator-key",
                str(pki.operator_public_key),
                "--result-keys",
                str(pki.result_keys_dir),
            )
        )
        assert code == 0, out
        assert "request and 2 receipts verified" in out
        code, out = await run_cli(
            cli(
                fed,
                "round",
                "verify",
                outcome.round_id,
                "--operator-key",
                str(pki.operator_public_key),
                "--result-keys",
                str(tmp_path),
            )
        )  # no carrier keys
        assert code == 5 and "INVALID" in out
        # A client made of the .proto files and reflection alone lists metrics, launches a
        # round and reads it.
        kit = pki.operators[OPERATOR]
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-I",
                str(Path(__file__).with_name("reflection_client.py")),
                fed.address,
                str(kit.ca_cert),
                str(kit.cert),
                str(kit.key),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["metrics"] >= 23 and "cost.pmpm" in report["names"]
    assert report["state"] == "ROUND_STATE_COMPLETE"
    assert report["program_cells"] >= 1 and report["project_modules"] == []
