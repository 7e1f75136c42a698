"""``oversight demo``: synthetic carriers, a coordinator and their nodes on loopback, one suite."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coordinator.client import Progress, RoundOutcome
from coordinator.combine import ScopedTable
from coordinator.export import write_csv, write_json
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period
from oversight_sim.harness import SimulatedFederation
from oversight_sim.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    outcomes: tuple[RoundOutcome, ...]
    seconds: float


def carrier_directories(root: Path) -> dict[str, Path]:
    """Sub-directories of ``root`` that hold carrier tables, by carrier id (directory name)."""
    dirs = {
        p.name: p for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("eligibility.*"))
    }
    if not dirs:
        raise FileNotFoundError(f"no carrier directories (with an eligibility table) in {root}")
    return dirs


async def run_suite(
    carrier_dirs: dict[str, Path],
    work_dir: Path,
    period: Period,
    queries: Sequence[QuerySpec],
    console: Console,
    deadline_seconds: int = 600,
) -> list[RoundOutcome]:
    outcomes = []
    async with SimulatedFederation(carrier_dirs, work_dir) as federation:
        assert federation.client is not None
        console.print(f"coordinator and {len(carrier_dirs)} carrier nodes connected on loopback")
        # One round carries the whole suite, so each node answers every metric in one request.
        with console.status("dispatching") as status:

            def show(progress: Progress) -> None:
                status.update(
                    f"round {progress.round_id}: {progress.answered}/{progress.asked}"
                    f" carriers answered ({progress.state})"
                )

            outcome = await federation.client.run_round(
                period, queries, deadline_seconds=deadline_seconds, on_progress=show
            )
        outcomes.append(outcome)
        answered = sum(1 for _, s, _ in outcome.carriers if s == "answered")
        console.print(
            f"round {outcome.round_id}: {outcome.state}, {answered}/{len(outcome.carriers)}"
            " carriers answered"
        )
    return outcomes


def print_tables(tables: Sequence[ScopedTable], console: Console, period: Period) -> None:
    from coordinator.cli import show_outcome
    from coordinator.client import RoundOutcome

    show_outcome(RoundOutcome("", "complete", period, (), tuple(tables)))  # type: ignore[arg-type]
    # Per carrier: one compact line each per metric total.
    totals = [t for t in tables if t.scope != "program" and not t.group_by]
    if totals:
        t = Table(title=f"per carrier — {period}")
        t.add_column("carrier")
        t.add_column("metric")
        t.add_column("member months", justify="right")
        t.add_column("allowed pmpm", justify="right")
        t.add_column("paid pmpm", justify="right")
        t.add_column("status")
        for table in totals:
            for cell in table.cells:
                stats = {s.name: s.value for s in cell.stats}
                figs = {f.name: f.value for f in cell.figures}
                mm = stats.get("member_months")
                t.add_row(
                    table.scope,
                    table.metric,
                    f"{mm:,}" if isinstance(mm, int) else "",
                    f"{figs['allowed_pmpm']:,.2f}" if "allowed_pmpm" in figs else "",
                    f"{figs['paid_pmpm']:,.2f}" if "paid_pmpm" in figs else "",
                    str(cell.status),
                )
        console.print(t)


def disclosure_line(tables: Sequence[ScopedTable]) -> str:
    """How much the carriers' disclosure control withheld, from their nodes' summaries."""
    summaries = [t.disclosure for t in tables if t.disclosure is not None]
    cells = sum(d.cells_released + d.cells_withheld + d.cells_partly_withheld for d in summaries)
    whole = sum(d.cells_withheld for d in summaries)
    partly = sum(d.cells_partly_withheld for d in summaries)
    program = [c for t in tables if t.scope == "program" for c in t.cells]
    incomplete = sum(1 for c in program if c.incomplete)
    return (
        f"carrier cells with a value withheld by disclosure control: {whole + partly:,} of"
        f" {cells:,} ({whole:,} wholly, {partly:,} partly); program cells leaving a carrier's"
        f" value out: {incomplete:,} of {len(program):,}"
    )


def run_scenario_demo(
    scenario: Scenario,
    *,
    out_dir: Path,
    period: Period,
    queries: Sequence[QuerySpec],
    output: Path | None,
    console: Console,
) -> DemoResult:
    """``oversight demo --scenario FILE``: the scenario's carriers (written under
    ``out_dir/carriers`` unless they are the carriers' own), its policies and faults; as many
    rounds of the suite as its faults and late claims need (one at least)."""
    from oversight_sim.carrier_sets import write_carrier_set
    from oversight_sim.runner import Federation

    started = time.perf_counter()
    with console.status(f"writing the carriers of {scenario.name or 'the scenario'}"):
        carriers = write_carrier_set(scenario, out_dir / "carriers")
    rounds = max(
        [1] + [f.round for f in scenario.faults] + [r.after_round + 1 for r in carriers.refreshes]
    )
    outcomes = []
    with (
        tempfile.TemporaryDirectory(prefix="oversight-demo-") as tmp,
        Federation(scenario, carriers, Path(tmp) / "run") as federation,
    ):
        console.print(
            f"coordinator and {len(carriers)} carrier nodes connected on loopback"
            + ("" if scenario.secure else " (insecure)")
        )
        for _ in range(rounds):
            with console.status(f"round {federation.rounds + 1} of {rounds}"):
                federation.client.run_queries(period, queries)
            outcome = federation.client.last_outcome
            assert outcome is not None
            outcomes.append(outcome)
            answered = sum(1 for _, s, _ in outcome.carriers if s == "answered")
            console.print(
                f"round {outcome.round_id}: {outcome.state}, {answered}/"
                f"{len(outcome.carriers)} carriers answered"
            )
    last = outcomes[-1]
    print_tables(last.tables, console, period)
    console.print(disclosure_line(last.tables))
    csv_path = output or out_dir / "results.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(last.tables, csv_path, last.info())
    write_json(last.tables, csv_path.with_suffix(".json"), last.info())
    console.print(f"results of the last round written to {csv_path}")
    seconds = time.perf_counter() - started
    console.print(f"demo finished in {seconds:.1f}s")
    return DemoResult(tuple(outcomes), seconds)


def run_demo(
    *,
    data: Path | None,
    out_dir: Path,
    period: Period,
    queries: Sequence[QuerySpec],
    carriers: int,
    members: int,
    seed: int,
    output: Path | None,
    console: Console,
) -> DemoResult:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oversight-demo-") as tmp:
        work = Path(tmp)
        if data is None:
            from oversight_sim.synth import SynthConfig, write_carriers

            data = out_dir / "carriers"
            config = SynthConfig(
                carriers=carriers,
                members=members,
                seed=seed,
                year=period.first.year,
                months=12,
            )
            with console.status(f"synthesising {carriers} carriers, {members:,} members"):
                write_carriers(data, config)
            console.print(f"synthetic carriers written to {data}")
        carrier_dirs = carrier_directories(data)
        outcomes = asyncio.run(run_suite(carrier_dirs, work / "run", period, queries, console))
    tables = [t for o in outcomes for t in o.tables]
    print_tables(tables, console, period)
    console.print(disclosure_line(tables))
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output or out_dir / "results.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    info = outcomes[0].info() if len(outcomes) == 1 else None
    write_csv(tables, csv_path, info)
    write_json(tables, csv_path.with_suffix(".json"), info)
    console.print(f"results written to {csv_path} and {csv_path.with_suffix('.json')}")
    seconds = time.perf_counter() - started
    console.print(f"demo finished in {seconds:.1f}s")
    return DemoResult(tuple(outcomes), seconds)
