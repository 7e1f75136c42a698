"""What disclosure control withholds: the share of cells and of dollars at the default policy.

Runs the monthly suite (every metric, whole period and by month) at each of the demo's
synthetic carriers (65 carriers, 20,000 members, 12 months, seed 7 by default) through the
node's engine and its disclosure pipeline (default policy, a fresh ledger per carrier, the
suite as one request as in the demo), and prints, per metric and overall: cells computed,
cells withheld (small cell, dominance, differencing, complementary; a cell whose dollar
totals alone are withheld counts under dominance or complementary), dollars withheld (the raw
dollar totals withheld, known only at the node, over all dollar totals), and the share
of program-wide cells left incomplete because some carrier withheld its cell.

    python bench/disclosure_share.py [--carriers 65] [--members 20000] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from carrier_node.datasource import FileSource
from carrier_node.engine import Engine
from carrier_node.policy import Policy
from carrier_node.protect import Protector
from carrier_node.sdc.ledger import Ledger
from fedoversight import catalogue
from fedoversight.catalogue import StatKind
from fedoversight.domain import RequestSpec
from fedoversight.periods import Period
from oversight_sim.suites import monthly_suite
from oversight_sim.synth import SynthConfig, write_carriers


def _request(period: Period, queries: list) -> RequestSpec:  # type: ignore[type-arg]
    now = dt.datetime.now(dt.UTC)
    return RequestSpec("bench.q", "bench", catalogue.CATALOGUE_VERSION, period,
                       tuple(queries), now, now + dt.timedelta(hours=1), os.urandom(16))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carriers", type=int, default=65)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the synthetic carriers are (written there when absent)")
    args = parser.parse_args(argv)
    console = Console(width=150)
    period = Period.parse(f"2026-01:2026-{args.months:02d}")
    queries = monthly_suite(totals=True)
    with tempfile.TemporaryDirectory(prefix="disclosure-share-") as tmp:
        root = args.data_dir or Path(tmp)
        if not any(root.glob("c*/eligibility.*")):
            write_carriers(root, SynthConfig(carriers=args.carriers, members=args.members,
                                             seed=args.seed, months=args.months))
        dirs = sorted(p for p in root.iterdir() if (p / "eligibility.parquet").exists()
                      or (p / "eligibility.csv").exists())
        started = time.perf_counter()
        cells: Counter[str] = Counter()
        withheld: dict[str, Counter[str]] = defaultdict(Counter)
        dollars: Counter[str] = Counter()
        dollars_withheld: Counter[str] = Counter()
        # program cell (query index, key) -> some carrier withheld it
        program: dict[tuple[int, tuple[tuple[str, str], ...]], bool] = {}
        for directory in dirs:
            source = FileSource(directory, threads=1)
            source.open()  # raises when a required table is unusable
            try:
                engine = Engine(source, directory.name)
                raws = engine.evaluate_many(period, queries)
            finally:
                source.close()
            protector = Protector(Policy(), ledger=Ledger(":memory:"))
            _, decisions = protector.protect(_request(period, queries), raws)
            for index, (raw, decision) in enumerate(zip(raws, decisions, strict=True)):
                spec = catalogue.get_metric(raw.query.metric, raw.query.version)
                money = [s.name for s in spec.statistics if s.kind is StatKind.CENTS]
                for i, cell in enumerate(raw.cells):
                    cells[spec.name] += 1
                    reason = decision.reasons.get(i)
                    partly = decision.withheld.get(i, {})
                    if reason is not None:
                        withheld[spec.name][reason] += 1
                    elif partly:  # dollar totals only: counted under their worst reason
                        withheld[spec.name][
                            "dominance" if "dominance" in partly.values() else "complementary"
                        ] += 1
                    for name in money:
                        value = abs(cell.value(name))
                        dollars[spec.name] += value
                        if reason is not None or name in partly:
                            dollars_withheld[spec.name] += value
                    key = tuple((str(d), v) for d, v in cell.key if str(d) != "carrier")
                    program[(index, key)] = program.get((index, key), False) or (
                        reason is not None)
        seconds = time.perf_counter() - started

    table = Table(title=f"withheld at the default policy — {len(dirs)} carriers, {period}")
    for column in ("metric", "cells", "withheld", "small", "dominance", "differencing",
                   "complementary", "dollars withheld"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    total_withheld: Counter[str] = Counter()
    for metric in sorted(cells):
        reasons = withheld[metric]
        total_withheld.update(reasons)
        n = sum(reasons.values())
        share = (f"{dollars_withheld[metric] / dollars[metric]:.2%}"
                 if dollars[metric] else "")
        table.add_row(metric, f"{cells[metric]:,}", f"{n / cells[metric]:.1%}",
                      *(str(reasons.get(r, 0)) for r in
                        ("small-cell", "dominance", "differencing", "complementary")),
                      share)
    all_cells = sum(cells.values())
    all_withheld = sum(total_withheld.values())
    table.add_row("all", f"{all_cells:,}", f"{all_withheld / all_cells:.1%}",
                  *(str(total_withheld.get(r, 0)) for r in
                    ("small-cell", "dominance", "differencing", "complementary")),
                  f"{sum(dollars_withheld.values()) / max(1, sum(dollars.values())):.2%}")
    console.print(table)
    incomplete = sum(1 for v in program.values() if v)
    console.print(
        f"carrier cells withheld: {all_withheld:,} of {all_cells:,}"
        f" ({all_withheld / all_cells:.1%}); dollars withheld:"
        f" {sum(dollars_withheld.values()) / max(1, sum(dollars.values())):.2%}"
        f" of ${sum(dollars.values()) / 100:,.0f}; program cells incomplete:"
        f" {incomplete:,} of {len(program):,} ({incomplete / max(1, len(program)):.1%});"
        f" {seconds:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
