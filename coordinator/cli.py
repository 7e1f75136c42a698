"""``oversight``: the agency side's command line (serve, carriers, rounds, metrics)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from coordinator import convert, readiness
from coordinator.client import OperatorClient, Progress, RoundOutcome, scheduled_for
from coordinator.config import CoordinatorConfig, load_coordinator_config
from coordinator.export import FORMATS, write_export
from coordinator.frames import round_frame
from coordinator.receipts import verify_receipts, verify_round
from coordinator.report import write_report
from coordinator.schedule import load_schedule
from coordinator.server import Coordinator, load_result_keys
from coordinator.store import (
    CarrierRoundState,
    RoundState,
    RoundStore,
    StoredResult,
    open_round_store,
)
from fedoversight import catalogue, wire
from fedoversight.anchors import AnchoredResult, anchored_result, write_anchors
from fedoversight.dimensions import Dimension
from fedoversight.domain import QuerySpec, StatValue
from fedoversight.errors import ConfigError, InvalidRequestError, OversightError
from fedoversight.logs import configure_logging
from fedoversight.periods import Period
from fedoversight.signing import Signer, Verifier
from fedoversight.v1 import operator_pb2

console = Console()


def _oversight_typer() -> typer.Typer:
    return typer.Typer(no_args_is_help=True, help="Federated oversight: the agency side.")


#: The agency side's commands; the commands below register themselves on it (and on its
#: ``round`` and ``metrics`` groups). :func:`build_app` copies them into a new app.
app = _oversight_typer()
round_app = typer.Typer(no_args_is_help=True, help="Run and read rounds.")
metrics_app = typer.Typer(no_args_is_help=True, help="The metric catalogue.")
schedule_app = typer.Typer(no_args_is_help=True, help="The suites the coordinator runs by itself.")
app.add_typer(round_app, name="round")
app.add_typer(metrics_app, name="metrics")
app.add_typer(schedule_app, name="schedule")


def build_app() -> typer.Typer:
    """A new ``oversight`` app holding the agency side's commands, for a caller to add its own
    commands to before running it (:data:`app` itself stays as it is).

    The coordinator never imports the simulator, so its ``synth`` and ``demo`` are not added
    here: the ``oversight`` entry point, :func:`oversight_sim.cli.main`, builds this app, adds
    them and runs it.
    """
    oversight = _oversight_typer()
    oversight.registered_commands.extend(app.registered_commands)
    oversight.registered_groups.extend(app.registered_groups)
    return oversight


def main() -> None:
    """Run the agency side's commands alone (the installed ``oversight`` command also has the
    simulator's, see :func:`oversight_sim.cli.main`)."""
    build_app()()


AddressOpt = Annotated[
    str,
    typer.Option("--coordinator", envvar="OVERSIGHT_ADDRESS", help="coordinator address host:port"),
]
CaOpt = Annotated[
    Path | None, typer.Option("--ca-cert", envvar="OVERSIGHT_CA_CERT", help="CA certificate (TLS)")
]
CertOpt = Annotated[
    Path | None,
    typer.Option("--cert", envvar="OVERSIGHT_CERT", help="operator certificate (mutual TLS)"),
]
KeyOpt = Annotated[
    Path | None,
    typer.Option("--key", envvar="OVERSIGHT_KEY", help="operator certificate's key (mutual TLS)"),
]
TokenOpt = Annotated[
    Path | None,
    typer.Option("--token-file", envvar="OVERSIGHT_TOKEN_FILE", help="file holding a bearer token"),
]
ServerNameOpt = Annotated[
    str | None,
    typer.Option(
        "--server-name",
        envvar="OVERSIGHT_SERVER_NAME",
        help="name expected in the coordinator's certificate, when not the address's host",
    ),
]


def operator_client(
    coordinator: str,
    ca_cert: Path | None,
    cert: Path | None,
    key: Path | None,
    token_file: Path | None,
    server_name: str | None,
    signing_key: Path | None = None,
) -> OperatorClient:
    if ca_cert is None:
        console.print(
            "[yellow]warning: no --ca-cert: plaintext connection (insecure demos only)[/yellow]"
        )
    return OperatorClient(
        coordinator,
        ca_cert=ca_cert,
        cert=cert,
        key=key,
        token_file=token_file,
        server_name=server_name,
        signer=Signer.load(signing_key) if signing_key is not None else None,
    )


#: Exit codes of the commands that run, read or check rounds (the README lists them).
EXIT_COMPLETE = 0  # the round completed: every carrier asked answered (verify: all valid)
EXIT_ERROR = 1  # the call failed or was refused (connection, access, the coordinator said no)
EXIT_USAGE = 2  # the command's own input is wrong (a period, a metric, a dimension)
EXIT_PARTIAL = 3  # the round met its quorum, but some carriers did not answer
EXIT_FAILED = 4  # the round missed its quorum
EXIT_INVALID = 5  # round verify: a signature or receipt does not hold

_ROUND_EXIT = {
    RoundState.COMPLETE: EXIT_COMPLETE,
    RoundState.PARTIAL: EXIT_PARTIAL,
    RoundState.FAILED: EXIT_FAILED,
}


def fail(error: OversightError, code: int = EXIT_ERROR) -> typer.Exit:
    console.print(f"[red]error:[/red] {error.detail}")
    return typer.Exit(code=code)


def parse_queries(
    metrics: str,
    by: str,
    version: int = 0,
    filters: Sequence[str] = (),
    params: Sequence[str] = (),
) -> list[QuerySpec]:
    """Queries from the command line: every metric grouped by ``by`` (refused where a metric
    does not accept a dimension: nothing is dropped silently), with the metric's one-of
    dimension when none is given, filters ``DIM=V1,V2`` and parameters ``NAME=VALUE``."""
    dims = Dimension.parse_list(by) if by else ()
    wanted: dict[Dimension, list[str]] = {}
    for text in filters:
        name, sep, values = text.partition("=")
        if not sep or not values:
            raise InvalidRequestError(f"a filter is DIMENSION=VALUE[,VALUE...], not {text!r}")
        wanted.setdefault(Dimension.parse_list(name)[0], []).extend(
            v.strip() for v in values.split(",") if v.strip()
        )
    parameters: dict[str, float] = {}
    for text in params:
        name, sep, value = text.partition("=")
        try:
            parameters[name.strip()] = float(value)
        except ValueError:
            raise InvalidRequestError(f"a parameter is NAME=NUMBER, not {text!r}") from None
        if not sep:
            raise InvalidRequestError(f"a parameter is NAME=NUMBER, not {text!r}")
    queries = []
    for name in [m.strip() for m in metrics.split(",") if m.strip()]:
        spec = catalogue.get_metric(name, version or None)
        refused = [str(d) for d in (*dims, *wanted) if d not in spec.dimensions]
        if refused:
            raise InvalidRequestError(
                f"{name} does not accept {', '.join(refused)} (it accepts:"
                f" {', '.join(sorted(spec.dimensions))})"
            )
        group = tuple(dims)
        if spec.one_of and not spec.one_of.intersection(group):
            group = (*group, min(spec.one_of))
        own = {p.name for p in spec.parameters}
        queries.append(
            wire.make_query(
                name,
                spec.version,
                group,
                wanted or None,
                {k: v for k, v in parameters.items() if k in own} or None,
            )
        )
        parameters = {k: v for k, v in parameters.items() if k not in own}
    if parameters:
        raise InvalidRequestError(f"no metric asked takes {', '.join(sorted(parameters))}")
    return queries


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", help="coordinator TOML config")],
    listen: Annotated[str | None, typer.Option(help="override the listen address")] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="JSON log lines")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="check the config, keys, operators, carriers' result keys and round store,"
            " then exit (0 ready, 2 a problem) without serving",
        ),
    ] = False,
) -> None:
    """Run the coordinator daemon."""
    configure_logging(json_format=json_logs)
    try:
        cfg = load_coordinator_config(config, listen=listen)
    except OversightError as exc:
        raise fail(exc, EXIT_USAGE if check else EXIT_ERROR) from exc
    if check:
        raise typer.Exit(code=report_readiness(cfg))

    if cfg.insecure:
        console.print("[bold red]INSECURE DEMO MODE[/bold red]: no TLS; never use with real data.")

    async def main() -> None:
        try:
            coordinator = Coordinator(cfg)  # opens the round store
        except OversightError as exc:
            raise fail(exc) from exc
        try:
            await coordinator.start()
        except OversightError as exc:
            await coordinator.shutdown(grace=0)
            raise fail(exc) from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"coordinator listening on port {coordinator.port}")
        await stop.wait()
        await coordinator.shutdown()

    asyncio.run(main())


@app.command()
def dashboard(
    config: Annotated[
        Path | None, typer.Option("--config", help="dashboard TOML config (dashboard.toml)")
    ] = None,
    coordinator: Annotated[
        str | None,
        typer.Option(
            "--coordinator", help="the coordinator's operator API, host:port (its operator_listen)"
        ),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="CA certificate of the coordinator's (TLS)")
    ] = None,
    server_name: Annotated[
        str | None, typer.Option(help="name expected in the coordinator's certificate")
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="where to serve HTTP (default 127.0.0.1:8080; port 0: any)")
    ] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="JSON log lines")] = False,
) -> None:
    """Serve the web dashboard: a client of the operator API, signing users in with their
    bearer tokens (docs/dashboard.md)."""
    configure_logging(json_format=json_logs)
    try:
        from coordinator.dashboard.serve import serve_dashboard
        from coordinator.dashboard.settings import load_dashboard_config
    except ImportError as exc:
        raise fail(
            ConfigError(
                f"the dashboard needs its libraries ({exc.name}):"
                " pip install 'fedoversight[dashboard]'"
            )
        ) from exc
    try:
        cfg = load_dashboard_config(
            config, coordinator=coordinator, ca=ca, server_name=server_name, listen=listen
        )
    except OversightError as exc:
        raise fail(exc, EXIT_USAGE) from exc
    if cfg.ca is None:
        console.print(
            "[bold red]no --ca[/bold red]: the dashboard talks to the coordinator in plaintext"
            " (an insecure local demo only)."
        )
    asyncio.run(serve_dashboard(cfg, announce=lambda url: print(f"dashboard on {url}", flush=True)))


def report_readiness(cfg: CoordinatorConfig) -> int:
    """Print what ``serve --check`` found; the exit status (0 ready, 2 a problem)."""
    findings = readiness.check(cfg)
    for finding in findings:
        mark = (
            "[green]ok[/green]     "
            if finding.ok
            else "[red]problem[/red]"
            if finding.problem
            else "[yellow]warning[/yellow]"
        )
        console.print(f"{mark} {escape(finding.text)}", soft_wrap=True, highlight=False)
    problems = sum(f.problem for f in findings)
    if problems:
        console.print(f"{problems} problem(s): this configuration is not ready to serve")
        return EXIT_USAGE
    console.print("ready to serve")
    return EXIT_COMPLETE


class ProgressDisplay:
    """A round's progress: a live bar on a terminal, a plain line per change otherwise."""

    def __init__(self) -> None:
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._last: tuple[int, int, str] | None = None

    def __enter__(self) -> ProgressDisplay:
        if console.is_terminal:
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[state]}"),
                console=console,
                transient=True,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, progress: Progress) -> None:
        now = (progress.answered, progress.asked, str(progress.state))
        if now == self._last:
            return
        self._last = now
        if self._bar is None:
            console.print(
                f"{progress.round_id}: {progress.answered}/{progress.asked} carriers"
                f" answered ({progress.state})",
                soft_wrap=True,
            )
            return
        if self._task is None:
            self._task = self._bar.add_task(
                progress.round_id, total=progress.asked, state=str(progress.state)
            )
        self._bar.update(
            self._task, completed=progress.answered, total=progress.asked, state=str(progress.state)
        )


def figure_text(name: str, value: float) -> str:
    """A figure with the precision it supports: percentiles read from the fixed histogram are
    within about 12%, so two significant digits; shares as percentages; others two places."""
    if name.startswith("p") and name[1:].isdigit():
        return f"{float(f'{value:.2g}'):,.0f}" if abs(value) >= 10 else f"{value:.2g}"
    if name.startswith("top") or name.endswith(("_share", "_rate")):
        return f"{value:.1%}"
    return f"{value:,.2f}"


def show_carriers(outcome: RoundOutcome) -> None:
    """Say which carriers did not answer, and why; and which answered too late."""
    for carrier_id, state, message in outcome.carriers:
        if state is not CarrierRoundState.ANSWERED:
            why = f" — {message}" if message else ""
            console.print(f"{carrier_id}: {str(state).replace('_', ' ')}{why}")
    for carrier_id in outcome.late:
        console.print(
            f"{carrier_id}: answered after the round finished (kept apart, not in these tables)"
        )


def show_verdict(outcome: RoundOutcome) -> None:
    asked = len(outcome.carriers)
    text = f"round {outcome.round_id}: {outcome.state}, {outcome.answered} of {asked} carriers"
    if outcome.state is RoundState.COMPLETE:
        console.print(text + " answered")
    elif outcome.state is RoundState.PARTIAL:
        console.print(f"[yellow]{text} answered: program figures leave the others out[/yellow]")
    else:
        console.print(f"[bold red]{text} answered: the round FAILED (quorum not met)[/bold red]")


def show_outcome(outcome: RoundOutcome, *, per_carrier: bool = False) -> None:
    """Print tables: keys, the member and claimant counts, the published figures, status.

    Cent totals and other raw statistics are in the exports.
    """
    shown_stats = ("member_months", "claimants")
    for table in outcome.tables:
        if table.scope != "program" and not per_carrier:
            continue
        spec = catalogue.get_metric(table.metric, table.version)
        stat_names = [s.name for s in spec.statistics if s.name in shown_stats]
        t = Table(title=f"{table.metric} — {table.scope} — {outcome.period}")
        for d in table.group_by:
            t.add_column(str(d))
        for name in stat_names:
            t.add_column(name.replace("_", " "), justify="right")
        for f in spec.figures:
            t.add_column(f.name.replace("_", " "), justify="right")
        t.add_column("status")
        for cell in table.cells:
            stats = {s.name: s for s in cell.stats}
            figures = {f.name: f for f in cell.figures}
            row = [v for _, v in cell.key]
            row += [_stat_text(stats.get(n)) for n in stat_names]
            for f in spec.figures:
                fig = figures.get(f.name)
                row.append(
                    ""
                    if fig is None or fig.value != fig.value
                    else figure_text(f.name, fig.value) + ("" if fig.complete else "*")
                )
            row.append(str(cell.status) + (" (incomplete)" if cell.incomplete else ""))
            t.add_row(*row)
        console.print(t)


def _stat_text(stat: StatValue | None) -> str:
    """A statistic as a table shows it: its value, and what a sum leaves out ("≤30 missing":
    at most 30 of its unit; "+?": some carrier's withheld value, amount unknown)."""
    if stat is None:
        return ""
    text = (
        f"{stat.value:,}"
        if isinstance(stat.value, int)
        else ("withheld" if stat.status.withheld else "")
    )
    missing = stat.missing
    if missing is not None and stat.value is not None:
        text += f" (≤{missing.at_most:,} missing)" if missing.at_most is not None else " (+?)"
    return text


@round_app.command("run")
def round_run(
    metric: Annotated[str, typer.Option("--metric", help="metric name(s), comma-separated")],
    period: Annotated[str, typer.Option("--period", help="2026-01, 2026-01:2026-03, 2026Q1")],
    coordinator: AddressOpt = "127.0.0.1:50051",
    by: Annotated[str, typer.Option("--by", help="group-by dimensions, comma-separated")] = "",
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", help="keep rows of DIMENSION=VALUE[,VALUE...] (repeatable)"),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="a metric parameter NAME=NUMBER (repeatable)"),
    ] = None,
    carriers: Annotated[str, typer.Option(help="carrier ids (default: all)")] = "",
    quorum: Annotated[int, typer.Option(help="carriers needed for a complete round")] = 0,
    deadline: Annotated[int, typer.Option(help="round deadline in seconds")] = 300,
    output: Annotated[
        Path | None, typer.Option("--output", help="export: .csv or .parquet (tidy) or .json")
    ] = None,
    per_carrier: Annotated[bool, typer.Option(help="print each carrier's table too")] = False,
    ca_cert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    token_file: TokenOpt = None,
    server_name: ServerNameOpt = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            "--signing-key",
            envvar="OVERSIGHT_SIGNING_KEY",
            help="operator signing key: sign the round here rather than at the coordinator",
        ),
    ] = None,
) -> None:
    """Run a round against a running coordinator and print (and export) its results.

    Exit codes: 0 every carrier answered; 3 the round met its quorum without some (partial);
    4 it missed its quorum (failed); 1 the coordinator refused or could not be reached;
    2 bad input."""
    try:
        queries = parse_queries(metric, by, filters=filter_ or (), params=param or ())
        span = Period.parse(period)
        if output is not None:
            check_format(output)
    except OversightError as exc:
        raise fail(exc, EXIT_USAGE) from exc

    async def main() -> RoundOutcome:
        async with operator_client(
            coordinator, ca_cert, cert, key, token_file, server_name, signing_key
        ) as client:
            with ProgressDisplay() as display:
                return await client.run_round(
                    span,
                    queries,
                    carriers=[c for c in carriers.split(",") if c],
                    quorum=quorum,
                    deadline_seconds=deadline,
                    on_progress=display,
                )

    try:
        outcome = asyncio.run(main())
    except OversightError as exc:
        raise fail(exc) from exc
    show_outcome(outcome, per_carrier=per_carrier)
    show_carriers(outcome)
    if output is not None:
        export(outcome, output)
    show_verdict(outcome)
    raise typer.Exit(_ROUND_EXIT.get(outcome.state, EXIT_FAILED))


def check_format(output: Path) -> None:
    if output.suffix.lower() not in FORMATS:
        what = output.suffix or "a file without an extension"
        raise InvalidRequestError(f"cannot export to {what}: use {', '.join(FORMATS)}")


def export(outcome: RoundOutcome, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    write_export(outcome.tables, output, outcome.info())
    console.print(f"wrote {output}")


@round_app.command("list")
def round_list(
    coordinator: AddressOpt = "127.0.0.1:50051",
    limit: int = 20,
    suite: Annotated[
        str | None,
        typer.Option(
            "--suite", help="only the rounds the schedule ran for this suite, with its revisions"
        ),
    ] = None,
    ca_cert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    token_file: TokenOpt = None,
    server_name: ServerNameOpt = None,
) -> None:
    """List recent rounds (a scheduled round with its suite and the time it was due).

    With --suite, also each month's revisions: the n-th round of the suite that computed the
    month (docs/scheduling.md)."""

    async def main() -> None:
        async with operator_client(
            coordinator, ca_cert, cert, key, token_file, server_name
        ) as client:
            t = Table("round", "state", "period", "metrics", "answered", "suite", "due")
            for r in await client.list_rounds(limit, suite=suite):
                due = scheduled_for(r)
                t.add_row(
                    r.round_id,
                    str(convert.round_state_from_pb(r.state)),
                    f"{r.period.first_month}:{r.period.last_month}",
                    ",".join(q.metric for q in r.queries),
                    f"{r.carriers_answered}/{r.carriers_asked}",
                    r.suite,
                    f"{due:%Y-%m-%d %H:%M}" if due is not None else "",
                )
            console.print(t)
            if suite is None:
                return
            revisions = Table(
                "month",
                "revision",
                "round",
                "due",
                "state",
                "latest",
                title=f"revisions of {suite}",
            )
            for v in await client.list_revisions(suite):
                revisions.add_row(
                    v.month,
                    str(v.revision),
                    v.round_id,
                    f"{v.scheduled_for.ToDatetime(tzinfo=dt.UTC):%Y-%m-%d %H:%M}",
                    str(convert.round_state_from_pb(v.state)),
                    "yes" if v.latest else "",
                )
            console.print(revisions)

    try:
        asyncio.run(main())
    except OversightError as exc:
        raise fail(exc) from exc


@round_app.command("show")
def round_show(
    round_id: str,
    coordinator: AddressOpt = "127.0.0.1:50051",
    per_carrier: bool = False,
    ca_cert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    token_file: TokenOpt = None,
    server_name: ServerNameOpt = None,
) -> None:
    """Show a round's program-wide (and per-carrier) tables."""

    async def main() -> RoundOutcome:
        async with operator_client(
            coordinator, ca_cert, cert, key, token_file, server_name
        ) as client:
            return await client.get_round(round_id)

    try:
        outcome = asyncio.run(main())
    except OversightError as exc:
        raise fail(exc) from exc
    show_outcome(outcome, per_carrier=per_carrier)
    show_carriers(outcome)
    show_verdict(outcome)
    raise typer.Exit(_ROUND_EXIT.get(outcome.state, EXIT_ERROR))


@round_app.command("export")
def round_export(
    round_id: str,
    output: Path,
    coordinator: AddressOpt = "127.0.0.1:50051",
    ca_cert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    token_file: TokenOpt = None,
    server_name: ServerNameOpt = None,
) -> None:
    """Export a round's tables: tidy CSV (.csv) or Parquet (.parquet), or JSON (.json)."""
    try:
        check_format(output)
    except OversightError as exc:
        raise fail(exc, EXIT_USAGE) from exc

    async def main() -> RoundOutcome:
        async with operator_client(
            coordinator, ca_cert, cert, key, token_file, server_name
        ) as client:
            return await client.get_round(round_id)

    try:
        export(asyncio.run(main()), output)
    except OversightError as exc:
        raise fail(exc) from exc


@round_app.command("verify")
def round_verify(
    round_id: str,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="coordinator TOML config: check the round store it names"),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            help="a SQLite round store, e.g. a backup (default: the store the config names)",
        ),
    ] = None,
    coordinator: Annotated[
        str | None,
        typer.Option(
            "--coordinator",
            envvar="OVERSIGHT_ADDRESS",
            help="check through the operator API instead (needs --operator-key, --result-keys)",
        ),
    ] = None,
    operator_key: Annotated[
        Path | None, typer.Option("--operator-key", help="the operator signing key's public half")
    ] = None,
    result_keys: Annotated[
        Path | None,
        typer.Option("--result-keys", help="directory of the carriers' result keys (CARRIER.pub)"),
    ] = None,
    ca_cert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    token_file: TokenOpt = None,
    server_name: ServerNameOpt = None,
) -> None:
    """Re-check a round's signed request and every carrier's signed result (receipt).

    From the round store (``--config``), or through the operator API (``--coordinator``) with
    the auditor's own copies of the operator's public key and the carriers' result keys.
    Exits 0 when everything holds, 5 when any signature or link between a result and its
    request does not, 1 when the round cannot be read.
    """
    try:
        if coordinator is not None:
            if operator_key is None or result_keys is None:
                raise InvalidRequestError("--coordinator needs --operator-key and --result-keys")

            async def fetch() -> operator_pb2.RoundReceipts:
                async with operator_client(
                    coordinator, ca_cert, cert, key, token_file, server_name
                ) as client:
                    return await client.get_receipts(round_id)

            receipts = asyncio.run(fetch())
            outcome = verify_receipts(
                round_id,
                receipts.request,
                [
                    StoredResult(
                        round_id,
                        r.carrier_id,
                        bytes(r.result.result),
                        bytes(r.result.signature),
                        r.result.key_id,
                        r.received_at.ToDatetime(tzinfo=dt.UTC),
                    )
                    for r in receipts.receipts
                ],
                list(receipts.answered),
                operator_verifier=Verifier.load(operator_key),
                node_verifiers={p.stem: Verifier.load(p) for p in result_keys.glob("*.pub")},
            )
        else:
            if config is None:
                raise InvalidRequestError("give --config (a round store) or --coordinator")
            cfg = load_coordinator_config(config)
            if store is None and cfg.round_store is not None:
                opened = open_round_store(cfg)
            else:
                path = store or cfg.store_path
                if not path.exists():
                    raise OversightError(f"no round store at {path}")
                opened = RoundStore(path)
            node_verifiers = load_result_keys(cfg) or {}
            operator = (
                Verifier.load(cfg.operator_public_key)
                if cfg.operator_public_key is not None
                else Signer.load(cfg.operator_signing_key).verifier
                if cfg.operator_signing_key is not None
                else None
            )
            with opened as round_store:
                outcome = verify_round(
                    round_store,
                    round_id,
                    operator_verifier=operator,
                    node_verifiers=node_verifiers,
                    require_signatures=not cfg.insecure,
                )
    except OversightError as exc:
        raise fail(exc) from exc
    t = Table("carrier", "receipt", "key id", "data snapshot", "received", "problem")
    for r in outcome.receipts:
        t.add_row(
            r.carrier_id,
            "[green]valid[/green]" if r.ok else "[red]INVALID[/red]",
            r.key_id,
            r.data_snapshot[:16],
            f"{r.received_at:%Y-%m-%d %H:%M:%S}" if r.received_at else "",
            r.reason,
        )
    console.print(t)
    for r in outcome.receipts:
        if not r.ok:
            console.print(f"[red]{r.carrier_id}: receipt INVALID — {r.reason}[/red]")
    if not outcome.request_ok:
        console.print(f"[red]the round's request does not verify: {outcome.request_reason}[/red]")
    good = sum(1 for r in outcome.receipts if r.ok)
    if outcome.ok:
        console.print(f"round {round_id}: request and {good} receipts verified")
        return
    console.print(
        f"[bold red]round {round_id}: {len(outcome.receipts) - good} of"
        f" {len(outcome.receipts)} receipts do not verify[/bold red]"
    )
    raise typer.Exit(EXIT_INVALID)


@app.command()
def report(
    round_id: str,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the HTML file to write (e.g. report.html)")
    ],
    coordinator: AddressOpt = "127.0.0.1:50051",
    ca_cert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    token_file: TokenOpt = None,
    server_name: ServerNameOpt = None,
) -> None:
    """Write a round's oversight report: one self-contained HTML page (charts, tables, the
    round's completeness) that the browser prints to PDF."""
    if output.suffix.lower() not in (".html", ".htm"):
        raise fail(InvalidRequestError("the report is HTML: name an .html file"), EXIT_USAGE)

    async def main() -> RoundOutcome:
        async with operator_client(
            coordinator, ca_cert, cert, key, token_file, server_name
        ) as client:
            return await client.get_round(round_id)

    try:
        outcome = asyncio.run(main())
    except OversightError as exc:
        raise fail(exc) from exc
    write_report(round_frame(outcome), output)
    console.print(
        f"wrote {output}: round {outcome.round_id} ({outcome.period}), {outcome.state},"
        f" {outcome.answered}/{len(outcome.carriers)} carriers answered"
    )


@app.command()
def anchors(
    carrier: Annotated[str, typer.Option("--carrier", help="the carrier whose anchors to export")],
    output: Annotated[Path, typer.Option("--output", "-o", help="anchors file to write (JSON)")],
    result_key: Annotated[
        Path | None,
        typer.Option("--result-key", help="the carrier's public result key (CARRIER.pub)"),
    ] = None,
    result_keys: Annotated[
        Path | None,
        typer.Option("--result-keys", help="directory of the carriers' result keys (CARRIER.pub)"),
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="look through the N most recent rounds (0: the coordinator's 1,000)")
    ] = 0,
    coordinator: AddressOpt = "127.0.0.1:50051",
    ca_cert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    token_file: TokenOpt = None,
    server_name: ServerNameOpt = None,
) -> None:
    """Export a carrier's audit anchors: every signed result the coordinator keeps from it,
    each checked with the carrier's result key, for `carrier-node audit verify --anchors`.

    Exits 0 when written, 5 when a stored result does not verify (nothing is written), 2 when
    no key is given, 1 when the coordinator cannot be read.
    """
    if result_key is not None and result_keys is None:
        key_path = result_key
    elif result_keys is not None and result_key is None:
        key_path = result_keys / f"{carrier}.pub"
    else:
        raise fail(InvalidRequestError("give --result-key or --result-keys"), EXIT_USAGE)
    try:
        verifier = Verifier.load(key_path)

        async def fetch() -> operator_pb2.CarrierAnchors:
            async with operator_client(
                coordinator, ca_cert, cert, key, token_file, server_name
            ) as client:
                return await client.get_anchors(carrier, rounds)

        reply = asyncio.run(fetch())
    except OversightError as exc:
        raise fail(exc) from exc
    found: dict[str, AnchoredResult] = {}
    older = 0
    for receipt in reply.receipts:
        try:
            anchored = anchored_result(
                bytes(receipt.result.result),
                bytes(receipt.result.signature),
                receipt.result.key_id,
                verifier=verifier,
                carrier_id=carrier,
                received_at=receipt.received_at.ToDatetime(tzinfo=dt.UTC).isoformat(),
            )
        except OversightError as exc:
            console.print(
                f"[bold red]a result the coordinator keeps from {carrier} does not verify:"
                f" {exc.detail}[/bold red]; no anchors written"
            )
            raise typer.Exit(EXIT_INVALID) from exc
        if anchored is None:
            older += 1
        else:
            found.setdefault(anchored.result_sha256, anchored)
    write_anchors(output, carrier, found.values())
    last = max((a.anchor.seq for a in found.values()), default=0)
    console.print(
        f"wrote {len(found)} anchors of {carrier} (up to audit entry {last}) to {output}"
        + (f"; {older} results from before anchors carry none" if older else "")
    )


@app.command()
def provision(
    carriers_file: Annotated[
        Path,
        typer.Option(
            "--carriers",
            help="plan: TOML (carriers, operators, coordinator address; docs/operations.md)"
            " or lines 'id[,name]'",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="empty directory to write into")],
    coordinator_address: Annotated[
        str | None,
        typer.Option("--coordinator-address", help="host:port the nodes dial (overrides the plan)"),
    ] = None,
    coordinator_name: Annotated[
        list[str] | None,
        typer.Option(
            "--coordinator-name", help="extra DNS name / IP in the coordinator certificate"
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="the coordinator's listen address (default 127.0.0.1:PORT)"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="the carriers' data directory on their hosts (default /srv/carrier-data)",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="the carriers' state directory on their hosts (default /var/lib/carrier-node)",
        ),
    ] = None,
    days: Annotated[int | None, typer.Option(help="certificate validity in days")] = None,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="UID:GID to give the coordinator's and carriers' kits to (root only), e.g."
            " 10001:10001, the user of the container images",
        ),
    ] = None,
) -> None:
    """Create a CA, the coordinator's identity and config, operator identities and one
    start-up kit per carrier. Private keys are written 0600 and never printed."""
    from pydantic import ValidationError

    from coordinator.provision import hand_over, load_plan
    from coordinator.provision import provision as run_provision

    try:
        ids = _owner(owner) if owner else None
        plan = load_plan(carriers_file)
        changes: dict[str, object] = {}
        if coordinator_address:
            changes["coordinator_address"] = coordinator_address
        if coordinator_name:
            changes["coordinator_names"] = (*plan.coordinator_names, *coordinator_name)
        if listen:
            changes["listen"] = listen
        if data_dir:
            changes["data_dir"] = data_dir
        if state_dir:
            changes["state_dir"] = state_dir
        if days:
            changes["valid_days"] = days
        if changes:
            try:
                plan = plan.model_validate({**plan.model_dump(), **changes})
            except ValidationError as exc:
                raise ConfigError(f"invalid provisioning option: {exc}") from exc
        done = run_provision(plan, out)
        if ids is not None:
            hand_over(done, *ids)
    except OversightError as exc:
        raise fail(exc) from exc
    # Paths are printed whole, never wrapped: they are copied from here.
    say = functools.partial(console.print, soft_wrap=True)
    say(f"CA:           {done.ca_cert}  (keep {done.ca_key.name} offline)")
    say(f"coordinator:  {done.coordinator_config}  (listens on {plan.listen_address()})")
    for name, kit in done.operators.items():
        token = " + token" if kit.token else ""
        say(f"operator:     {name} ({kit.role}) {kit.directory}{token}")
    for carrier_id, ckit in done.carriers.items():
        own = " (own certificate)" if ckit.cert is None else ""
        say(f"carrier kit:  {carrier_id} {ckit.directory}{own}")
    if (out / "k8s").is_dir():
        say(f"kubernetes:   {out / 'k8s'}  (kubectl apply -k; see its kustomization)")
    say(
        f"provisioned {len(done.carriers)} carriers for {plan.coordinator_address}; send each"
        " carrier its kit directory over a trusted channel"
    )
    first = next(iter(done.operators.values()), None)
    if first is not None and first.env_file is not None:
        say(f"operator CLI: set -a; . {first.env_file}; set +a   (OVERSIGHT_* settings)")


def _owner(text: str) -> tuple[int, int]:
    uid, _, gid = text.partition(":")
    if not (uid.isdigit() and gid.isdigit()):
        raise InvalidRequestError("--owner takes numeric UID:GID, e.g. 10001:10001")
    return int(uid), int(gid)


@app.command()
def carriers(
    coordinator: AddressOpt = "127.0.0.1:50051",
    ca_cert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    token_file: TokenOpt = None,
    server_name: ServerNameOpt = None,
) -> None:
    """List registered carriers and whether their nodes are connected."""

    async def main() -> None:
        async with operator_client(
            coordinator, ca_cert, cert, key, token_file, server_name
        ) as client:
            t = Table("carrier", "name", "connected", "node version")
            for c in await client.list_carriers():
                t.add_row(
                    c.carrier_id, c.display_name, "yes" if c.connected else "no", c.node_version
                )
            console.print(t)

    try:
        asyncio.run(main())
    except OversightError as exc:
        raise fail(exc) from exc


@schedule_app.command("show")
def schedule_show(
    config: Annotated[Path, typer.Option("--config", help="coordinator TOML config")],
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="as of this UTC time (ISO, e.g. 2026-12-01T00:00) instead of now"
        ),
    ] = None,
) -> None:
    """Show the schedule the config names: each suite in words, its next due time and the
    months that run will cover. Exits 2 when the config or the schedule is not valid."""
    try:
        cfg = load_coordinator_config(config)
        if cfg.schedule is None:
            raise ConfigError(f'{config} names no schedule (schedule = "schedule.toml")')
        schedule = load_schedule(cfg.schedule)
        now = _utc_time(at) if at else dt.datetime.now(dt.UTC)
    except OversightError as exc:
        raise fail(exc, EXIT_USAGE) from exc
    if not schedule.suites:
        console.print(f"{cfg.schedule}: no suites")
        return
    for suite in schedule.suites:
        due = suite.next_due(now)
        console.print(
            f"[bold]{suite.name}[/bold]" + (f" — {suite.description}" if suite.description else "")
        )
        console.print(f"  {suite.describe()}", soft_wrap=True, highlight=False)
        console.print(
            f"  next due {due:%Y-%m-%d %H:%M} UTC, covering {suite.window(due)}",
            highlight=False,
        )


def _utc_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"not an ISO time: {text!r}") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@metrics_app.command("list")
def metrics_list() -> None:
    """List the catalogue's metrics."""
    t = Table("metric", "version", "title")
    for m in catalogue.metrics():
        t.add_row(m.name, str(m.version), m.title)
    console.print(t)
    console.print(f"catalogue version {catalogue.CATALOGUE_VERSION}")


@metrics_app.command("describe")
def metrics_describe(name: str, version: int = 0) -> None:
    """Show a metric's definition, dimensions, statistics and figures."""
    try:
        m = catalogue.get_metric(name, version or None)
    except OversightError as exc:
        raise fail(exc) from exc
    console.print(f"[bold]{m.name}[/bold] v{m.version} — {m.title}\n")
    console.print(m.definition + "\n")
    console.print("dimensions: " + ", ".join(sorted(m.dimensions)))
    if m.one_of:
        console.print("groups by exactly one of: " + ", ".join(sorted(m.one_of)))
    t = Table("statistic", "kind", "description")
    for s in m.statistics:
        t.add_row(s.name, str(s.kind), s.description)
    console.print(t)
    for f in m.figures:
        console.print(f"figure {f.name}: {f.description}")
    for p in m.parameters:
        console.print(f"parameter {p.name} (default {p.default}): {p.description}")
