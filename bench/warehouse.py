"""Warehouse suite: the catalogue pushed down to PostgreSQL against the DuckDB file path.

    python bench/warehouse.py [--members 200000] [--months 1] [--data-dir DIR]
                              [--statement-timeout 120] [--pg-set NAME=VALUE ...]

One carrier is synthesised (cached under ``--data-dir`` as by ``bench/node_suite.py``), loaded
with :func:`oversight_sim.pgload.load_directory` into a schema of its own in the database
``test`` on 127.0.0.1:5432 (dropped at the end), and every metric of the catalogue at its
representative grouping is evaluated through :class:`carrier_node.query.engine.Engine` over
:class:`carrier_node.data.warehouse.PostgresSource` and over
:class:`carrier_node.data.files.FileSource`. Wall times per metric and in all, their ratio and
whether both paths give identical cells (statistics and the member contributions of dollar
totals) are printed. The tables are as the loader makes them (no indexes; ANALYZE run) and the
server keeps its own settings; a metric whose query runs past ``--statement-timeout`` on the
warehouse is reported as timed out and left out of the totals. ``--pg-set`` applies session
settings to the node's warehouse connection first (a diagnosis aid, e.g.
``enable_nestloop=off``; the product sets none).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

import node_suite  # the sibling script: suite, data cache, cell comparison

from carrier_node.data.files import FileSource
from carrier_node.data.warehouse import PostgresSource, WarehouseConfig
from carrier_node.query.engine import Engine
from fedoversight.domain import QuerySpec
from fedoversight.errors import DataSourceError
from fedoversight.periods import Period
from oversight_sim.pgload import load_directory

HOST, PORT, DBNAME, USER = "127.0.0.1", 5432, "test", "postgres"


def connect() -> psycopg.Connection[object]:
    """A connection to the benchmark's server; raises :class:`psycopg.OperationalError` when
    it is unreachable."""
    return psycopg.connect(
        host=HOST, port=PORT, dbname=DBNAME, user=USER, connect_timeout=5, autocommit=True
    )


def _server_version(con: psycopg.Connection[object]) -> str:
    with con.cursor() as cur:
        cur.execute("SHOW server_version")
        row = cur.fetchone()
        cur.execute("SHOW work_mem")
        work_mem = cur.fetchone()
    return f"PostgreSQL {row[0] if row else '?'}, work_mem {work_mem[0] if work_mem else '?'}"


def batch(engines: dict[str, Engine], period: Period, queries: Sequence[QuerySpec]) -> bool:
    """The suite as one request on each path (blocks shared by the metrics computed once, as
    the node does); prints the times and whether the cells agree."""
    print()
    print("the suite as one request (as the node evaluates it):")
    cells: dict[str, list[node_suite.Cells]] = {}
    seconds: dict[str, float] = {}
    for name, engine in engines.items():
        engine.render_batch(period, tuple(queries))  # rendering is not what is compared
        started = time.perf_counter()
        try:
            raws = engine.evaluate_many(period, queries)
        except DataSourceError as exc:
            print(f"  {name}: failed ({exc})")
            return False
        seconds[name] = time.perf_counter() - started
        cells[name] = [node_suite.cells_of_raw(r) for r in raws]
        timing = engine.last_batch
        slowest = max(zip(timing.query_seconds, queries, strict=True), key=lambda x: x[0])
        print(
            f"  {name:9s} {seconds[name]:8.2f} s  ({timing.shared_blocks} shared blocks"
            f" {timing.shared_seconds:.2f} s; slowest query {slowest[1].metric}"
            f" {slowest[0]:.2f} s)",
            flush=True,
        )
    same = cells["postgres"] == cells["duckdb"]
    print(
        f"  postgres / duckdb {seconds['postgres'] / seconds['duckdb']:.2f}x;"
        f" cells {'identical for every metric' if same else 'DIFFER'}"
    )
    return same


def run(
    directory: Path,
    months: int,
    members: int,
    timeout: int,
    settings: Sequence[str] = (),
    batch_only: bool = False,
) -> int:
    period = node_suite.period_of(months)
    queries = node_suite.suite_queries()
    schema = f"bench_warehouse_{uuid.uuid4().hex[:8]}"
    con = connect()
    print(f"server: {_server_version(con)}")
    try:
        started = time.perf_counter()
        counts = load_directory(con, schema, directory)
        loaded = time.perf_counter() - started
        print(
            f"loaded {sum(counts.values()):,} rows into schema {schema} in {loaded:.1f} s"
            " (COPY + ANALYZE, not timed below)"
        )
        files = FileSource(directory)
        files.open()
        warehouse = PostgresSource(
            WarehouseConfig(
                dbname=DBNAME,
                host=HOST,
                port=PORT,
                user=USER,
                schema_name=schema,
                statement_timeout_seconds=timeout,
            )
        )
        warehouse.open()
        for setting in settings:
            name, _, value = setting.partition("=")
            with warehouse._connection().cursor() as cur:
                cur.execute(
                    sql.SQL("SET {} = {}").format(
                        sql.Identifier(name.strip()), sql.Literal(value.strip())
                    )
                )
            print(f"session setting: {name.strip()} = {value.strip()}")
        try:
            times: dict[str, dict[str, float]] = {"postgres": {}, "duckdb": {}}
            same: dict[str, bool] = {}
            failed: list[str] = []
            engines = {
                "postgres": Engine(warehouse, node_suite.CARRIER),
                "duckdb": Engine(files, node_suite.CARRIER),
            }
            batch_ok = batch(engines, period, queries)
            print()
            print("metric by metric (each query alone, nothing shared):")
            print(
                f"{'metric':34s} {'postgres s':>11s} {'duckdb s':>9s} {'pg/duckdb':>10s}"
                f" {'cells':>6s}"
            )
            for query in queries if not batch_only else ():
                cells = {}
                for name, engine in engines.items():
                    engine.render(period, query)  # rendering is not what is compared
                    started = time.perf_counter()
                    try:
                        cells[name] = node_suite.cells_of_raw(engine.evaluate(period, query))
                    except DataSourceError:
                        if name != "postgres":
                            raise
                        failed.append(query.metric)  # past the statement timeout
                    times[name][query.metric] = time.perf_counter() - started
                pg, dk = times["postgres"][query.metric], times["duckdb"][query.metric]
                if query.metric in failed:
                    print(
                        f"{query.metric:34s} {'> ' + str(timeout):>11s} {dk:9.2f}"
                        f" {'':>10s} {'TIMEOUT':>6s}",
                        flush=True,
                    )
                    continue
                same[query.metric] = cells["postgres"] == cells["duckdb"]
                print(
                    f"{query.metric:34s} {pg:11.2f} {dk:9.2f} {pg / dk:9.2f}x"
                    f" {'same' if same[query.metric] else 'DIFFER':>6s}",
                    flush=True,
                )
        finally:
            warehouse.close()
            files.close()
        if batch_only:
            return 0 if batch_ok else 1
        pg_total, dk_total = (
            sum(t for m, t in times[n].items() if m not in failed) for n in ("postgres", "duckdb")
        )
        label = "total" if not failed else f"total ({len(same)} metrics)"
        print(f"{label:34s} {pg_total:11.2f} {dk_total:9.2f} {pg_total / dk_total:9.2f}x")
        differ = [m for m, ok in same.items() if not ok]
        print()
        print(
            "cells postgres vs duckdb (statistics and member contributions): "
            + ("identical for all metrics answered" if not differ else f"DIFFER in {differ}")
        )
        if failed:
            print(f"timed out on PostgreSQL after {timeout} s: {', '.join(failed)}")
        print(
            f"members {members:,}, period {period}; linear to 5.7M members:"
            f" postgres {pg_total * node_suite.TARGET_MEMBERS / members:.0f} s,"
            f" duckdb {dk_total * node_suite.TARGET_MEMBERS / members:.0f} s"
        )
        return 0 if not differ and not failed and batch_ok else 1
    finally:
        with con.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        con.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--months", type=int, default=1)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where synthesised carriers are cached (default: a temp dir)",
    )
    parser.add_argument(
        "--statement-timeout",
        type=int,
        default=120,
        help="seconds a warehouse query may run before it counts as timed out",
    )
    parser.add_argument(
        "--pg-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a session setting for the warehouse connection (diagnosis)",
    )
    parser.add_argument(
        "--batch-only",
        action="store_true",
        help="only the suite as one request (skip the metric-by-metric runs)",
    )
    args = parser.parse_args(argv)
    try:
        connect().close()
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL unreachable at {HOST}:{PORT} ({type(exc).__name__})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="warehouse-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        print(f"machine: {node_suite.machine()}")
        directory, synthesis = node_suite.carrier_data(data_dir, args.members, args.months)
        if synthesis is not None:
            print(f"synthesised {args.members:,} members in {synthesis:.1f} s")
        code = run(
            directory,
            args.months,
            args.members,
            args.statement_timeout,
            args.pg_set,
            args.batch_only,
        )
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return code


if __name__ == "__main__":
    sys.exit(main())
