"""The ``oversight`` command: the agency side's commands plus the simulator's ``synth`` and
``demo``.

The agency side owns the command line: :func:`coordinator.cli.build_app` makes an app with its
commands (serve, provision, carriers, round, metrics). The coordinator never imports the
simulator (an import-linter contract in pyproject.toml), so the entry point that combines the
two lives here: :func:`main`, the ``oversight`` console script, builds that app, adds this
module's commands with :func:`register` and runs it. Importing this module registers nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli import build_app, console, fail, parse_queries
from fedoversight.errors import OversightError
from fedoversight.logs import configure_logging
from fedoversight.periods import Period

DEFAULT_SUITE = "enrollment.member_months,cost.pmpm,cost.pmpm_by_service_category"


def synth(
    out: Annotated[Path, typer.Option("--out", help="directory to write carriers into")],
    carriers: Annotated[int, typer.Option(help="number of carriers")] = 65,
    members: Annotated[int, typer.Option(help="members across all carriers")] = 20_000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same bytes)")] = 7,
    year: Annotated[int, typer.Option(help="calendar year of the claims")] = 2026,
    months: Annotated[int, typer.Option(help="months of the year with data")] = 12,
    csv: Annotated[bool, typer.Option("--csv", help="write CSV instead of Parquet")] = False,
) -> None:
    """Write synthetic carriers in the data schema, one sub-directory per carrier."""
    from oversight_sim.synth import SynthConfig, write_carriers

    config = SynthConfig(
        carriers=carriers,
        members=members,
        seed=seed,
        year=year,
        months=months,
        file_format="csv" if csv else "parquet",
    )
    dirs = write_carriers(out, config)
    console.print(f"wrote {len(dirs)} carriers to {out}")


def demo(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="existing carrier directories instead of synthetic ones"),
    ] = None,
    metrics: Annotated[str, typer.Option("--metrics", help="metrics to run")] = DEFAULT_SUITE,
    period: Annotated[
        str | None,
        typer.Option("--period", help="months to cover [default: the data's year]"),
    ] = None,
    by: Annotated[str, typer.Option("--by", help="group-by dimensions")] = "",
    output: Annotated[Path | None, typer.Option("--output", help="tidy CSV to write")] = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="where data and results go")] = Path(
        "oversight-demo"
    ),
    carriers: Annotated[int, typer.Option(help="synthetic carriers")] = 65,
    members: Annotated[int, typer.Option(help="synthetic members in all")] = 20_000,
    seed: Annotated[int, typer.Option(help="synthetic data seed")] = 7,
    scenario: Annotated[
        Path | None,
        typer.Option(
            "--scenario",
            help="a scenario file (TOML: carriers, planted groups, policies, faults;"
            " see docs/testing.md) instead of --data/--carriers/--members/--seed",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="log to stderr")] = False,
) -> None:
    """Synthesise carriers, start a coordinator and their nodes on loopback, run a suite."""
    from oversight_sim.demo import run_demo, run_scenario_demo
    from oversight_sim.scenario import load_scenario

    configure_logging("INFO" if verbose else "WARNING")
    try:
        queries = parse_queries(metrics, by)
        if scenario is not None:
            if data is not None:
                raise typer.BadParameter("--data and --scenario exclude each other")
            described = load_scenario(scenario)
            span = Period.parse(
                period or f"{described.year}-01:{described.year}-{described.months:02d}"
            )
            run_scenario_demo(
                described,
                out_dir=out_dir,
                period=span,
                queries=queries,
                output=output,
                console=console,
            )
            return
        span = Period.parse(period or "2026-01:2026-12")
    except OversightError as exc:
        raise fail(exc) from exc
    run_demo(
        data=data,
        out_dir=out_dir,
        period=span,
        queries=queries,
        carriers=carriers,
        members=members,
        seed=seed,
        output=output,
        console=console,
    )


def register(app: typer.Typer) -> None:
    """Add the simulator's commands, ``synth`` and ``demo``, to an ``oversight`` app."""
    app.command()(synth)
    app.command()(demo)


def main() -> None:
    """The ``oversight`` entry point: the agency side's commands and the simulator's."""
    app = build_app()
    register(app)
    app()
