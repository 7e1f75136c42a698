"""Where the node's monthly suite spends its time, statement by statement, and its three
heaviest parts against the same work written in Polars, in the same run.

    python bench/heavy_blocks.py [--members 2000000] [--data-dir DIR] [--repeat 2]

The carrier is the one of ``bench/node_suite.py`` (same synthesis, same cache under
``--data-dir``). The suite's batch is rendered once and run statement by statement on one
session of the engine's file source, as :meth:`carrier_node.query.engine.Engine.evaluate_many`
runs it (each shared block created just before its first reader, dropped after its last); each
statement's wall and CPU seconds are printed, heaviest first.

Three parts are then set against the same work in Polars' lazy API (streaming engine, the
machine's cores), written as ``bench/polars_baseline.py`` is, for speed:

- ``spend``: the shared block of the period's claim rows summed per member and month (the
  medical lines' count, money and data-quality counts, the denial counts over each line's
  latest version, paid cents by months to payment, and the fills' money), the block nearly
  every cost, ops and denominator metric reads;
- ``service categories``: ``cost.pmpm_by_service_category``: each medical line classified by
  the catalogue's service-category rules, the fills as pharmacy, summed per member, month and
  category for the enrolled member months (the engine's query goes on to the cells and their
  disclosure columns; the Polars side stops at the per-member sums, and classifies each
  distinct combination of the codes once rather than each line);
- ``fills``: the shared block of the period's pharmacy claims grouped per claim (the fills the
  rx metrics count). The engine computes only the columns the suite's queries read of it; the
  Polars side computes all of them.

Each pair must agree (the benchmark fails otherwise): row counts and column totals of the two
blocks; allowed cents per category of the metric. Each side's time is its fastest of
``--repeat`` alternating rounds. The point is the floor: what the heaviest parts of the suite
cost when written directly in a fast dataframe library, next to what the engine spends on them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import node_suite  # noqa: E402  (the benchmark's data, queries and machine lines)

#: The statements compared, by a label.
SPEND, CATEGORIES, FILLS = "spend", "service categories", "fills"


@dataclass
class Statement:
    label: str
    sql: str
    #: A shared block's table name (None for a metric's query).
    table: str | None = None
    #: The shared tables to drop after it.
    drops: tuple[str, ...] = ()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _label_block(statement: str, first_reader: str) -> str:
    """A name for a shared block, from what it computes (its columns are the builders')."""
    reads_claims = "medical_claims" in statement and "pharmacy_claims" in statement
    if "paid_lag_00_cents" in statement and reads_claims:
        return SPEND
    if "voided_rows" in statement and "pharmacy_claims" in statement:
        return FILLS
    return f"block first read by {first_reader}"


def engine_statements(directory: Path) -> tuple[list[Statement], object]:
    """The suite's batch as the engine runs it, and the open file source."""
    from carrier_node.data.files import FileSource
    from carrier_node.query.engine import Engine

    source = FileSource(directory)
    source.open()
    engine = Engine(source, node_suite.CARRIER, record_secret="heavy-blocks-" + "0" * 20)
    queries = node_suite.suite_queries()
    rendered = engine.render_batch(node_suite.period_of(1), tuple(queries))
    statements: list[Statement] = []
    for index, (query, text) in enumerate(zip(queries, rendered.queries, strict=True)):
        for name, statement, first_use, _ in rendered.shared:
            if first_use == index:
                label = _label_block(statement, query.metric)
                statements.append(Statement(label, statement, table=name))
        label = CATEGORIES if query.metric == "cost.pmpm_by_service_category" else query.metric
        drops = tuple(name for name, _, _, last in rendered.shared if last == index)
        statements.append(Statement(label, text, drops=drops))
    found = [s.label for s in statements]
    for label in (SPEND, CATEGORIES, FILLS):
        if found.count(label) != 1:
            raise SystemExit(
                f"expected one statement computing {label}, found {found.count(label)}"
            )
    return statements, source


@dataclass
class EngineRound:
    #: (label, wall seconds, CPU seconds) of each statement, in order.
    timings: list[tuple[str, float, float]]
    #: What each compared statement computed, reduced to totals.
    checks: dict[str, dict[str, int]]


def run_engine(statements: list[Statement], source: object) -> EngineRound:
    timings: list[tuple[str, float, float]] = []
    checks: dict[str, dict[str, int]] = {}
    with source.session() as session:  # type: ignore[attr-defined]
        for s in statements:
            wall, cpu = time.perf_counter(), _cpu()
            if s.table is not None:
                session.create_table(s.table, s.sql)
                result = None
            else:
                result = session.execute_arrow(s.sql)
            timings.append((s.label, time.perf_counter() - wall, _cpu() - cpu))
            if s.label == SPEND:
                checks[SPEND] = _totals(session, s.table, SPEND_TOTALS)
            elif s.label == FILLS:
                checks[FILLS] = _totals(session, s.table, FILL_TOTALS)
            elif s.label == CATEGORIES and result is not None:
                rows = result.select(["service_category", "allowed_cents"]).to_pylist()
                checks[CATEGORIES] = {r["service_category"]: int(r["allowed_cents"]) for r in rows}
            for name in s.drops:
                session.drop_table(name)
    return EngineRound(timings, checks)


#: The spend block's totals compared, as (name, SQL over the block's columns).
SPEND_TOTALS = {
    "member months": "COUNT(*)",
    "medical rows": "SUM(medical_rows)",
    "pharmacy rows": "SUM(pharmacy_rows)",
    "allowed cents": "SUM(allowed_cents)",
    "paid cents": "SUM(paid_cents)",
    "deductible cents": "SUM(deductible_cents)",
    "out-of-network allowed cents": "SUM(out_of_network_allowed_cents)",
    "invalid codes": "SUM(invalid_place_of_service + invalid_revenue_code + invalid_drg)",
    "missing fields": "SUM(missing_fields)",
    "rows with a lag": "SUM(lag_rows)",
    "adjudicated lines": "SUM(adjudicated_lines)",
    "denied lines": "SUM(denied_lines)",
    "adjudicated charge cents": "SUM(adjudicated_charge_cents)",
    "denied charge cents": "SUM(denied_charge_cents)",
    "paid cents at lag 0": "SUM(paid_lag_00_cents)",
    "paid cents at lag 1": "SUM(paid_lag_01_cents)",
    "paid cents at lag 12+": "SUM(paid_lag_12_cents)",
}
FILL_TOTALS = {
    "claims": "COUNT(*)",
    "voided rows": "SUM(voided_rows)",
    "generic": "SUM(generic)",
}


def _totals(session: object, table: str | None, totals: dict[str, str]) -> dict[str, int]:
    assert table is not None
    select = ", ".join(f"CAST({expr} AS BIGINT)" for expr in totals.values())
    row = session.execute_arrow(f"SELECT {select} FROM {table}").to_pylist()[0]  # type: ignore[attr-defined]
    return {name: int(value or 0) for name, value in zip(totals, row.values(), strict=True)}


# --- the same work in Polars -----------------------------------------------------------------

START, END = dt.date(node_suite.YEAR, 1, 1), dt.date(node_suite.YEAR, 1, 31)
LAG_BUCKETS = 12


def _polars_spend(directory: Path) -> dict[str, int]:
    import polars as pl
    from polars_baseline import _cents, _later_versions

    from fedoversight.codelists import drg_types, place_of_service_codes, revenue_codes

    later = _later_versions(directory)
    medical = pl.scan_parquet(directory / "medical_claims.parquet")
    schema = medical.collect_schema()
    rows = medical.filter(pl.col("claim_start_date").is_between(START, END)).join(
        later.lazy(), on=["claim_id", "claim_line"], how="left"
    )
    start, paid_on = pl.col("claim_start_date"), pl.col("paid_date")
    lag = (
        (paid_on.dt.year().cast(pl.Int32) - start.dt.year().cast(pl.Int32)) * 12
        + paid_on.dt.month().cast(pl.Int32)
        - start.dt.month().cast(pl.Int32)
    ).clip(upper_bound=LAG_BUCKETS)
    status = pl.col("claim_status")
    latest = pl.col("last").is_null() | (pl.col("claim_version").fill_null(1) >= pl.col("last"))
    adjudicated = latest & status.is_in(["paid", "adjusted", "denied"])
    denied = adjudicated & (status == "denied")
    allowed, paid = _cents("allowed_amount", schema), _cents("paid_amount", schema)
    charge = _cents("charge_amount", schema)

    def blank_null(column: str) -> pl.Expr:
        return pl.when(pl.col(column) == "").then(None).otherwise(pl.col(column))

    pos, revenue, drg = (
        blank_null("place_of_service"),
        blank_null("revenue_code"),
        blank_null("drg"),
    )
    kind = pl.col("claim_type")
    columns = {
        "allowed": allowed,
        "paid": paid,
        "deductible": _cents("deductible_amount", schema).fill_null(0),
        "coinsurance": _cents("coinsurance_amount", schema).fill_null(0),
        "copay": _cents("copay_amount", schema).fill_null(0),
        "oon": pl.when(~pl.col("in_network")).then(allowed).otherwise(0),
        "known": pl.when(pl.col("in_network").is_not_null()).then(allowed).otherwise(0),
        "invalid_pos": pos.is_not_null() & ~pos.is_in(sorted(place_of_service_codes())),
        "invalid_revenue": revenue.is_not_null() & ~revenue.is_in(sorted(revenue_codes())),
        "invalid_drg": drg.is_not_null() & ~drg.is_in(sorted(drg_types())),
        "missing": ((kind == "professional") & pos.is_null())
        | ((kind == "institutional") & blank_null("bill_type").is_null()),
        "lag_rows": lag >= 0,
        "adjudicated": adjudicated,
        "denied": denied,
        "adjudicated_charge": pl.when(adjudicated).then(charge),
        "denied_charge": pl.when(denied).then(charge).otherwise(0),
        **{f"lag_{k}": pl.when(lag == k).then(paid).otherwise(0) for k in range(LAG_BUCKETS + 1)},
    }
    month = pl.col("claim_start_date").dt.truncate("1mo").alias("month_start")
    per_month = (
        rows.select("member_id", month, *(e.cast(pl.Int64).alias(n) for n, e in columns.items()))
        .group_by("member_id", "month_start")
        .agg(pl.len().alias("rows"), *(pl.col(n).sum() for n in columns))
    )
    pharmacy = pl.scan_parquet(directory / "pharmacy_claims.parquet")
    rx_schema = pharmacy.collect_schema()
    fills = (
        pharmacy.filter(pl.col("fill_date").is_between(START, END))
        .select(
            "member_id",
            pl.col("fill_date").dt.truncate("1mo").alias("month_start"),
            _cents("allowed_amount", rx_schema).alias("rx_allowed"),
            _cents("paid_amount", rx_schema).alias("rx_paid"),
            _cents("member_paid_amount", rx_schema).fill_null(0).alias("rx_member_paid"),
        )
        .group_by("member_id", "month_start")
        .agg(pl.len().alias("rx_rows"), pl.col("rx_allowed", "rx_paid", "rx_member_paid").sum())
    )
    spend = per_month.join(
        fills, on=["member_id", "month_start"], how="full", coalesce=True
    ).collect(engine="streaming")
    t = spend.fill_null(0).sum()

    def total(*names: str) -> int:
        return int(sum(t[n][0] for n in names))

    return {
        "member months": spend.height,
        "medical rows": total("rows"),
        "pharmacy rows": total("rx_rows"),
        "allowed cents": total("allowed", "rx_allowed"),
        "paid cents": total("paid", "rx_paid"),
        "deductible cents": total("deductible"),
        "out-of-network allowed cents": total("oon"),
        "invalid codes": total("invalid_pos", "invalid_revenue", "invalid_drg"),
        "missing fields": total("missing"),
        "rows with a lag": total("lag_rows"),
        "adjudicated lines": total("adjudicated"),
        "denied lines": total("denied"),
        "adjudicated charge cents": total("adjudicated_charge"),
        "denied charge cents": total("denied_charge"),
        "paid cents at lag 0": total("lag_0"),
        "paid cents at lag 1": total("lag_1"),
        "paid cents at lag 12+": total(f"lag_{LAG_BUCKETS}"),
    }


def _category_expression() -> object:
    """The catalogue's service-category rules as one Polars when/then chain (first match)."""
    import polars as pl

    from fedoversight.codelists import CodeCondition, ServiceCategoryRule, drg_types
    from fedoversight.codelists import service_category_rules as rules

    def code(column: str, condition: CodeCondition) -> pl.Expr:
        value = pl.col(column)
        parts = [value.is_in(list(condition.codes))] if condition.codes else []
        for low, high in condition.ranges:
            parts.append(
                (value.str.len_chars() == len(low)) & value.is_between(pl.lit(low), pl.lit(high))
            )
        return reduce(lambda a, b: a | b, parts)

    def condition(rule: ServiceCategoryRule) -> pl.Expr:
        parts = []
        if rule.claim_type:
            parts.append(pl.col("claim_type") == rule.claim_type)
        if rule.bill_type_prefix:
            starts = [pl.col("bill_type").str.starts_with(p) for p in rule.bill_type_prefix]
            parts.append(reduce(lambda a, b: a | b, starts))
        for column in ("revenue_code", "place_of_service", "hcpcs", "drg"):
            found = getattr(rule, column)
            if found is not None:
                parts.append(code(column, found))
        if rule.drg_type:
            codes = sorted(c for c, kind in drg_types().items() if kind == rule.drg_type)
            parts.append(pl.col("drg").is_in(codes))
        return reduce(lambda a, b: a & b, parts) if parts else pl.lit(True)

    first, *rest = rules()
    chain = pl.when(condition(first)).then(pl.lit(first.category.service_category_1))
    for rule in rest:
        chain = chain.when(condition(rule)).then(pl.lit(rule.category.service_category_1))
    return chain.otherwise(pl.lit("other"))


def _polars_categories(directory: Path) -> dict[str, int]:
    """Each medical line's category from the distinct combinations of the codes the rules
    read (about two thousand here: the rules' when/then chain over every line took 1.7x as
    long), joined back; the fills as pharmacy; summed per member, month and category over
    the members enrolled in the month."""
    import polars as pl
    from polars_baseline import _cents

    def blank_null(column: str) -> pl.Expr:
        return pl.when(pl.col(column) == "").then(None).otherwise(pl.col(column)).alias(column)

    medical = pl.scan_parquet(directory / "medical_claims.parquet")
    schema = medical.collect_schema()
    codes = ("place_of_service", "bill_type", "revenue_code", "hcpcs", "drg")
    keys = ["claim_type", *codes]
    lines = (
        medical.filter(pl.col("claim_start_date").is_between(START, END))
        .with_columns(*(blank_null(c) for c in codes))
        .select(
            "member_id",
            pl.col("claim_start_date").dt.truncate("1mo").alias("month_start"),
            *keys,
            _cents("allowed_amount", schema).alias("allowed"),
        )
        .collect(engine="streaming")
    )
    combinations = (
        lines.select(keys).unique().with_columns(_category_expression().alias("category"))  # type: ignore[attr-defined]
    )
    classified = (
        lines.lazy()
        .join(combinations.lazy(), on=keys, how="left", nulls_equal=True)
        .select("member_id", "month_start", "category", "allowed")
    )
    pharmacy = pl.scan_parquet(directory / "pharmacy_claims.parquet")
    fills = pharmacy.filter(pl.col("fill_date").is_between(START, END)).select(
        "member_id",
        pl.col("fill_date").dt.truncate("1mo").alias("month_start"),
        pl.lit("pharmacy").alias("category"),
        _cents("allowed_amount", pharmacy.collect_schema()).alias("allowed"),
    )
    eligibility = pl.scan_parquet(directory / "eligibility.parquet")
    enrolled = eligibility.filter(
        pl.col("member_id").is_not_null(),
        pl.col("enrollment_start_date") <= END,
        pl.col("enrollment_end_date").is_null() | (pl.col("enrollment_end_date") >= START),
    ).select(pl.col("member_id").unique())
    per_member = (
        pl.concat([classified, fills])
        .join(enrolled, on="member_id", how="semi")
        .group_by("member_id", "month_start", "category")
        .agg(pl.col("allowed").sum())
        .group_by("category")
        .agg(pl.col("allowed").sum())
        .collect(engine="streaming")
    )
    return {row["category"]: int(row["allowed"]) for row in per_member.to_dicts()}


def _polars_fills(directory: Path) -> dict[str, int]:
    import polars as pl
    from polars_baseline import _cents

    pharmacy = pl.scan_parquet(directory / "pharmacy_claims.parquet")
    schema = pharmacy.collect_schema()
    dated = pharmacy.filter(pl.col("fill_date").is_between(START, END)).select("claim_id")
    fills = (
        pharmacy.join(dated.unique(), on="claim_id", how="semi")
        .group_by("claim_id")
        .agg(
            pl.col("member_id").min(),
            pl.col("fill_date").min(),
            pl.col("drug_class").max(),
            pl.col("days_supply").max(),
            pl.col("generic").cast(pl.Int64).max(),
            pl.col("specialty").cast(pl.Int64).max(),
            _cents("allowed_amount", schema).sum().alias("net_allowed"),
            pl.col("claim_status").is_in(["denied", "reversed"]).sum().alias("voided"),
        )
        .collect(engine="streaming")
    )
    return {
        "claims": fills.height,
        "voided rows": int(fills["voided"].sum()),
        "generic": int(fills["generic"].sum()),
    }


POLARS: dict[str, Callable[[Path], dict[str, int]]] = {
    SPEND: _polars_spend,
    CATEGORIES: _polars_categories,
    FILLS: _polars_fills,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=2_000_000)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where synthesised carriers are cached (default: a temp dir)",
    )
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="heavy-blocks-") as tmp:
        return _run(args.data_dir or Path(tmp) / "data", args.members, args.repeat)


def _run(data_dir: Path, members: int, repeat: int) -> int:
    import polars as pl

    directory, synthesised = node_suite.carrier_data(data_dir, members, 1)
    print(f"machine: {node_suite.machine()}")
    print(f"libraries: {node_suite.libraries()}, polars {pl.__version__}")
    made = f"synthesised in {synthesised:.1f} s" if synthesised is not None else "cached"
    print(f"carrier: {members:,} members, period {node_suite.period_of(1)} ({made})")

    statements, source = engine_statements(directory)
    engine_rounds: list[EngineRound] = []
    polars_seconds: dict[str, list[float]] = {label: [] for label in POLARS}
    polars_checks: dict[str, dict[str, int]] = {}
    for _ in range(repeat):
        engine_rounds.append(run_engine(statements, source))
        for label, work in POLARS.items():
            started = time.perf_counter()
            polars_checks[label] = work(directory)
            polars_seconds[label].append(time.perf_counter() - started)
    source.close()  # type: ignore[attr-defined]

    # Each statement's fastest round (statements are in the same order every round).
    best = [
        min((r.timings[i] for r in engine_rounds), key=lambda t: t[1])
        for i in range(len(statements))
    ]
    total = sum(wall for _, wall, _ in best)
    print(f"\nthe suite's {len(statements)} statements, heaviest first (fastest of {repeat}):")
    print(f"{'statement':48s} {'wall s':>7s} {'CPU s':>7s} {'share':>6s}")
    for label, wall, cpu in sorted(best, key=lambda t: -t[1]):
        print(f"{label[:48]:48s} {wall:7.2f} {cpu:7.2f} {wall / total:6.1%}")
    print(f"{'total':48s} {total:7.2f}")

    failures = 0
    print(f"\n{'part':20s} {'engine s':>9s} {'Polars s':>9s} {'engine/Polars':>14s}  results")
    engine_part = polars_part = 0.0
    for label in POLARS:
        engine_s = min(wall for name, wall, _ in best if name == label)
        polars_s = min(polars_seconds[label])
        engine_part += engine_s
        polars_part += polars_s
        same = all(r.checks[label] == polars_checks[label] for r in engine_rounds)
        if not same:
            failures += 1
            print(f"  engine {engine_rounds[0].checks[label]}\n  Polars {polars_checks[label]}")
        verdict = "agree" if same else "DIFFER"
        ratio = engine_s / polars_s
        print(f"{label:20s} {engine_s:9.2f} {polars_s:9.2f} {ratio:13.2f}x  {verdict}")
    print(
        f"{'the three':20s} {engine_part:9.2f} {polars_part:9.2f}"
        f" {engine_part / polars_part:13.2f}x  ({engine_part / total:.0%} of the engine's suite)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
