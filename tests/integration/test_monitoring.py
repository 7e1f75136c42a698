"""Monitoring as an operator gets it: the coordinator's Prometheus metrics scraped over HTTP
on loopback after real rounds (one complete, one partial because a carrier refused it as too
large), and JSON log lines that carry the round's, the carrier's and the request's ids and
nothing a carrier holds. Once in process (the simulated federation), once through the real
``oversight serve`` and ``carrier-node serve`` commands."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from carrier_node.policy import Policy
from coordinator.config import CoordinatorConfig
from coordinator.server import Coordinator
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.errors import ConfigError
from fedoversight.logs import LOG_FIELDS, log_handler
from fedoversight.periods import Period
from fedoversight.testing import SimulatedFederation
from tests.faults.procs import Federation, free_port

PERIOD = Period.parse("2026-01:2026-03")
TRIVIAL = [wire.make_query("enrollment.member_months", group_by=[D.MONTH])]
#: 4,320 cells by the node's estimate: above a limit of 1,000.
FINE = [wire.make_query("enrollment.member_months", group_by=[D.MONTH, D.AGE_BAND, D.SEX, D.STATE])]
TOO_LARGE = "ERROR_CODE_TOO_LARGE"
#: The keys a JSON log line may have.
LINE_KEYS = {"time", "level", "logger", "message", "error", *LOG_FIELDS}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """``GET /metrics`` on loopback, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def check_counts(samples: Samples, *, carriers: int, refused: int) -> None:
    """After one partial round (``refused`` carriers refused it as too large) and one
    complete round, every carrier connected."""
    assert value(samples, "oversight_rounds_created_total") == 2
    assert value(samples, "oversight_rounds_finished_total", outcome="complete") == 1
    assert value(samples, "oversight_rounds_finished_total", outcome="partial") == 1
    assert value(samples, "oversight_rounds_finished_total", outcome="failed") == 0
    assert value(samples, "oversight_rounds_open") == 0
    assert value(samples, "oversight_round_duration_seconds_count") == 2
    assert value(samples, "oversight_round_duration_seconds_sum") > 0
    assert value(samples, "oversight_round_duration_seconds_bucket", le="+Inf") == 2
    assert value(samples, "oversight_carriers_connected") == carriers
    assert value(samples, "oversight_refusals_total", code=TOO_LARGE) == refused
    refusals = {
        dict(k[1])["code"]: v for k, v in samples.items() if k[0] == "oversight_refusals_total"
    }
    assert {c for c, v in refusals.items() if v} == {TOO_LARGE}
    assert "ERROR_CODE_NODE_RECORDS" in refusals  # every code a series, at 0 until it occurs
    answers = (carriers - refused) + carriers
    assert value(samples, "oversight_results_received_total") == answers
    assert value(samples, "oversight_operator_calls_total", method="CreateRound", status="OK") == 2
    assert value(samples, "oversight_carrier_streams_refused_total") == 0
    assert value(samples, "process_start_time_seconds") > 0


def parse_lines(text: str) -> list[dict[str, str]]:
    """Every line a JSON object of the expected keys."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert set(line) <= LINE_KEYS, line
    return lines


def held_by_carriers(tables: dict[str, pd.DataFrame]) -> set[str]:
    """Member and claim ids of a carrier (long enough not to occur in a log line by chance)."""
    ids = set(tables["eligibility"]["member_id"].astype(str))
    ids |= set(tables["medical_claims"]["claim_id"].astype(str))
    ids |= set(tables["pharmacy_claims"]["claim_id"].astype(str))
    return {i for i in ids if len(i) >= 6}


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """This process's log records as the daemons' ``--json-logs`` write them."""
    stream = io.StringIO()
    handler = log_handler(stream, json_format=True)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_metrics_and_json_logs_of_a_complete_and_a_partial_round(
    federation_data: dict[str, Path],
    oracle_tables: dict[str, dict[str, pd.DataFrame]],
    tmp_path: Path,
    json_log: io.StringIO,
) -> None:
    chosen = dict(sorted(federation_data.items())[:3])
    strict = sorted(chosen)[0]
    async with SimulatedFederation(
        chosen,
        tmp_path / "run",
        policies={strict: Policy(max_request_cells=1_000)},
        metrics_address="127.0.0.1:0",
    ) as fed:
        assert fed.client is not None and fed.coordinator is not None
        port = fed.coordinator.metrics_port
        assert port > 0
        before = await asyncio.to_thread(scrape, port)
        assert value(before, "oversight_carriers_connected") == 3
        assert value(before, "oversight_rounds_finished_total", outcome="complete") == 0

        partial = await fed.client.run_round(PERIOD, FINE, deadline_seconds=30)
        assert partial.state is RoundState.PARTIAL
        refused = {c for c, s, _ in partial.carriers if s is CarrierRoundState.REFUSED}
        assert refused == {strict}
        complete = await fed.client.run_round(PERIOD, TRIVIAL, deadline_seconds=30)
        assert complete.state is RoundState.COMPLETE
        check_counts(await asyncio.to_thread(scrape, port), carriers=3, refused=1)

        # A node gone is a carrier fewer on the gauge.
        await fed.stop_node(sorted(chosen)[-1])
        for _ in range(100):  # the coordinator sees the stream end soon after
            samples = await asyncio.to_thread(scrape, port)
            if value(samples, "oversight_carriers_connected") == 2:
                break
            await asyncio.sleep(0.1)
        assert value(samples, "oversight_carriers_connected") == 2
    with pytest.raises(OSError):  # the endpoint closes with the coordinator
        scrape(port)

    text = json_log.getvalue()
    lines = parse_lines(text)
    rid = partial.round_id
    # The coordinator: each carrier's stream, then the round from creation to outcome.
    coordinator = [line for line in lines if line["logger"].startswith("coordinator.")]
    for carrier_id in chosen:
        assert {
            "logger": "coordinator.hub",
            "carrier_id": carrier_id,
            "message": f"carrier {carrier_id} connected",
        }.items() <= next(
            line for line in coordinator if line["message"] == f"carrier {carrier_id} connected"
        ).items()
    of_round = [line["message"] for line in coordinator if line.get("round_id") == rid]
    assert any(m == f"round {rid} stored with 3 carriers" for m in of_round), of_round
    created = [line for line in coordinator if line["message"].startswith(f"round {rid} created")]
    assert len(created) == 1 and "carrier_id" not in created[0]  # no stream's id leaks over
    assert any(m.startswith(f"round {rid} partial: 2 of 3") for m in of_round), of_round
    refusal = [
        line
        for line in coordinator
        if line.get("round_id") == rid and line.get("carrier_id") == strict
    ]
    assert [line["message"] for line in refusal] == [f"round {rid}: {strict} refused ({TOO_LARGE})"]
    # The nodes: what each logged of the request names it, the round and its carrier.
    node = [
        line
        for line in lines
        if line["logger"].startswith("carrier_node.") and line.get("request_id") == f"{rid}.q"
    ]
    assert {line["carrier_id"] for line in node} == set(chosen)
    assert all(line["round_id"] == rid for line in node)
    too_large = [line["carrier_id"] for line in node if "refused at the cost" in line["message"]]
    assert too_large == [strict]
    # Ids only: nothing the carriers hold, no SQL.
    held = set().union(*(held_by_carriers(oracle_tables[c]) for c in chosen))
    assert len(held) > 1000
    assert [i for i in held if i in text] == []
    assert "SELECT" not in text.upper()


def test_the_cli_coordinator_serves_metrics_and_json_logs(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    chosen = dict(sorted(federation_data.items())[:2])
    strict = sorted(chosen)[0]
    fed = Federation(tmp_path / "run", chosen)
    try:
        fed.provision()
        metrics_port = free_port()
        config = fed.coordinator_config
        settings = tomllib.loads(config.read_text())
        settings["metrics_address"] = f"127.0.0.1:{metrics_port}"
        config.write_text(tomli_w.dumps(settings))
        assert fed.coordinator is not None
        fed.coordinator.args = [*fed.coordinator.args, "--json-logs"]
        for node in fed.nodes.values():
            node.proc.args = [*node.proc.args, "--json-logs"]
        policy = tmp_path / "strict-policy.toml"
        policy.write_text("max_request_cells = 1000\n")
        fed.nodes[strict].set_config(policy_file=str(policy))
        fed.start()

        partial = fed.wait_round(fed.create_round(PERIOD, FINE, deadline=60), 90, tables=False)
        assert partial.state is RoundState.PARTIAL, partial.carriers
        assert partial.states()[strict] is CarrierRoundState.REFUSED
        complete = fed.wait_round(fed.create_round(PERIOD, TRIVIAL, deadline=60), 90)
        assert complete.state is RoundState.COMPLETE
        check_counts(scrape(metrics_port), carriers=2, refused=1)

        fed.close()  # every line written
        rid = partial.round_id
        coordinator_lines = parse_lines(json_part(fed.coordinator.log))
        assert any(
            line.get("round_id") == rid and line["message"].startswith(f"round {rid} partial")
            for line in coordinator_lines
        )
        assert any(
            line.get("round_id") == rid and line.get("carrier_id") == strict
            for line in coordinator_lines
        )
        node_lines = parse_lines(json_part(fed.nodes[strict].proc.log))
        assert any(
            line.get("request_id") == f"{rid}.q"
            and line.get("round_id") == rid
            and line.get("carrier_id") == strict
            for line in node_lines
        ), node_lines
        with pytest.raises(OSError):  # gone with the coordinator
            scrape(metrics_port)
    finally:
        fed.close()


def json_part(log: Path) -> str:
    """A daemon's log file without what is not a log record: the harness's start markers and
    what the command prints on the console."""
    return "\n".join(line for line in log.read_text().splitlines() if line.startswith("{"))


async def test_a_metrics_address_in_use_stops_the_start_with_a_config_error(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = CoordinatorConfig(
            insecure=True,
            listen="127.0.0.1:0",
            store_path=tmp_path / "rounds.sqlite3",
            metrics_address=f"127.0.0.1:{port}",
        )
        coordinator = Coordinator(config)
        with pytest.raises(
            ConfigError, match=f"metrics_address: cannot listen on 127.0.0.1:{port}"
        ):
            await coordinator.start()
        await coordinator.shutdown(grace=0)
        assert coordinator.metrics_port == 0


async def test_results_rejected_for_a_missing_result_key_are_counted(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    chosen = dict(sorted(federation_data.items())[:2])
    keyless = sorted(chosen)[0]
    fed = SimulatedFederation(chosen, tmp_path / "run", metrics_address="127.0.0.1:0")
    pki = fed.provision()
    (pki.result_keys_dir / f"{keyless}.pub").unlink()  # the coordinator lacks its key
    async with fed:
        assert fed.client is not None and fed.coordinator is not None
        outcome = await fed.client.run_round(PERIOD, TRIVIAL, deadline_seconds=4)
        assert outcome.state is RoundState.PARTIAL
        assert {c: s for c, s, _ in outcome.carriers}[keyless] is CarrierRoundState.TIMED_OUT
        samples = await asyncio.to_thread(scrape, fed.coordinator.metrics_port)
    assert (
        value(samples, "oversight_results_rejected_total", code="ERROR_CODE_UNAUTHENTICATED") >= 1
    )
    assert value(samples, "oversight_results_received_total") == 1
    assert value(samples, "oversight_rounds_finished_total", outcome="partial") == 1
