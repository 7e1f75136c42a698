"""What disclosure control withholds and how far what it releases is from the truth: the old
suppression rules and the new default (cell-key perturbation) on the same data in one run.

    python bench/disclosure_share.py [--carriers 65] [--members 20000] [--months 12]
                                     [--rounds suite,fine] [--data-dir DIR]
                                     [--baseline-commit COMMIT | --no-baseline]

Synthetic carriers (the demo's: 65 carriers, 20,000 members in all, 12 months, seed 7 by
default) answer two rounds at every carrier:

- ``suite``: the monthly suite (every metric, whole period and by month), as the demo asks;
- ``fine``: every metric over the 12 months by month × age band × sex (where it accepts them).

Each carrier's tables go through the node's engine once; the new default protects them with
:class:`carrier_node.disclosure.Discloser`. The old rules (primary suppression, p% dominance,
the differencing ledger, complementary suppression with its interval audit) are the project's
code at ``--baseline-commit`` (the last commit that had them), extracted from git into a
temporary directory and run in a process of its own over the same files, so both are measured
in the same run. Without the commit in the clone (a shallow clone) or without ``highspy``
(which it needs), only the new default is measured.

Printed per round and method:

- carrier cells with a withheld value, and how many of those rest on 1–10 members (some value
  of the cell rests on 1 to 10 members, or is a part whose rest does, or is a sensitive
  category's below its floor) — the rest are withheld beyond what the floor requires;
- program cells complete or missing at most 0.5% (each statistic: complete, or the true values
  the carriers withheld at most 0.5% of its true total);
- median relative error of released values against the truth, for counts and for dollar
  totals in carrier cells of over 1,000 member months, and for program totals over 100,000
  member months;
- the seconds protection took (all carriers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from carrier_node.cells import RawTable  # noqa: E402
from carrier_node.data.files import FileSource  # noqa: E402
from carrier_node.disclosure import Discloser, NodeSecret  # noqa: E402
from carrier_node.policy import Policy  # noqa: E402
from carrier_node.query.engine import Engine  # noqa: E402
from fedoversight import catalogue, wire  # noqa: E402
from fedoversight.catalogue import StatKind  # noqa: E402
from fedoversight.dimensions import Dimension  # noqa: E402
from fedoversight.domain import QuerySpec, QueryTable, RequestSpec  # noqa: E402
from fedoversight.periods import Period  # noqa: E402
from oversight_sim.suites import monthly_suite  # noqa: E402
from oversight_sim.synth import SynthConfig, write_carriers  # noqa: E402

#: The last commit with the old rules (protect.py, sdc/).
BASELINE_COMMIT = "e7ab543ac2581eda588d05c000605cff3ecf8d4d"
FLOOR = 11
LARGE_CELL = 1_000
LARGE_PROGRAM = 100_000
MISSING_SHARE = 0.005

Key = tuple[str, ...]


def fine_round() -> list[QuerySpec]:
    """Every metric by month × age band × sex where it accepts them (and its category)."""
    out = []
    for spec in catalogue.METRICS:
        dims = [
            d for d in (Dimension.MONTH, Dimension.AGE_BAND, Dimension.SEX) if d in spec.dimensions
        ]
        if spec.one_of:
            dims.append(min(spec.one_of))
        out.append(wire.make_query(spec.name, spec.version, dims))
    return out


ROUNDS = {"suite": lambda: monthly_suite(totals=True), "fine": fine_round}


def _request(period: Period, queries: Sequence[QuerySpec]) -> RequestSpec:
    now = dt.datetime.now(dt.UTC)
    return RequestSpec(
        "bench.q",
        "bench",
        catalogue.CATALOGUE_VERSION,
        period,
        tuple(queries),
        now,
        now + dt.timedelta(hours=1),
        os.urandom(16),
    )


# --- the old rules, from git ------------------------------------------------------------------

_OLD_DRIVER = r"""
import datetime as dt, os, pickle, sys, time
from pathlib import Path
from carrier_node.datasource import FileSource
from carrier_node.engine import Engine
from carrier_node.policy import Policy
from carrier_node.protect import Protector
from carrier_node.sdc.ledger import Ledger
from fedoversight import catalogue, wire
from fedoversight.dimensions import Dimension
from fedoversight.domain import RequestSpec
from fedoversight.periods import Period

dirs, period, specs, out = sys.argv[1].split(","), Period.parse(sys.argv[2]), \
    eval(sys.argv[3]), sys.argv[4]
queries = [wire.make_query(m, 1, [Dimension(d) for d in g]) for m, g in specs]
now = dt.datetime.now(dt.UTC)
request = RequestSpec("bench.q", "bench", catalogue.CATALOGUE_VERSION, period, tuple(queries),
                      now, now + dt.timedelta(hours=1), os.urandom(16))
result, seconds = {}, 0.0
for directory in dirs:
    source = FileSource(Path(directory), threads=2)
    source.open()
    raws = Engine(source, Path(directory).name).evaluate_many(period, queries)
    source.close()
    started = time.perf_counter()
    tables, _ = Protector(Policy(), ledger=Ledger(":memory:")).protect(request, raws)
    seconds += time.perf_counter() - started
    result[Path(directory).name] = [
        {tuple(v for _, v in c.key): {s.name: (None if s.status.suppressed else s.value)
                                      for s in c.stats} for c in t.cells}
        for t in tables
    ]
with open(out, "wb") as f:
    pickle.dump({"seconds": seconds, "tables": result}, f)
"""


def run_old(
    commit: str, dirs: Sequence[Path], period: Period, queries: Sequence[QuerySpec], timeout: float
) -> dict[str, Any] | str:
    """The old rules over the same carriers: per carrier, per query, key -> statistic ->
    released value (None withheld); or why they could not run."""
    with tempfile.TemporaryDirectory(prefix="old-rules-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        archive = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "archive",
                commit,
                "carrier_node",
                "fedoversight",
                "oversight_sim",
            ],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            return f"commit {commit[:12]} is not in this clone"
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        out = Path(tmp) / "old.pickle"
        specs = repr([(q.metric, [str(d) for d in q.group_by]) for q in queries])
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _OLD_DRIVER,
                    ",".join(str(d) for d in dirs),
                    str(period),
                    specs,
                    str(out),
                ],
                env={**os.environ, "PYTHONPATH": str(tree)},
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"did not finish within {timeout:.0f} s"
        if done.returncode != 0:
            return "failed: " + done.stderr.strip().splitlines()[-1]
        with out.open("rb") as f:
            loaded: dict[str, Any] = pickle.load(f)
        return loaded


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Measures:
    cells: int = 0
    withheld: int = 0
    withheld_small: int = 0
    values: int = 0
    values_withheld: int = 0
    program_cells: int = 0
    program_complete: int = 0
    #: Statistics that leave program cells incomplete (beyond 0.5%), by name.
    incomplete_by: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    seconds: float = 0.0


def _kind(metric: str, stat: str) -> StatKind:
    return catalogue.get_metric(metric).statistic(stat).kind


def _requires(raw_cell: Any, spec: Any, policy: Policy, categories: tuple[str, ...]) -> bool:
    """Whether the floor requires withholding some value of the cell (from the engine's
    supports): a value on 1–10 members, a part whose rest is, a sensitive category's."""
    key = {d.value: v for d, v in raw_cell.key}
    floor = policy.threshold_for(key, categories)
    if policy.is_sensitive(key, categories):
        return True
    for stat in spec.statistics:
        if stat.kind is StatKind.HISTOGRAM:
            if any(
                b is not None and 0 < b.members < floor for b in raw_cell.bin_supports(stat.name)
            ):
                return True
            continue
        if not stat.by_members:
            continue
        support = raw_cell.support(stat.name)
        if 0 < support.members < floor:
            return True
        if stat.part_of is not None:
            rest = (
                raw_cell.value(stat.part_of) - raw_cell.value(stat.name)
                if stat.kind is StatKind.MEMBERS
                else support.rest
            )
            if 0 < rest < floor:
                return True
    return False


def _cell_size(values: dict[str, object]) -> int:
    size = values.get("member_months")
    return size if isinstance(size, int) else 0


def measure(
    raws: dict[str, list[RawTable]],
    released: dict[str, list[dict[Key, dict[str, object]]]],
    seconds: float,
    policy: Policy,
) -> Measures:
    m = Measures(seconds=seconds)
    program_truth: dict[tuple[int, Key], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    program_got: dict[tuple[int, Key], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    program_missing: dict[tuple[int, Key], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for carrier, tables in raws.items():
        for index, raw in enumerate(tables):
            spec = catalogue.get_metric(raw.query.metric, raw.query.version)
            categories = dict(raw.query.filters).get(Dimension.SERVICE_CATEGORY_2, ())
            out = released[carrier][index]
            for cell in raw.cells:
                key = tuple(v for _, v in cell.key)
                got = out.get(key)
                if got is None:  # not listed: the old rules did not list empty categories
                    continue
                m.cells += 1
                truth = dict(cell.values)
                program_key = (index, tuple(v for d, v in cell.key if d is not Dimension.CARRIER))
                withheld = [n for n, v in got.items() if v is None]
                m.values += len(got)
                m.values_withheld += len(withheld)
                if withheld:
                    m.withheld += 1
                    m.withheld_small += _requires(cell, spec, policy, categories)
                large = _cell_size(truth) > LARGE_CELL
                for name, value in got.items():
                    kind = spec.statistic(name).kind
                    if kind is StatKind.HISTOGRAM:
                        continue
                    true = truth[name]
                    assert isinstance(true, int)
                    program_truth[program_key][name] += true
                    if value is None:
                        program_missing[program_key][name] += abs(true)
                        continue
                    assert isinstance(value, int)
                    program_got[program_key][name] += value
                    if large and true:
                        m.errors[_GROUPS[kind]].append(abs(value - true) / abs(true))
    for program_key, truths in program_truth.items():
        m.program_cells += 1
        complete = True
        for name, true in truths.items():
            missing = program_missing[program_key].get(name, 0)
            if missing and missing > MISSING_SHARE * max(1, abs(true)):
                complete = False
                m.incomplete_by[name] += 1
            got = program_got[program_key].get(name)
            if (
                got is not None
                and not missing
                and true
                and truths.get("member_months", 0) > LARGE_PROGRAM
            ):
                group = "program " + _GROUPS[_kind_any(name)]
                m.errors[group].append(abs(got - true) / abs(true))
        m.program_complete += complete
    return m


_GROUPS = {
    StatKind.MEMBERS: "counts",
    StatKind.COUNT: "counts",
    StatKind.AMOUNT: "quantities",
    StatKind.CENTS: "dollars",
}


def _kind_any(name: str) -> StatKind:
    for spec in catalogue.METRICS:
        for s in spec.statistics:
            if s.name == name:
                return s.kind
    return StatKind.COUNT


def _released_new(tables: Iterable[QueryTable]) -> list[dict[Key, dict[str, object]]]:
    return [
        {
            tuple(v for _, v in c.key): {
                s.name: (None if s.status.withheld else s.value) for s in c.stats
            }
            for c in t.cells
        }
        for t in tables
    ]


def report(name: str, method: str, m: Measures) -> None:
    def median(group: str) -> str:
        values = m.errors.get(group, [])
        return f"{statistics.median(values):.3%} of {len(values):,}" if values else "none"

    beyond = m.withheld - m.withheld_small
    print(f"  {method}:")
    print(
        f"    carrier cells with a value withheld: {m.withheld:,} of {m.cells:,}"
        f" ({m.withheld / max(1, m.cells):.1%}); resting on 1-10 members:"
        f" {m.withheld_small:,}; beyond what the floor requires: {beyond:,}"
        f" ({beyond / max(1, m.cells):.1%} of cells); values withheld:"
        f" {m.values_withheld / max(1, m.values):.1%}"
    )
    worst = sorted(m.incomplete_by.items(), key=lambda kv: -kv[1])[:6]
    print(
        f"    program cells complete or missing at most 0.5%: {m.program_complete:,} of"
        f" {m.program_cells:,} ({m.program_complete / max(1, m.program_cells):.1%});"
        " left out most: " + ", ".join(f"{n} {c}" for n, c in worst)
    )
    print(
        f"    median relative error, carrier cells over {LARGE_CELL:,} member months:"
        f" counts {median('counts')}, dollars {median('dollars')}, quantities"
        f" {median('quantities')}"
    )
    print(
        f"    median relative error, program totals over {LARGE_PROGRAM:,} member months:"
        f" counts {median('program counts')}, dollars {median('program dollars')},"
        f" quantities {median('program quantities')}"
    )
    print(f"    protection took {m.seconds:.2f} s for all carriers")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carriers", type=int, default=65)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--rounds", default="suite,fine")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the synthetic carriers are (written there when absent)",
    )
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    period = Period.parse(f"2026-01:2026-{args.months:02d}")
    policy = Policy()
    with tempfile.TemporaryDirectory(prefix="disclosure-share-") as tmp:
        root = args.data_dir or Path(tmp)
        if not any(root.glob("c*/eligibility.*")):
            write_carriers(
                root,
                SynthConfig(
                    carriers=args.carriers, members=args.members, seed=args.seed, months=args.months
                ),
            )
        dirs = sorted(p for p in root.iterdir() if (p / "eligibility.parquet").exists())
        print(f"{len(dirs)} carriers, {args.members:,} members in all, period {period}")
        for name in args.rounds.split(","):
            queries = ROUNDS[name]()
            raws: dict[str, list[RawTable]] = {}
            released: dict[str, list[dict[Key, dict[str, object]]]] = {}
            seconds = 0.0
            request = _request(period, queries)
            for directory in dirs:
                secret = NodeSecret.generate()
                source = FileSource(directory, threads=2)
                source.open()
                try:
                    engine = Engine(source, directory.name, record_secret=secret.record_secret)
                    raws[directory.name] = engine.evaluate_many(period, queries)
                finally:
                    source.close()
                started = time.perf_counter()
                tables, _ = Discloser(policy, secret).protect(request, raws[directory.name])
                seconds += time.perf_counter() - started
                released[directory.name] = _released_new(tables)
            print(f"round {name} ({len(queries)} queries at each carrier):")
            if not args.no_baseline:
                old = run_old(args.baseline_commit, dirs, period, queries, args.baseline_timeout)
                if isinstance(old, str):
                    print(f"  old rules: not measured ({old})")
                else:
                    report(
                        name,
                        "old rules (suppression, ledger, complementary)",
                        measure(raws, old["tables"], old["seconds"], policy),
                    )
            report(
                name,
                "new default (cell-key perturbation)",
                measure(raws, released, seconds, policy),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
