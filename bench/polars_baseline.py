"""A Polars baseline (lazy API) for eight metrics of the node suite, written for speed.

    from polars_baseline import compute
    result = compute(Path("carrier/c001"), Period.parse("2026-01"))
    result.cells["cost.pmpm"][("2026-01",)]["allowed_cents"]

Written from the catalogue's definitions (``fedoversight/catalogue.py``: the definition texts
with the shared ``ATTRIBUTION``, ``FINAL_ACTION`` and ``STAYS`` wording, and each metric's
statistics), the column meanings of ``docs/data-dictionary.md`` and the calendar of
``fedoversight/periods.py``; it shares no code with the node's engine. The metrics, each by
month (the grouping ``bench/node_suite.py`` asks; no other grouping is offered):
``enrollment.member_months``, ``enrollment.churn``, ``cost.pmpm``, ``util.ed_visits``,
``util.inpatient``, ``outcome.readmission_30d``, ``rx.generic_dispensing_rate`` and
``ops.denial_rate``.

How it goes fast: whatever the eight metrics count is reduced to rows by member and month,
summed per member and month, and counted per month over the enrolled member months, all in one
plan (one ``collect`` on Polars' streaming engine, after a small one):

- eligibility: each span gives, for each month of the period it bears on, three flags (the
  member is enrolled the month before, that month, the month after), so member months, adds
  and terms need no join of spans with months. The one thing that needs the span in force
  (a death on the latest-starting span) is worked out only for the few members with a
  death_date in the period;
- medical rows dated in the period are read once into compact columns (member, month, cents of
  allowed, paid and charge, adjudicated and denied flags) for cost.pmpm and ops.denial_rate.
  Final action (each line's greatest claim_version) is looked up only where it can matter:
  the lines with a version above 1 are few, so their greatest version comes from those rows
  alone (a first, small ``collect``); the rows they supersede, found by a lookup of claim_id
  in that small set, are taken back from the denial counts, rather than every line being
  joined with its versions;
- ED visits and acute stays come from filtered reads of the same file (the codes; the bill
  type), their final action checked against the same few lines. Stays merge with a running
  maximum of line ends per member and facility (no window partitioned by them); a
  readmission is found with an as-of join on the member's next stay start;
- pharmacy rows give cost.pmpm's pharmacy part; fills are the claim_ids none of whose rows is
  denied or reversed, each counted once.

Cells exist as the engine's do: every month with member months for the metrics that carry
member months (enrollment, cost.pmpm, ED visits, inpatient); for the others, a month where
something is counted (index stays, fills, adjudicated lines).

Two readings where the definitions leave a choice, taken as the node's engine and the hand SQL
take them: rows of one line sharing its greatest version (a repeated key) all count; a fill
with several rows is its least member_id, its earliest fill_date, and generic when a row is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from fedoversight.periods import Month, Period

#: util.ed_visits: revenue_code 0450–0452, 0459 or 0981, HCPCS 99281–99285, or place of
#: service 23 (a range is over codes of its length, so these are all of them).
ED_REVENUE = ("0450", "0451", "0452", "0459", "0981")
ED_HCPCS = ("99281", "99282", "99283", "99284", "99285")
ED_PLACE = ("23",)
FINAL_ACTION = ("paid", "adjusted")
ADJUDICATED = ("paid", "adjusted", "denied")
VOIDING = ("denied", "reversed")
ACUTE_BILL_TYPE = "11"
READMISSION_DAYS = 30

#: A cell's statistics, by the dimension values of its key (here: the month).
Cells = dict[tuple[str, ...], dict[str, int]]


@dataclasses.dataclass
class Result:
    cells: dict[str, Cells]
    #: Seconds of each metric's own part: reading its cells off the per-month table.
    seconds: dict[str, float]
    #: Seconds of what the eight share: reading the files, the sums per member and month, the
    #: per-month table; of which ``lookup`` is finding the lines with a later version.
    shared: float
    lookup: float


def compute(directory: Path, period: Period) -> Result:
    """The eight metrics by month over the carrier's Parquet files in ``directory``."""
    started = time.perf_counter()
    later = _later_versions(directory)
    lookup = time.perf_counter() - started
    table = _plan(directory, period, later).collect(engine="streaming")
    by_month = {int(row["m"]): row for row in table.fill_null(0).sort("m").to_dicts()}
    shared = time.perf_counter() - started
    cells: dict[str, Cells] = {}
    seconds: dict[str, float] = {}
    for metric in METRICS:
        began = time.perf_counter()
        where = _CELL_WHERE.get(metric, "member_months")
        cells[metric] = {
            (str(_month(index)),): {
                name: int(row[column]) for name, column in _STATISTICS[metric].items()
            }
            for index, row in by_month.items()
            if row[where] > 0
        }
        seconds[metric] = time.perf_counter() - began
    return Result(cells, seconds, shared, lookup)


#: Each metric's statistics, as columns of the per-month table.
_STATISTICS: dict[str, dict[str, str]] = {
    "enrollment.member_months": {"member_months": "member_months", "members": "member_months"},
    "enrollment.churn": {
        "member_months": "member_months",
        "members": "member_months",
        "adds": "adds",
        "terms": "terms",
        "deaths": "deaths",
    },
    "cost.pmpm": {
        "member_months": "member_months",
        "members": "member_months",
        "claimants": "claimants",
        "allowed_cents": "allowed",
        "paid_cents": "paid",
    },
    "util.ed_visits": {
        "member_months": "member_months",
        "members": "member_months",
        "visit_members": "visit_members",
        "visits": "visits",
    },
    "util.inpatient": {
        "member_months": "member_months",
        "members": "member_months",
        "stay_members": "stay_members",
        "stays": "stays",
        "days": "days",
    },
    "outcome.readmission_30d": {
        "stay_members": "index_members",
        "index_stays": "index_stays",
        "readmissions": "readmissions",
    },
    "rx.generic_dispensing_rate": {
        "fill_members": "fill_members",
        "fills": "fills",
        "generic_fills": "generic_fills",
    },
    "ops.denial_rate": {
        "claimants": "adjudicated_members",
        "lines": "lines",
        "denied_lines": "denied",
        "charge_cents": "charge",
        "denied_charge_cents": "denied_charge",
    },
}

#: The metrics this baseline computes (node_suite.POLARS_METRICS names the same, without
#: importing polars).
METRICS = tuple(_STATISTICS)

#: A month is a cell of the metric where this column is above zero; by default member_months
#: (a cell for every month with member months, zero where nothing else is counted).
_CELL_WHERE = {
    "outcome.readmission_30d": "index_members",
    "rx.generic_dispensing_rate": "fill_members",
    "ops.denial_rate": "adjudicated_members",
}

#: Statistics summed per member and month, by where they come from: claim rows and fills;
#: ED visits and stays.
_CLAIM_SUMS = ("allowed", "paid", "rows", "lines", "denied", "charge", "denied_charge")
_FILL_SUMS = ("fills", "generic_fills")
_EVENT_SUMS = ("visits", "stays", "days", "index_stays", "readmissions")


# --- helpers ----------------------------------------------------------------------------------


def _index(month: Month) -> int:
    """A month as a number (months since year 0), so that adjacent months differ by one."""
    return month.year * 12 + month.month - 1


def _month(index: int) -> Month:
    return Month(index // 12, index % 12 + 1)


def _month_index(expr: pl.Expr) -> pl.Expr:
    return expr.dt.year().cast(pl.Int32) * 12 + expr.dt.month().cast(pl.Int32) - 1


def _day_number(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def _one_of(column: str, values: Iterable[str]) -> pl.Expr:
    """``column`` equal to one of a few codes (cheaper than ``is_in`` for a handful)."""
    return pl.any_horizontal([pl.col(column) == value for value in values])


def _cents(column: str, schema: pl.Schema) -> pl.Expr:
    """Integer cents of a money column: for a decimal of at most two places, its unscaled
    integer (exact); otherwise dollars × 100, rounded."""
    dtype = schema[column]
    if isinstance(dtype, pl.Decimal) and dtype.scale is not None and dtype.scale <= 2:
        factor: int = 10 ** (2 - dtype.scale)
        return pl.col(column).to_physical().cast(pl.Int64) * factor
    return (pl.col(column).cast(pl.Float64) * 100).round(0).cast(pl.Int64)


def _later_versions(directory: Path) -> pl.DataFrame:
    """The medical lines (claim_id, claim_line) with a version above 1, and the greatest
    version of each (``last``): all the final-action lookups need."""
    medical = pl.scan_parquet(directory / "medical_claims.parquet")
    if "claim_version" not in medical.collect_schema():  # optional: every row is version 1
        return pl.DataFrame(
            schema={"claim_id": pl.String, "claim_line": pl.Int64, "last": pl.Int64}
        )
    return (
        medical.select("claim_id", "claim_line", "claim_version")
        .filter(pl.col("claim_version") > 1)
        .group_by("claim_id", "claim_line")
        .agg(pl.col("claim_version").max().alias("last"))
        .collect(engine="streaming")
    )


# --- the plan ---------------------------------------------------------------------------------


def _plan(directory: Path, period: Period, later: pl.DataFrame) -> pl.LazyFrame:
    """One row per month of the period with the statistics of all eight metrics."""
    low, high = _index(period.first), _index(period.last)
    parts = _parts(directory, period, later)
    # A one-month period needs no month in the key: every row is of that month.
    keys = ["member_id"] if low == high else ["member_id", "m"]
    claims = (
        pl.concat(
            [parts["medical"], parts["superseded"], parts["pharmacy"], parts["fills"]],
            how="diagonal",
        )
        .group_by(keys)
        .agg(pl.col(*_CLAIM_SUMS, *_FILL_SUMS).sum())
    )
    per_member = (
        pl.concat(
            [parts["enrolment"], claims, parts["ed"], parts["admitted"], parts["discharged"]],
            how="diagonal",
        )
        .group_by(keys)
        .agg(
            pl.col("was", "now", "will").max(),
            pl.col(*_CLAIM_SUMS, *_FILL_SUMS, *_EVENT_SUMS).sum(),
        )
    )
    enrolled = per_member.filter(pl.col("now") == 1)
    if low == high:
        enrolled = enrolled.with_columns(m=pl.lit(low, pl.Int32))

    def members(column: str) -> pl.Expr:
        return (pl.col(column) > 0).sum()

    months = enrolled.group_by("m").agg(
        pl.len().alias("member_months"),
        (pl.col("was") == 0).sum().alias("adds"),
        (pl.col("will") == 0).sum().alias("terms"),
        members("rows").alias("claimants"),
        pl.col("allowed", "paid").sum(),
        members("visits").alias("visit_members"),
        pl.col("visits").sum(),
        members("stays").alias("stay_members"),
        pl.col("stays", "days").sum(),
        members("index_stays").alias("index_members"),
        pl.col("index_stays", "readmissions").sum(),
        members("fills").alias("fill_members"),
        pl.col("fills", "generic_fills").sum(),
        members("lines").alias("adjudicated_members"),
        pl.col("lines", "denied", "charge", "denied_charge").sum(),
    )
    return months.join(_deaths(directory, low, high), on="m", how="left")


def _parts(directory: Path, period: Period, later: pl.DataFrame) -> dict[str, pl.LazyFrame]:
    """Rows by member and month (``member_id``, ``m``) of what the eight metrics count."""
    low, high = _index(period.first), _index(period.last)
    start, end = period.start_date, period.end_date

    # --- eligibility: per member and month of the period, enrolled before / then / after.
    spans = (
        pl.scan_parquet(directory / "eligibility.parquet")
        .select("member_id", "enrollment_start_date", "enrollment_end_date")
        .filter(
            pl.col("enrollment_end_date").is_null()
            | (pl.col("enrollment_end_date") >= pl.col("enrollment_start_date"))
        )
        .select(
            "member_id",
            _month_index(pl.col("enrollment_start_date")).alias("first"),
            _month_index(pl.col("enrollment_end_date")).fill_null(high + 1).alias("last"),
        )
        .filter(pl.col("first") <= high + 1, pl.col("last") >= low - 1)
    )
    if low == high:
        spans = spans.with_columns(m=pl.lit(low, pl.Int32))
    else:  # each month of the period from the one before the span to the one after it
        spans = spans.with_columns(
            m=pl.int_ranges(
                pl.max_horizontal(pl.col("first") - 1, pl.lit(low)),
                pl.min_horizontal(pl.col("last") + 1, pl.lit(high)) + 1,
                dtype=pl.Int32,
            )
        ).explode("m")

    def covers(offset: int) -> pl.Expr:
        month = pl.col("m") + offset
        return ((pl.col("first") <= month) & (pl.col("last") >= month)).cast(pl.Int8)

    enrolment = spans.select("member_id", "m", was=covers(-1), now=covers(0), will=covers(1))

    # --- medical rows dated in the period: cost.pmpm (every row) and ops.denial_rate.
    medical = pl.scan_parquet(directory / "medical_claims.parquet")
    schema = medical.collect_schema()
    dated = pl.col("claim_start_date").is_between(start, end)
    month = _month_index(pl.col("claim_start_date")).alias("m")
    adjudicated, denied = _one_of("claim_status", ADJUDICATED), pl.col("claim_status") == "denied"
    charge = _cents("charge_amount", schema)
    rows = medical.filter(dated).select(
        "member_id",
        month,
        _cents("allowed_amount", schema).alias("allowed"),
        _cents("paid_amount", schema).alias("paid"),
        pl.lit(1, pl.Int32).alias("rows"),
        adjudicated.cast(pl.Int32).alias("lines"),
        denied.cast(pl.Int32).alias("denied"),
        pl.when(adjudicated).then(charge).otherwise(0).alias("charge"),
        pl.when(denied).then(charge).otherwise(0).alias("denied_charge"),
    )
    version = (
        pl.col("claim_version").fill_null(1) if "claim_version" in schema else pl.lit(1, pl.Int64)
    )
    final = pl.col("last").is_null() | (version >= pl.col("last"))
    lines_with_later = later.lazy()
    # Adjudicated rows that a later version of their line supersedes, taken back.
    superseded = (
        medical.filter(
            dated,
            adjudicated,
            pl.col("claim_id").is_in(later["claim_id"].unique().implode()),
        )
        .join(lines_with_later, on=["claim_id", "claim_line"], how="inner")
        .filter(~final)
        .select(
            "member_id",
            month,
            pl.lit(-1, pl.Int32).alias("lines"),
            (-denied.cast(pl.Int32)).alias("denied"),
            (-charge).alias("charge"),
            (-pl.when(denied).then(charge).otherwise(0)).alias("denied_charge"),
        )
    )

    def final_action(frame: pl.LazyFrame) -> pl.LazyFrame:
        """Rows of ``frame`` (paid or adjusted) that are their line's greatest version."""
        return frame.join(lines_with_later, on=["claim_id", "claim_line"], how="left").filter(final)

    line = ("claim_id", "claim_line", *(("claim_version",) if "claim_version" in schema else ()))

    # --- ED visits: final-action lines with an ED code, once per member and day.
    ed = (
        final_action(
            medical.filter(
                dated,
                _one_of("claim_status", FINAL_ACTION),
                _one_of("revenue_code", ED_REVENUE)
                | _one_of("hcpcs", ED_HCPCS)
                | _one_of("place_of_service", ED_PLACE),
            ).select(*line, "member_id", "claim_start_date")
        )
        .select("member_id", "claim_start_date")
        .unique()
        .select("member_id", month, pl.lit(1, pl.Int32).alias("visits"))
    )

    # --- acute stays: final-action lines of bill type 11x, as day numbers, merged per member
    # and facility (lines without a facility are one facility) while the next line starts at
    # most a day after the latest end so far.
    stay_lines = final_action(
        medical.filter(
            pl.col("claim_type") == "institutional",
            pl.col("bill_type").str.starts_with(ACUTE_BILL_TYPE),
            _one_of("claim_status", FINAL_ACTION),
        ).select(
            *line,
            "member_id",
            "facility_npi",
            pl.coalesce("admission_date", "claim_start_date").cast(pl.Int32).alias("from"),
            pl.coalesce("discharge_date", "claim_end_date").cast(pl.Int32).alias("to"),
        )
    ).sort("member_id", "facility_npi", "from", "to")
    # The running maximum restarts at each member and facility: it runs over the group's
    # number × 2^32 plus the day, which orders groups before days (days fit in 32 bits).
    member, facility = pl.col("member_id"), pl.col("facility_npi")
    new_group = (member != member.shift()).fill_null(True) | facility.ne_missing(facility.shift())
    group = new_group.cum_sum().cast(pl.Int64) * (1 << 32)
    reach = (group + pl.col("to")).cum_max().shift(1)  # of the lines before, in the group
    stays = (
        stay_lines.with_columns(stay=(new_group | (group + pl.col("from") - reach > 1)).cum_sum())
        .group_by("stay")
        .agg(pl.col("member_id").first(), pl.col("from").min(), pl.col("to").max())
        .drop("stay")
    )
    first_day, last_day = _day_number(start), _day_number(end)

    def month_of(day: str) -> pl.Expr:
        return _month_index(pl.col(day).cast(pl.Date)).alias("m")

    admitted = stays.filter(pl.col("from").is_between(first_day, last_day)).select(
        "member_id",
        month_of("from"),
        pl.lit(1, pl.Int32).alias("stays"),
        pl.max_horizontal(pl.col("to") - pl.col("from"), pl.lit(1)).alias("days"),
    )
    following = stays.select("member_id", pl.col("from").alias("next")).sort("next")
    discharged = (
        stays.filter(pl.col("to").is_between(first_day, last_day))
        .with_columns(probe=pl.col("to") + 1)
        .sort("probe")
        .join_asof(
            following,
            left_on="probe",
            right_on="next",
            by="member_id",
            strategy="forward",
            check_sortedness=False,  # both sorted just above
        )
        .select(
            "member_id",
            month_of("to"),
            pl.lit(1, pl.Int32).alias("index_stays"),
            (pl.col("next") - pl.col("to") <= READMISSION_DAYS)
            .fill_null(False)
            .cast(pl.Int32)
            .alias("readmissions"),
        )
    )

    # --- pharmacy: every row dated in the period for cost.pmpm; final-action fills, dated by
    # their earliest row.
    pharmacy = pl.scan_parquet(directory / "pharmacy_claims.parquet")
    rx_schema = pharmacy.collect_schema()
    filled = pl.col("fill_date").is_between(start, end)
    rx_rows = pharmacy.filter(filled).select(
        "member_id",
        _month_index(pl.col("fill_date")).alias("m"),
        _cents("allowed_amount", rx_schema).alias("allowed"),
        _cents("paid_amount", rx_schema).alias("paid"),
        pl.lit(1, pl.Int32).alias("rows"),
    )
    fills = (
        pharmacy.group_by("claim_id")
        .agg(
            _one_of("claim_status", VOIDING).any().alias("voided"),
            pl.col("member_id").min(),
            pl.col("fill_date").min(),
            pl.col("generic").any(),
        )
        .filter(~pl.col("voided"), filled)
        .select(
            "member_id",
            _month_index(pl.col("fill_date")).alias("m"),
            pl.lit(1, pl.Int32).alias("fills"),
            pl.col("generic").cast(pl.Int32).alias("generic_fills"),
        )
    )
    return {
        "enrolment": enrolment,
        "medical": rows,
        "superseded": superseded,
        "ed": ed,
        "admitted": admitted,
        "discharged": discharged,
        "pharmacy": rx_rows,
        "fills": fills,
    }


def _deaths(directory: Path, low: int, high: int) -> pl.LazyFrame:
    """Per month, the members whose span in force that month (the latest-starting; ties: the
    greatest plan_code, then the latest end, open first) has its death_date in the month. Only
    members with a death_date in the period can count, so only their spans are looked at."""
    eligibility = pl.scan_parquet(directory / "eligibility.parquet")
    if "death_date" not in eligibility.collect_schema():  # optional: nobody died
        return pl.LazyFrame(schema={"m": pl.Int32, "deaths": pl.UInt32})
    spans = eligibility.select(
        "member_id", "plan_code", "enrollment_start_date", "enrollment_end_date", "death_date"
    )
    death = _month_index(pl.col("death_date"))
    dying = spans.filter(death.is_between(low, high)).select("member_id").unique()
    in_force = (
        spans.join(dying, on="member_id", how="semi")
        .filter(
            pl.col("enrollment_end_date").is_null()
            | (pl.col("enrollment_end_date") >= pl.col("enrollment_start_date"))
        )
        .with_columns(
            first=_month_index(pl.col("enrollment_start_date")),
            last=_month_index(pl.col("enrollment_end_date")).fill_null(high),
            end_key=pl.col("enrollment_end_date").fill_null(dt.date.max),
        )
        .filter(pl.col("first") <= high, pl.col("last") >= low)
        .with_columns(
            m=pl.int_ranges(
                pl.max_horizontal("first", pl.lit(low)),
                pl.min_horizontal("last", pl.lit(high)) + 1,
                dtype=pl.Int32,
            )
        )
        .explode("m")
        .sort(
            ["member_id", "m", "enrollment_start_date", "plan_code", "end_key"],
            descending=[False, False, True, True, True],
        )
        .unique(subset=["member_id", "m"], keep="first", maintain_order=True)
    )
    return (
        in_force.filter(death == pl.col("m"))
        .group_by("m")
        .agg(pl.col("member_id").n_unique().alias("deaths"))
    )
