"""``carrier-node``: the carrier side's command line (serve, check, policy)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from carrier_node.audit import JsonValue, read_entries
from carrier_node.audit import verify as verify_audit
from carrier_node.config import audit_log_path, load_node_config
from carrier_node.daemon import NodeDaemon
from carrier_node.policy import Policy
from carrier_node.validation import check_directory
from fedoversight.errors import OversightError
from fedoversight.logs import configure_logging

console = Console()
app = typer.Typer(no_args_is_help=True, help="Federated oversight: the carrier node.")
policy_app = typer.Typer(no_args_is_help=True, help="The carrier's disclosure policy.")
app.add_typer(policy_app, name="policy")
audit_app = typer.Typer(no_args_is_help=True, help="The node's hash-chained audit log.")
app.add_typer(audit_app, name="audit")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="node TOML config")]
LogOpt = Annotated[Path | None, typer.Option("--log", help="audit log file (instead of --config)")]


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", help="node TOML config")],
    json_logs: Annotated[bool, typer.Option("--json-logs", help="JSON log lines")] = False,
) -> None:
    """Run the node daemon: dial out to the coordinator and answer requests."""
    configure_logging(json_format=json_logs)
    try:
        cfg = load_node_config(config)
        daemon = NodeDaemon(cfg)
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from exc
    if cfg.insecure:
        console.print(
            "[bold red]INSECURE DEMO MODE[/bold red]: requests are accepted unsigned"
            + ("" if cfg.tls else " and the connection is plaintext")
            + ". Never use with real claims data."
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(daemon.run())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(daemon.shutdown()))
        await task

    asyncio.run(main())


@app.command()
def check(
    data: Annotated[Path, typer.Option("--data", help="directory of the carrier's tables")],
) -> None:
    """Validate a data directory: every problem with file, column and rows affected."""
    problems = check_directory(data)
    if not problems:
        console.print(f"[green]{data}: no problems found[/green]")
        return
    t = Table("severity", "table", "file", "column", "problem", "rows")
    for p in problems:
        t.add_row(p.severity, p.table, p.file, p.column or "", p.kind, str(p.rows))
    console.print(t)
    for p in problems:
        console.print(f"- {p.describe()}")
    if any(p.severity == "error" for p in problems):
        raise typer.Exit(1)


@policy_app.command("show")
def policy_show(
    config: Annotated[Path | None, typer.Option("--config", help="node TOML config")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="policy TOML file")] = None,
) -> None:
    """Show the policy in force (the defaults when none is configured)."""
    try:
        path = policy or (load_node_config(config).policy_file if config else None)
        loaded = Policy.load(path) if path else Policy()
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from exc
    t = Table("setting", "value", "meaning")
    for name, field in Policy.model_fields.items():
        t.add_row(name, str(getattr(loaded, name)), field.description or "")
    console.print(t)
    console.print(f"policy digest {loaded.digest}")
    console.print("answers: " + ", ".join(loaded.answered_metrics()))


def _audit_path(config: Path | None, log_file: Path | None) -> Path:
    if log_file is not None:
        return log_file
    if config is None:
        console.print("[red]error:[/red] give --config (the node's TOML) or --log")
        raise typer.Exit(2)
    try:
        return audit_log_path(load_node_config(config))
    except OversightError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from exc


def _summary(entry: dict[str, JsonValue]) -> str:
    kind = entry.get("kind")
    if kind == "received":
        signed = "signed" if entry.get("signed") else "UNSIGNED"
        return f"{signed}, key {entry.get('key_id')}, {entry.get('bytes')} bytes"
    if kind == "admitted":
        queries = entry.get("queries")
        return f"{entry.get('period')}: " + "; ".join(
            str(q) for q in (queries if isinstance(queries, list) else [])
        )
    if kind == "refused":
        return f"{entry.get('stage')}: {entry.get('code')} — {entry.get('reason')}"
    if kind == "released":
        tables = entry.get("tables")
        parts = []
        for t in tables if isinstance(tables, list) else []:
            if isinstance(t, dict):
                parts.append(
                    f"{t.get('metric')}@{t.get('version')} {t.get('released')}/{t.get('cells')}"
                    " released"
                )
        return f"result {str(entry.get('result_sha256'))[:16]}…; " + "; ".join(parts)
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
            str(e.get("seq")), str(e.get("time", ""))[:19], str(e.get("kind")),
            str(e.get("request_id") or ""), str(e.get("round_id") or ""), _summary(e),
        )
    console.print(t)


@audit_app.command("verify")
def audit_verify(config: ConfigOpt = None, log_file: LogOpt = None) -> None:
    """Check the hash chain: name the first edited, deleted, inserted or reordered entry."""
    path = _audit_path(config, log_file)
    outcome = verify_audit(path)
    if outcome.ok:
        console.print(
            f"[green]audit log intact[/green]: {outcome.entries} entries, chain and head agree"
            f" ({path})"
        )
        return
    console.print(f"[bold red]audit log BROKEN[/bold red] ({path}): {outcome.problem}")
    raise typer.Exit(1)


def main() -> None:
    app()
