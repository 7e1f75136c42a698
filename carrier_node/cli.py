"""``carrier-node``: the carrier side's command line (serve, check, policy, audit, approve)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import getpass
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.prompt import Prompt
from rich.table import Table

from carrier_node.config import NodeConfig, audit_log_path, load_node_config
from carrier_node.daemon import REVIEWER_REJECTED, NodeDaemon
from carrier_node.data.checks import check_files, check_warehouse
from carrier_node.data.control_totals import ControlTotals
from carrier_node.data.files import FileSource
from carrier_node.data.report import EXIT_NOT_CHECKED, CheckReport, Finding
from carrier_node.data.source import DataSource
from carrier_node.data.validation import CsvEncoding
from carrier_node.data.warehouse import PostgresSource
from carrier_node.policy import Policy
from carrier_node.query.control import ControlComparison, compare_control_totals, dollars
from carrier_node.records.audit import JsonValue, Outcome, read_entries
from carrier_node.records.audit import verify as verify_audit
from carrier_node.records.review import (
    STATUS_LABELS,
    Review,
    describe_query,
    format_change,
    format_value,
    held_result,
    review,
    review_json,
)
from carrier_node.records.state import HeldRelease, NodeState, ReviewStatus, node_state_path
from carrier_node.records.transparency import SECTIONS as REPORT_SECTIONS
from carrier_node.records.transparency import audit_report
from fedoversight.anchors import read_anchors
from fedoversight.errors import OversightError
from fedoversight.logs import configure_logging
from fedoversight.periods import Period
from fedoversight.signing import Signer, Verifier

console = Console()
app = typer.Typer(no_args_is_help=True, help="Federated oversight: the carrier node.")
policy_app = typer.Typer(no_args_is_help=True, help="The carrier's disclosure policy.")
app.add_typer(policy_app, name="policy")
audit_app = typer.Typer(no_args_is_help=True, help="The node's hash-chained audit log.")
app.add_typer(audit_app, name="audit")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="node TOML config")]
LogOpt = Annotated[Path | None, typer.Option("--log", help="audit log file (instead of --config)")]


#: ``carrier-node serve`` exit statuses (docs/operations.md; the systemd unit restarts on 1
#: only): stopped on SIGTERM or SIGINT; an unexpected failure (its traceback is in the log);
#: a configuration, key or audit-log problem no restart fixes.
EXIT_STOPPED, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", help="node TOML config")],
    json_logs: Annotated[bool, typer.Option("--json-logs", help="JSON log lines")] = False,
) -> None:
    """Run the node daemon: dial out to the coordinator and answer requests.

    Exits 0 when stopped (SIGTERM, SIGINT: evaluations under way are stopped and refused
    within the grace period, everything signed stays in the outbox), 1 on an unexpected
    failure, 2 on a configuration problem."""
    configure_logging(json_format=json_logs)
    try:
        cfg = load_node_config(config)
        daemon = NodeDaemon(cfg)
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}", soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from exc
    if cfg.insecure:
        console.print(
            "[bold red]INSECURE DEMO MODE[/bold red]: requests are accepted unsigned"
            + ("" if cfg.tls else " and the connection is plaintext")
            + ". Never use with real claims data."
        )
    if daemon.records_error is not None:
        console.print(
            f"[red]warning:[/red] the node's records in {cfg.state_dir} cannot be written; it"
            " runs and refuses every request until they can"
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = asyncio.create_task(daemon.run())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        await daemon.shutdown()
        await running

    try:
        asyncio.run(main())
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}", soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from exc
    except Exception as exc:
        logging.getLogger(__name__).exception("the node failed")
        console.print(f"[red]error:[/red] the node failed ({type(exc).__name__}); see its log")
        raise typer.Exit(EXIT_FAILED) from exc
    if any(t.name.startswith("evaluation") and t.is_alive() for t in threading.enumerate()):
        # An evaluation that did not stop in time (it is refused and nothing of it is
        # kept): do not wait for it at exit.
        logging.getLogger(__name__).warning("an evaluation did not stop in time; exiting")
        logging.shutdown()
        os._exit(EXIT_STOPPED)


class CheckFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@app.command()
def check(
    data: Annotated[
        Path | None, typer.Option("--data", help="directory of the carrier's tables")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="node TOML config: its data_dir or [warehouse] (checked in place), and its"
            " control_totals_file",
        ),
    ] = None,
    control_totals: Annotated[
        Path | None,
        typer.Option(
            "--control-totals",
            help="control totals TOML to compare the data with (default: the config's)",
        ),
    ] = None,
    output: Annotated[
        CheckFormat, typer.Option("--format", help="text for people, json for pipelines")
    ] = CheckFormat.TEXT,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="the date (YYYY-MM-DD) dates must not be after: the extract's date (default"
            " today)",
        ),
    ] = None,
    csv_encoding: Annotated[
        CsvEncoding | None,
        typer.Option(
            "--csv-encoding",
            help="encoding of the CSV files (default: node.toml's csv_encoding, else auto)",
        ),
    ] = None,
) -> None:
    """Check the carrier's data: schema validation, the plausibility rules, then the control
    totals (when declared), month by month.

    Every finding names table, file, column, rule, rows affected and the first row numbers
    (1-based within the file; in a warehouse the row's ctid), never a value. --data wins over
    the config's data_dir or [warehouse].

    Exits 0 when nothing was found, 1 with warnings only (a control total that differs is a
    warning), 2 with at least one error (or a usage error), 3 when the check could not run (an
    unreadable config, an unreachable warehouse). docs/operations.md describes the JSON
    document of --format json.
    """
    try:
        day = datetime.date.fromisoformat(as_of) if as_of else datetime.date.today()
    except ValueError:
        _check_failed("--as-of is not a date (YYYY-MM-DD)", output)
    if data is None and config is None:
        _check_failed("give --data DIR or --config node.toml", output)
    try:
        cfg = load_node_config(config) if config is not None else None
        totals_file = control_totals or (cfg.control_totals_file if cfg else None)
        totals = ControlTotals.load(totals_file) if totals_file else ControlTotals()
        encoding = csv_encoding or (cfg.csv_encoding if cfg else "auto")
        if data is None and cfg is not None and cfg.warehouse is None:
            data = cfg.data_dir
        if data is not None:
            report = check_files(data, day, encoding)
        else:
            assert cfg is not None and cfg.warehouse is not None
            report = check_warehouse(cfg.warehouse, day)
    except OversightError as exc:
        _check_failed(exc.detail, output)
    compared: list[ControlComparison] = []
    if totals:
        if report.status == "errors":
            report = report.with_findings(_totals_not_compared("the data has errors"))
        else:
            try:
                with _open_source(data, cfg, encoding) as source:
                    carrier_id = cfg.carrier_id if cfg is not None else "carrier"
                    compared = compare_control_totals(source, carrier_id, totals)
            except OversightError as exc:
                _check_failed(f"control totals not compared: {exc.detail}", output)
            report = report.with_findings(*(_totals_finding(c) for c in compared if not c.matches))
    if output is CheckFormat.JSON:
        document = report.to_json()
        if totals:
            document["control_totals"] = [c.as_json() for c in compared]
        print(json.dumps(document, indent=2))
    else:
        _print_report(report)
        if compared:
            _print_control_totals(compared)
    raise typer.Exit(report.exit_code)


def _totals_finding(compared: ControlComparison) -> Finding:
    """A declared month the data does not match: a warning (a recent month may still fill)."""
    return Finding(
        kind="control_total",
        severity="warning",
        table=compared.table,
        file=None,
        column=None,
        rule="control_total_differs",
        rows=0,
        message=f"warning: {compared.describe()}",
        detail={
            "month": str(compared.month),
            "declared_claims": compared.declared_claims,
            "data_claims": compared.data_claims,
            "declared_paid_cents": compared.declared_paid_cents,
            "data_paid_cents": compared.data_paid_cents,
        },
    )


def _totals_not_compared(reason: str) -> Finding:
    return Finding(
        kind="control_total",
        severity="warning",
        table="",
        file=None,
        column=None,
        rule="control_totals_not_compared",
        rows=0,
        message=f"warning: control totals not compared: {reason}",
    )


def _check_failed(reason: str, output: CheckFormat) -> NoReturn:
    if output is CheckFormat.JSON:
        print(
            json.dumps(
                {
                    "report": "carrier-node check",
                    "status": "not_checked",
                    "exit_code": EXIT_NOT_CHECKED,
                    "error": reason,
                },
                indent=2,
            )
        )
    else:
        console.print(f"[red]error:[/red] {reason}")
    raise typer.Exit(EXIT_NOT_CHECKED)


def _print_report(report: CheckReport) -> None:
    where = f"{report.location} (checked as of {report.as_of.isoformat()})"
    if not report.findings:
        console.print(f"[green]{where}: no problems found[/green]")
        return
    rows_header = "first rows" if report.row_identity == "file_row" else "first rows (ctid)"
    t = Table("severity", "kind", "table", "file", "column", "rule", "rows", rows_header)
    for f in report.findings:
        t.add_row(
            f.severity,
            f.kind,
            f.table,
            f.file or "",
            f.column or "",
            f.rule,
            str(f.rows),
            ", ".join(str(r) for r in f.first_rows),
        )
    console.print(t)
    for f in report.findings:
        console.print(f"- {f.message}", highlight=False, markup=False)
    console.print(f"{where}: {report.status}")


def _print_control_totals(compared: Sequence[ControlComparison]) -> None:
    """Each declared month beside the data (see :mod:`carrier_node.query.control`); the months
    that differ are also among the report's findings."""
    t = Table(
        "table",
        "month",
        "claims declared",
        "claims in data",
        "paid declared",
        "paid in data",
        "",
        title="control totals",
    )
    for c in compared:
        t.add_row(
            c.table,
            str(c.month),
            f"{c.declared_claims:,}",
            f"{c.data_claims:,}",
            dollars(c.declared_paid_cents),
            dollars(c.data_paid_cents),
            "[green]matches[/green]" if c.matches else "[yellow]DIFFERS[/yellow]",
        )
    console.print(t)
    if all(c.matches for c in compared):
        console.print(f"[green]control totals: all {len(compared)} declared months match[/green]")


@contextlib.contextmanager
def _open_source(
    data: Path | None, cfg: NodeConfig | None, csv_encoding: CsvEncoding
) -> Iterator[DataSource]:
    """The data source the check reads: the directory given, else the config's warehouse."""
    source: FileSource | PostgresSource
    if data is not None:
        source = FileSource(
            data, threads=cfg.engine_threads if cfg else None, csv_encoding=csv_encoding
        )
    else:
        assert cfg is not None and cfg.warehouse is not None
        source = PostgresSource(cfg.warehouse)
    source.open()
    try:
        yield source
    finally:
        source.close()


@policy_app.command("show")
def policy_show(
    config: Annotated[Path | None, typer.Option("--config", help="node TOML config")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="policy TOML file")] = None,
) -> None:
    """Show the policy in force (the defaults when none is configured), in words."""
    try:
        path = policy or (load_node_config(config).policy_file if config else None)
        loaded = Policy.load(path) if path else Policy()
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}", soft_wrap=True)
        raise typer.Exit(2) from exc
    source = str(path) if path else "none configured: the defaults"
    console.print(f"[bold]Disclosure policy[/bold] ({source}), digest {loaded.digest}")
    for title, rows in loaded.summary():
        console.print()
        console.print(f"[bold]{title}[/bold]")
        t = Table(show_header=False, box=None, padding=(0, 2, 0, 2))
        for setting, text in rows:
            t.add_row(setting, text)
        console.print(t)
    console.print()
    console.print("[bold]Metrics answered[/bold] (catalogue version of each)")
    families: dict[str, list[str]] = {}
    for key in loaded.answered_metrics():
        name, version = key.split("@")
        family, _, short = name.partition(".")
        families.setdefault(family, []).append(f"{short} v{version}")
    t = Table(show_header=False, box=None, padding=(0, 2, 0, 2))
    for family, names in families.items():
        t.add_row(family, ", ".join(names))
    console.print(t)


def _audit_path(config: Path | None, log_file: Path | None) -> Path:
    if log_file is not None:
        return log_file
    if config is None:
        console.print("[red]error:[/red] give --config (the node's TOML) or --log")
        raise typer.Exit(2)
    try:
        return audit_log_path(load_node_config(config))
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _purpose_text(entry: dict[str, JsonValue]) -> str:
    """``[purpose by office] `` of an admitted or refused entry ("" when none is recorded)."""
    purpose = entry.get("purpose")
    if not isinstance(purpose, dict):
        return ""
    return escape(f"[{purpose.get('code')} by {purpose.get('office')}] ")


def _summary(entry: dict[str, JsonValue]) -> str:
    kind = entry.get("kind")
    if kind == "received":
        signed = "signed" if entry.get("signed") else "UNSIGNED"
        return f"{signed}, key {entry.get('key_id')}, {entry.get('bytes')} bytes"
    if kind == "admitted":
        queries = entry.get("queries")
        return (
            _purpose_text(entry)
            + f"{entry.get('period')}: "
            + "; ".join(str(q) for q in (queries if isinstance(queries, list) else []))
        )
    if kind == "refused":
        return (
            _purpose_text(entry)
            + f"{entry.get('stage')}: {entry.get('code')} — {entry.get('reason')}"
        )
    if kind == "released":
        tables = entry.get("tables")
        parts = []
        for t in tables if isinstance(tables, list) else []:
            if isinstance(t, dict):
                parts.append(
                    f"{t.get('metric')}@{t.get('version')} {t.get('released')}/{t.get('cells')}"
                    " released"
                )
        text = f"result {str(entry.get('result_sha256'))[:16]}…; " + "; ".join(parts)
        if entry.get("approved_by"):
            text += f"; approved by {entry.get('approved_by')}"
        return text
    if kind == "held":
        return f"result {str(entry.get('result_sha256'))[:16]}… held for the reviewer"
    if kind == "rejected":
        return f"rejected by {entry.get('rejected_by')}: {entry.get('reason') or '(no reason)'}"
    if kind == "resent":
        return f"answer {str(entry.get('message_sha256'))[:16]}… sent again"
    if kind == "started":
        return (
            f"node {entry.get('node_version')}, catalogue {entry.get('catalogue_version')},"
            f" policy {entry.get('policy_digest')}"
        )
    return ""


@audit_app.command("show")
def audit_show(
    config: ConfigOpt = None,
    log_file: LogOpt = None,
    limit: Annotated[int, typer.Option(help="show the last N entries (0: all)")] = 50,
    request: Annotated[str, typer.Option(help="only entries of this request or round id")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="raw JSON lines")] = False,
) -> None:
    """Show the audit log: requests received, decisions, releases."""
    path = _audit_path(config, log_file)
    if not path.exists():
        console.print(f"[red]error:[/red] no audit log at {path}")
        raise typer.Exit(2)
    entries = [e for _, e in read_entries(path) if e is not None]
    if request:
        entries = [e for e in entries if request in (e.get("request_id"), e.get("round_id"))]
    if limit > 0:
        entries = entries[-limit:]
    if as_json:
        for e in entries:
            shown = {k: v for k, v in e.items() if k != "result"}
            print(json.dumps(shown, sort_keys=True))
        return
    t = Table("seq", "time", "kind", "request", "round", "what")
    for e in entries:
        t.add_row(
            str(e.get("seq")),
            str(e.get("time", ""))[:19],
            str(e.get("kind")),
            str(e.get("request_id") or ""),
            str(e.get("round_id") or ""),
            _summary(e),
        )
    console.print(t)


@audit_app.command("report")
def audit_report_command(
    period: Annotated[
        str, typer.Option("--period", help="decisions made in: 2026, 2026Q1, 2026-01:2026-06")
    ],
    config: ConfigOpt = None,
    log_file: LogOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """A report to publish from the audit log: requests by declared purpose and office,
    queries by metric and grouping, refusals by reason, releases, cells withheld."""
    path = _audit_path(config, log_file)
    if not path.exists():
        console.print(f"[red]error:[/red] no audit log at {path}")
        raise typer.Exit(2)
    try:
        report = audit_report(path, Period.parse(period))
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(report.json(), indent=2, sort_keys=True))
        return
    console.print(f"Transparency report {report.period} from the audit log {path}")
    for name, title in REPORT_SECTIONS:
        rows = report.sections[name]
        itemised = any(item for (_, _, item), _ in rows)
        columns = ["purpose", "office", *(["item"] if itemised else []), "count"]
        t = Table(*columns, title=title)
        for (purpose, office, item), n in rows:
            t.add_row(purpose, office, *([escape(item)] if itemised else []), f"{n:,}")
        if not rows:
            t.add_row(*(["none"] + [""] * (len(columns) - 1)))
        console.print(t)


#: Exit codes of ``carrier-node audit verify`` (docs/operations.md lists them).
EXIT_AUDIT_ANCHORED = 0  # chain, head and every anchor hold
EXIT_AUDIT_BROKEN = 1  # an entry edited, missing, extra or moved; a cut tail; an anchor fails
EXIT_AUDIT_USAGE = 2  # no log, or the anchors cannot be read or do not verify
EXIT_AUDIT_UNPROVEN = 3  # nothing wrong found, but no anchors (or no head file) to prove it


def _result_verifier(config: Path | None, result_key: Path | None) -> Verifier | None:
    """The carrier's public result key: given, or the half of the node's signing key."""
    if result_key is not None:
        return Verifier.load(result_key)
    if config is not None:
        cfg = load_node_config(config)
        if cfg.result_signing_key is not None:
            return Signer.load(cfg.result_signing_key).verifier
    return None


@audit_app.command("verify")
def audit_verify(
    config: ConfigOpt = None,
    log_file: LogOpt = None,
    anchors: Annotated[
        Path | None,
        typer.Option(
            "--anchors",
            help="anchors file from the coordinator (`oversight anchors`): proves the log was"
            " neither cut short nor rewritten up to the last anchor",
        ),
    ] = None,
    result_key: Annotated[
        Path | None,
        typer.Option(
            "--result-key",
            help="the carrier's public result key, to check the anchors' signatures (default:"
            " the config's result_signing_key)",
        ),
    ] = None,
) -> None:
    """Check the hash chain (naming the first edited, deleted, inserted or reordered entry),
    the head file and, with --anchors, the anchors the node signed into its results.

    Exits 0 when the log is proven up to its last anchor, 1 when it is broken, 2 when the log
    or the anchors cannot be read (or the anchors do not verify), and 3 when nothing wrong was
    found but it cannot be proven: no anchors, no head file, or anchors not checked with the
    carrier's key.
    """
    path = _audit_path(config, log_file)
    if not path.exists():
        console.print(f"[red]error:[/red] no audit log at {path}")
        raise typer.Exit(EXIT_AUDIT_USAGE)
    anchored = None
    checked_keys = False
    if anchors is not None:
        try:
            verifier = _result_verifier(config, result_key)
            carrier_id = load_node_config(config).carrier_id if config is not None else None
            _, anchored = read_anchors(anchors, verifier=verifier, carrier_id=carrier_id)
        except OversightError as exc:
            console.print(f"[red]error:[/red] {exc.detail}", soft_wrap=True)
            raise typer.Exit(EXIT_AUDIT_USAGE) from exc
        checked_keys = verifier is not None
    outcome = verify_audit(path, anchors=anchored)
    if outcome.outcome is Outcome.BROKEN:
        console.print(f"[bold red]audit log BROKEN[/bold red] ({path}): {outcome.problem}")
        raise typer.Exit(EXIT_AUDIT_BROKEN)
    unproven = list(outcome.unproven)
    if anchored is not None and not checked_keys:
        unproven.insert(
            0,
            "the anchors' signatures were not checked (give --result-key or --config): they"
            " prove only as much as their source is trusted",
        )
    if outcome.outcome is Outcome.ANCHORED and checked_keys:
        console.print(
            f"[green]audit log intact and anchored[/green]: {outcome.entries} entries; chain,"
            f" head and {outcome.anchors} anchors agree up to entry {outcome.anchored_to}"
            f" ({path})"
        )
        for note in unproven:
            console.print(f"  not proven: {note}")
        return
    what = "chain and head agree" if outcome.head_found else "chain consistent"
    if outcome.anchors:
        what += f", {outcome.anchors} anchors hold up to entry {outcome.anchored_to}"
    console.print(
        f"[yellow]audit log NOT PROVEN[/yellow]: {outcome.entries} entries, {what}, but ({path}):"
    )
    for note in unproven:
        console.print(f"  - {note}")
    raise typer.Exit(EXIT_AUDIT_UNPROVEN)


# --- manual release -------------------------------------------------------------------------


def _node_files(config: Path) -> tuple[NodeConfig, Path]:
    try:
        cfg = load_node_config(config)
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}", soft_wrap=True)
        raise typer.Exit(2) from exc
    path = node_state_path(cfg.state_dir, cfg.carrier_id)
    if not path.exists():
        console.print(f"[red]error:[/red] no node state at {path} (has the node run?)")
        raise typer.Exit(2)
    return cfg, path


def _held_summary(held: HeldRelease) -> tuple[str, str]:
    """What a held result answers, and its cells released / withheld."""
    try:
        result = held_result(held)
    except OversightError:
        return "?", "?"
    cells = released = 0
    for table in result.tables:
        cells += len(table.cells)
        released += table.disclosure.cells_released
    answers = "; ".join(describe_query(q) for q in held.queries)
    return answers, f"{released} of {cells} released"


def _list_held(state: NodeState, show_all: bool, as_json: bool) -> None:
    rows = state.held_releases(None if show_all else (ReviewStatus.HELD,))
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "request_id": h.request_id,
                        "round_id": h.round_id,
                        "status": str(h.status),
                        "held_at": h.created_at,
                        "expires_at": h.expires_at,
                        "period": h.period,
                        "queries": list(h.queries),
                        "reviewer": h.reviewer,
                        "decided_at": h.decided_at,
                    }
                    for h in rows
                ],
                sort_keys=True,
            )
        )
        return
    if not rows:
        console.print(
            "no results are held for approval"
            if not show_all
            else "no result was ever held for approval"
        )
        return
    t = Table(
        "request",
        "round",
        "status",
        "held at",
        "expires",
        "period",
        "answers",
        "cells",
        title="results held for approval" if not show_all else "held results",
    )
    for h in rows:
        answers, cells = _held_summary(h)
        t.add_row(
            h.request_id,
            h.round_id,
            str(h.status),
            h.created_at[:19],
            h.expires_at[:19],
            h.period,
            answers,
            cells,
        )
    console.print(t)
    console.print(
        "show one: carrier-node approve REQUEST_ID --config …; then --release or --reject"
    )


def _show_review(view: Review) -> None:
    held = view.held
    console.print(
        f"[bold]request {held.request_id}[/bold] (round {held.round_id}), period"
        f" {held.period}: {held.status}; held since {held.created_at[:19]}"
    )
    purpose = view.purpose
    if purpose is None:
        console.print("[yellow]purpose: none declared[/yellow]")
    else:
        console.print(
            f"purpose: [bold]{escape(purpose.get('code', ''))}[/bold] (list"
            f" {escape(purpose.get('list_version', ''))}), asked by office"
            f" {escape(purpose.get('office', ''))}: {escape(purpose.get('justification', ''))}"
        )
    if held.decided_at:
        console.print(
            f"decided by {held.reviewer} at {held.decided_at[:19]}"
            + (f": {held.reason}" if held.reason else "")
        )
    if view.expired:
        console.print(
            f"[yellow]the request expired at {held.expires_at[:19]}[/yellow]: the coordinator"
            " may have closed the round without this carrier"
        )
    for t in view.tables:
        d = t.table.disclosure
        prev = t.previous
        console.print()
        console.print(
            f"[bold]{describe_query(t.query)}[/bold]: {len(t.cells)} cells ({d.method});"
            f" {d.cells_released} released whole, {d.cells_partly_withheld} partly and"
            f" {d.cells_withheld} wholly withheld, {d.cells_perturbed} perturbed"
        )
        if prev is None:
            console.print("previous release: none of this query")
        else:
            how = f"approved by {prev.approved_by}" if prev.approved_by else "automatic"
            console.print(
                f"previous release: round {prev.round_id}, period {prev.period or '?'},"
                f" {prev.released_at[:19]} ({how})"
            )
        grid = Table("cell", "status", "statistic", "value", "previous", "change")
        for cell in t.cells:
            key = ", ".join(f"{d}={v}" for d, v in cell.key) or "(all)"
            for i, stat in enumerate(cell.stats):
                grid.add_row(
                    key if i == 0 else "",
                    STATUS_LABELS[cell.status] if i == 0 else "",
                    stat.name,
                    format_value(stat.kind, stat.value),
                    format_value(stat.kind, stat.previous_value)
                    if stat.previous_status is not None
                    else "",
                    format_change(stat),
                )
        console.print(grid)


def _default_reviewer() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment
        return "unknown"


@app.command()
def approve(
    config: Annotated[Path, typer.Option("--config", help="node TOML config")],
    request_id: Annotated[
        str | None, typer.Argument(help="a held result's request id (none: list them)")
    ] = None,
    release: Annotated[bool, typer.Option("--release", help="send the held result")] = False,
    reject: Annotated[
        bool,
        typer.Option(
            "--reject",
            help="refuse instead; the coordinator is told the carrier's reviewer rejected it",
        ),
    ] = False,
    reason: Annotated[
        str, typer.Option(help="why (kept in the node's audit log, never sent)")
    ] = "",
    reviewer: Annotated[
        str | None, typer.Option(help="who decides (default: the login name)")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="list decided results too")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables")] = False,
) -> None:
    """Manual release: list held results, show one cell by cell beside the previous release
    of the same query, then release or reject it (the running node carries it out)."""
    if release and reject:
        console.print("[red]error:[/red] give --release or --reject, not both")
        raise typer.Exit(2)
    cfg, path = _node_files(config)
    state = NodeState(path)
    try:
        if request_id is None:
            if release or reject:
                console.print("[red]error:[/red] name the request to release or reject")
                raise typer.Exit(2)
            _list_held(state, show_all, as_json)
            return
        held = state.held_release(request_id)
        if held is None:
            console.print(f"[red]error:[/red] no held result for request {request_id}")
            raise typer.Exit(1)
        view = review(held, audit_log_path(cfg))
        if as_json:
            print(json.dumps(review_json(view), sort_keys=True))
        else:
            _show_review(view)
        if not (release or reject):
            if held.status is not ReviewStatus.HELD or as_json or not sys.stdin.isatty():
                return
            choice = Prompt.ask(
                "release it, reject it, or keep it held?",
                choices=["release", "reject", "hold"],
                default="hold",
                console=console,
            )
            if choice == "hold":
                return
            release, reject = choice == "release", choice == "reject"
            if reject and not reason:
                reason = Prompt.ask("reason (kept in the audit log)", default="", console=console)
        _decide(
            state, held, approve=release, reviewer=reviewer or _default_reviewer(), reason=reason
        )
    finally:
        state.close()


def _decide(
    state: NodeState, held: HeldRelease, *, approve: bool, reviewer: str, reason: str
) -> None:
    if not state.decide(held.request_id, approve=approve, reviewer=reviewer, reason=reason):
        now = state.held_release(held.request_id)
        status = now.status if now is not None else "gone"
        console.print(f"[red]error:[/red] request {held.request_id} is no longer held ({status})")
        raise typer.Exit(1)
    if approve:
        console.print(
            f"[green]approved[/green]: the running node sends request {held.request_id}'s"
            " result within seconds (a stopped node sends it when it next connects)"
        )
    else:
        console.print(
            f'[yellow]rejected[/yellow]: the coordinator is told "{REVIEWER_REJECTED}";'
            " the reason stays in the node's audit log"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """The ``carrier-node`` entry point (``argv`` instead of the process's arguments)."""
    app(args=list(argv) if argv is not None else None, prog_name="carrier-node")
