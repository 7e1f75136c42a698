"""Control totals: a carrier's declared monthly claims and paid dollars beside its data, in
``carrier-node check`` (files and the PostgreSQL warehouse, through the real CLI) and in a
federated ``ops.data_quality`` round checked against the oracle.

The true totals of each carrier are worked out here with plain pandas from its files; one
carrier declares exactly them, one declares a February its extract is short of (claims and
dollars), one declares nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from carrier_node.data.control_totals import ControlTotals
from carrier_node.data.files import FileSource
from carrier_node.data.warehouse import PostgresSource, WarehouseConfig
from carrier_node.query.control import compare_control_totals
from carrier_node.query.engine import Engine
from coordinator.store import RoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.periods import Period
from fedoversight.testing import (
    SimulatedFederation,
    SynthConfig,
    load_directory,
    oracle,
    write_carriers,
)
from tests import postgres
from tests.integration.helpers import compare, query_tables

PERIOD = Period.parse("2026-01:2026-03")
MONTHS = ("2026-01", "2026-02", "2026-03")
#: What the short carrier's February extract lacks against its financial reporting.
SHORT_CLAIMS, SHORT_CENTS = 250, 5_000_000
Totals = dict[tuple[str, str], tuple[int, int]]


def true_totals(directory: Path) -> Totals:
    """(table, month) -> (claims, paid cents) of a carrier's files: distinct claim_ids of one
    member per month, paid summed over every row."""
    out: Totals = {}
    for table, date in (("medical_claims", "claim_start_date"), ("pharmacy_claims", "fill_date")):
        rows = oracle.load_carrier(directory)[table]
        month = pd.to_datetime(rows[date]).dt.strftime("%Y-%m")
        paid = pd.Series(oracle.cents(rows["paid_amount"]), index=rows.index)
        for m in MONTHS:
            here = rows[month == m]
            claims = len(here[["member_id", "claim_id"]].drop_duplicates())
            out[table, m] = (claims, int(paid[month == m].sum()))
    return out


def write_totals(path: Path, totals: Totals) -> Path:
    """Medical paid as decimal dollars, pharmacy paid as integer cents (both forms)."""
    lines = []
    for (table, month), (claims, cents) in sorted(totals.items()):
        lines += [f"[[{table}]]", f'month = "{month}"', f"claims = {claims}"]
        if table == "medical_claims":
            lines.append(f'paid = "{Decimal(cents) / 100:.2f}"')
        else:
            lines.append(f"paid_cents = {cents}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def carriers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("control-carriers")
    dirs = write_carriers(root, SynthConfig(carriers=3, members=1_500, seed=23, months=3))
    return {d.name: d for d in dirs}


@pytest.fixture(scope="module")
def declared(
    carriers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """c001 declares its data's totals exactly; c002 a February its data is short of."""
    root = tmp_path_factory.mktemp("control-totals")
    complete, short = sorted(carriers)[:2]
    totals = true_totals(carriers[short])
    claims, cents = totals["medical_claims", "2026-02"]
    totals["medical_claims", "2026-02"] = (claims + SHORT_CLAIMS, cents + SHORT_CENTS)
    return {
        complete: write_totals(root / f"{complete}.toml", true_totals(carriers[complete])),
        short: write_totals(root / f"{short}.toml", totals),
    }


#: The date the synthetic extracts are checked as of: after every payment they hold (claims of
#: the year are paid into the next), so only the planted discrepancies are findings.
AS_OF = ("--as-of", "2028-12-31")


def carrier_node(*args: str) -> tuple[int, str]:
    """``carrier-node ARGS`` in a process of its own: exit code and everything it printed."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", "from carrier_node.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def node_toml(path: Path, carrier_id: str, source: str, totals: Path) -> Path:
    path.write_text(
        f'carrier_id = "{carrier_id}"\ncoordinator = "127.0.0.1:1"\ninsecure = true\n'
        f'control_totals_file = "{totals}"\n{source}\n',
        encoding="utf-8",
    )
    return path


def test_check_finds_matching_totals(carriers: dict[str, Path], declared: dict[str, Path]) -> None:
    carrier = sorted(carriers)[0]
    code, out = carrier_node(
        "check",
        "--data",
        str(carriers[carrier]),
        "--control-totals",
        str(declared[carrier]),
        *AS_OF,
    )
    assert code == 0, out
    assert "no problems found" in out
    assert "control totals: all 6 declared months match" in out
    assert "DIFFERS" not in out


def test_check_reports_each_discrepancy(
    carriers: dict[str, Path], declared: dict[str, Path], tmp_path: Path
) -> None:
    carrier = sorted(carriers)[1]
    config = node_toml(
        tmp_path / "node.toml", carrier, f'data_dir = "{carriers[carrier]}"', declared[carrier]
    )
    code, out = carrier_node("check", "--config", str(config), *AS_OF)
    assert code == 1, out  # a discrepancy is a warning: the data may still be completing
    claims, _ = true_totals(carriers[carrier])["medical_claims", "2026-02"]
    assert out.count("DIFFERS") == 1, out
    assert (
        f"medical_claims 2026-02 differs from its control totals: claims {claims:,} in the"
        f" data, {claims + SHORT_CLAIMS:,} declared (-{SHORT_CLAIMS})"
    ) in out
    assert "(-$50,000.00)" in out
    # The same for a pipeline: a warning finding of its own kind, and every declared month.
    code, out = carrier_node("check", "--config", str(config), "--format", "json", *AS_OF)
    document = json.loads(out)
    assert code == 1 and document["status"] == "warnings", out
    (finding,) = [f for f in document["findings"] if f["kind"] == "control_total"]
    assert finding["rule"] == "control_total_differs" and finding["table"] == "medical_claims"
    assert finding["detail"]["month"] == "2026-02"
    assert finding["detail"]["declared_claims"] - finding["detail"]["data_claims"] == SHORT_CLAIMS
    assert len(document["control_totals"]) == 6
    assert [m["month"] for m in document["control_totals"] if not m["matches"]] == ["2026-02"]


def test_a_bad_control_totals_file_names_its_keys(
    carriers: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "totals.toml"
    bad.write_text(
        '[[medical_claims]]\nmonth = "2026-13"\nclaims = 3\npaid = 10.5\n'
        '[[dental_claims]]\nmonth = "2026-01"\nclaims = 1\npaid_cents = 1\n',
        encoding="utf-8",
    )
    code, out = carrier_node(
        "check", "--data", str(next(iter(carriers.values()))), "--control-totals", str(bad), *AS_OF
    )
    assert code == 3, out  # not checked: the totals to compare with are unreadable
    assert "medical_claims[0].month: month must be YYYY-MM" in out
    assert "medical_claims[0].paid: Input should be a valid string" in out
    assert "dental_claims: unknown key" in out
    assert "http" not in out


@pytest.fixture(scope="module")
def warehouse(carriers: dict[str, Path]) -> Iterator[tuple[str, str]]:
    """The short carrier's tables in a schema of their own on the PostgreSQL server."""
    carrier = sorted(carriers)[1]
    with postgres.fresh_schema() as schema:
        con = postgres.connect()
        try:
            load_directory(con, schema, carriers[carrier])
            yield carrier, schema
        finally:
            con.close()


@pytest.mark.postgres
def test_the_warehouse_gives_the_same_comparison_as_files(
    carriers: dict[str, Path],
    declared: dict[str, Path],
    warehouse: tuple[str, str],
    tmp_path: Path,
) -> None:
    carrier, schema = warehouse
    totals = ControlTotals.load(declared[carrier])
    files = FileSource(carriers[carrier])
    files.open()
    pg = PostgresSource(WarehouseConfig(dbname="test", schema_name=schema))
    pg.open()
    query = wire.make_query("ops.data_quality", group_by=(D.MONTH,))
    try:
        from_files = compare_control_totals(files, carrier, totals)
        from_warehouse = compare_control_totals(pg, carrier, totals)
        # The whole cells too: values, supports, largest contributions and record keys.
        cells = [
            Engine(source, carrier, record_secret="5ec2e7", control_totals=totals)
            .evaluate(PERIOD, query)
            .cells
            for source in (files, pg)
        ]
    finally:
        pg.close()
        files.close()
    assert from_warehouse == from_files
    assert cells[0] == cells[1] and len(cells[0]) == 3
    assert [(c.table, str(c.month)) for c in from_files if not c.matches] == [
        ("medical_claims", "2026-02")
    ]
    config = node_toml(
        tmp_path / "node.toml",
        carrier,
        f'[warehouse]\ndbname = "test"\nschema_name = "{schema}"',
        declared[carrier],
    )
    code, out = carrier_node("check", "--config", str(config), *AS_OF)
    assert code == 1, out  # the discrepancy, a warning
    assert out.count("DIFFERS") == 1, out
    assert "medical_claims 2026-02 differs from its control totals" in out


def test_a_federated_round_shows_the_discrepancy(
    carriers: dict[str, Path], declared: dict[str, Path], tmp_path: Path
) -> None:
    queries = [
        wire.make_query("ops.data_quality", group_by=(D.MONTH,)),
        wire.make_query("ops.data_quality", group_by=(D.QUARTER,)),
        wire.make_query("ops.data_quality", version=1, group_by=(D.MONTH,)),
    ]

    async def run() -> object:
        async with SimulatedFederation(
            carriers,
            tmp_path,
            carrier_settings={c: {"control_totals_file": p} for c, p in declared.items()},
        ) as fed:
            assert fed.client is not None
            return await fed.client.run_round(PERIOD, queries, deadline_seconds=300)

    outcome = asyncio.run(run())
    assert outcome.state is RoundState.COMPLETE  # type: ignore[attr-defined]
    tables = {c: dict(oracle.load_carrier(d)) for c, d in carriers.items()}
    for carrier, path in declared.items():
        tables[carrier][oracle.CONTROL_TOTALS] = oracle.read_control_totals(path)
    for index, query in enumerate(queries):
        scoped = query_tables(outcome.tables, index)  # type: ignore[attr-defined]
        counts = compare(query, PERIOD, scoped, tables)
        assert counts["perturbed"] > 0, counts

    by_scope = {t.scope: t for t in query_tables(outcome.tables, 0)}  # type: ignore[attr-defined]
    complete, short, silent = sorted(carriers)
    # Equal values rest on the same people: their consistent noise is the same.
    for cell in by_scope[complete].cells:
        for table in ("medical", "pharmacy"):
            for what in ("claims", "paid"):
                unit = "" if what == "claims" else "_cents"
                held = cell.stat(f"{table}_{what}_in_data{unit}").value
                assert held == cell.stat(f"{table}_{what}_declared{unit}").value
                assert held != 0
            assert cell.figure(f"{table}_claims_missing").value == 0
    for cell in by_scope[short].cells:
        missing = cell.figure("medical_claims_missing").value
        if dict(cell.key)[D.MONTH] == "2026-02":
            assert abs(missing - SHORT_CLAIMS) <= 10, missing  # two counts' noise at most
            assert cell.figure("medical_claims_held").value < 1
        else:
            assert missing == 0
    for cell in by_scope[silent].cells:
        assert cell.stat("medical_claims_declared").value == 0
        assert cell.stat("medical_claims_in_data").value == 0
    program = {dict(c.key)[D.MONTH]: c for c in by_scope["program"].cells}
    assert program["2026-02"].figure("medical_paid_missing").value > 0
