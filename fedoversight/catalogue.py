"""The metric catalogue v1: every metric declared once, read by both sides.

A declaration says what a metric means (its definition text is the contract that both the
node's implementation and the independent test oracle are written from), which dimensions and
parameters it accepts, the additive statistics each cell returns, and how the coordinator turns
combined statistics into published figures. How a node evaluates a metric is the node's own
code; the coordinator only adds statistics and applies the figure formulas declared here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fedoversight.dimensions import MEMBER_DIMENSIONS, Dimension
from fedoversight.errors import UnknownMetricError
from fedoversight.histogram import RELATIVE_ERROR_BOUND, Histogram
from fedoversight.metricspec import (
    FigureInputs,
    FigureSpec,
    MetricSpec,
    ParameterSpec,
    StatisticSpec,
    StatKind,
)

__all__ = [
    "CATALOGUE_VERSION",
    "METRICS",
    "FigureSpec",
    "MetricSpec",
    "ParameterSpec",
    "StatKind",
    "StatisticSpec",
    "extended",
    "get_metric",
    "latest_metrics",
    "metric_names",
    "metrics",
]

CATALOGUE_VERSION = "1"

D = Dimension

# --- shared wording: the conventions every definition relies on --------------------------------

ATTRIBUTION = (
    " A member month takes its plan and other attributes from the enrollment span in force"
    " that month (the latest-starting one when spans overlap a month); age is the age on the"
    " first day of the month. A claim counts in the member month of its date (medical:"
    " claim_start_date, pharmacy: fill_date) when that month is enrolled; claims outside"
    " enrollment are left out (a data-quality figure). Dollar totals sum all claim versions, so"
    " reversals net out."
)
FINAL_ACTION = (
    " Utilization counts final-action claims only: for a medical claim line (claim_id,"
    " claim_line) the row with the greatest claim_version (missing or below 1 counts as 1; rows"
    " tied on it, a repeated key, all count), kept when its claim_status is paid or adjusted; a"
    " pharmacy fill (claim_id) is kept when none of its rows is denied or reversed, and counts"
    " once, with the least member_id and fill_date of its rows, the greatest drug_class and"
    " days_supply, generic when any row is."
)
STAYS = (
    " An acute stay is built from final-action institutional lines whose bill_type begins"
    " '11': a line spans admission_date (else claim_start_date) to discharge_date (else"
    " claim_end_date); a member's lines at one facility_npi whose spans overlap or are adjacent"
    " (next start ≤ previous end + 1 day) merge into one stay from the earliest start to the"
    " latest end. Its length in days is end − start, at least 1."
)
END_AGE = (
    " Age for eligibility is whole years on the period's last day; attributes come from the"
    " member month of the period's last month, and the member must be enrolled then."
)

# --- figure helpers ---------------------------------------------------------------------------


def _num(inputs: FigureInputs, name: str) -> float:
    value = inputs[name]
    assert isinstance(value, int | float)
    return float(value)


def _ratio(num: str, den: str, scale: float = 1.0) -> Callable[[FigureInputs], float]:
    def formula(inputs: FigureInputs) -> float:
        d = _num(inputs, den)
        return _num(inputs, num) * scale / d if d else math.nan

    return formula


def ratio(name: str, description: str, num: str, den: str, scale: float = 1.0) -> FigureSpec:
    return FigureSpec(name, description, (num, den), _ratio(num, den, scale))


def per_1000(events: str, name: str | None = None) -> FigureSpec:
    """Events per 1,000 members per year: events ÷ member months × 12,000."""
    return ratio(
        name or f"{events}_per_1000",
        f"{events} per 1,000 members per year",
        events,
        "member_months",
        12_000.0,
    )


def pmpm(cents: str, name: str | None = None) -> FigureSpec:
    label = cents.removesuffix("_cents")
    return ratio(
        name or f"{label}_pmpm",
        f"{label} dollars per member per month",
        cents,
        "member_months",
        0.01,
    )


def _average_members(inputs: FigureInputs) -> float:
    months = _num(inputs, "months_in_cell")
    return _num(inputs, "member_months") / months if months else math.nan


def _hist(inputs: FigureInputs, name: str) -> Histogram:
    value = inputs[name]
    assert isinstance(value, Histogram)
    return value


def percentile_figure(stat: str, q: int) -> FigureSpec:
    return FigureSpec(
        f"p{q}",
        f"{q}th percentile of per-member dollars (within half a bin: ±{RELATIVE_ERROR_BOUND:.1%})",
        (stat,),
        lambda inputs: _hist(inputs, stat).percentile_dollars(q / 100),
    )


def top_share_figure(stat: str, pct: int) -> FigureSpec:
    return FigureSpec(
        f"top{pct}_share",
        f"share of dollars of the top {pct}% of members (from bin means)",
        (stat,),
        lambda inputs: _hist(inputs, stat).top_share(pct / 100),
    )


# --- statistics used by several metrics -------------------------------------------------------

#: Differential privacy's per-member bounds (see StatisticSpec.bound): dollars of one member
#: month, and of one member's period for the metrics whose cells are people.
MONTH_CENTS_BOUND = 5_000_000
PERIOD_CENTS_BOUND = 100_000_000

MEMBER_MONTHS = StatisticSpec(
    "member_months",
    StatKind.COUNT,
    "member months: members enrolled at least one day of a month",
    rests_on="members",
    bound=1,
)
MEMBERS = StatisticSpec("members", StatKind.MEMBERS, "distinct members enrolled in the cell")
CLAIMANTS = StatisticSpec(
    "claimants", StatKind.MEMBERS, "distinct members with a claim row counted in the cell"
)
#: Claimants where the cell's enrolled members are a statistic too (the rest: members without
#: a claim, an excluded count).
ENROLLED_CLAIMANTS = StatisticSpec(
    "claimants",
    StatKind.MEMBERS,
    "distinct members with a claim row counted in the cell",
    part_of="members",
)


def cents(
    name: str,
    description: str,
    rests_on: str = "claimants",
    *,
    part_of: str | None = None,
    bound: int = MONTH_CENTS_BOUND,
) -> StatisticSpec:
    return StatisticSpec(
        name, StatKind.CENTS, description, rests_on=rests_on, part_of=part_of, bound=bound
    )


def count(
    name: str, description: str, rests_on: str, *, bound: int, part_of: str | None = None
) -> StatisticSpec:
    return StatisticSpec(
        name, StatKind.COUNT, description, rests_on=rests_on, part_of=part_of, bound=bound
    )


def amount(name: str, description: str, rests_on: str, *, bound: int) -> StatisticSpec:
    return StatisticSpec(name, StatKind.AMOUNT, description, rests_on=rests_on, bound=bound)


def members(name: str, description: str, part_of: str | None = None) -> StatisticSpec:
    return StatisticSpec(name, StatKind.MEMBERS, description, part_of=part_of)


MEMBER_DIMS = MEMBER_DIMENSIONS
#: Member attributes without calendar dimensions (annual, per-member and measure metrics).
PERSON_DIMS = MEMBER_DIMS - {D.MONTH, D.QUARTER}
CATEGORY_DIMS = frozenset({D.SERVICE_CATEGORY, D.SERVICE_CATEGORY_2})

HCC_THRESHOLDS = (50_000, 100_000, 250_000, 1_000_000)
LAG_MONTHS = 12


def hcc_label(threshold: int) -> str:
    """The label of a high-cost threshold in statistic names (``50k``, ``1m``)."""
    return f"{threshold // 1000}k" if threshold < 1_000_000 else f"{threshold // 1_000_000}m"


def _hcc_statistics() -> tuple[StatisticSpec, ...]:
    out: list[StatisticSpec] = []
    below = "members"
    for t in HCC_THRESHOLDS:
        label = hcc_label(t)
        out.append(members(f"hcc_{label}", f"members with period allowed ≥ ${t:,}", part_of=below))
        out.append(
            cents(
                f"hcc_{label}_allowed_cents",
                f"allowed of members ≥ ${t:,}",
                rests_on=f"hcc_{label}",
                bound=PERIOD_CENTS_BOUND,
            )
        )
        below = f"hcc_{label}"
    return tuple(out)


def _hcc_figures() -> tuple[FigureSpec, ...]:
    out: list[FigureSpec] = []
    for t in HCC_THRESHOLDS:
        label = hcc_label(t)
        out.append(
            ratio(
                f"hcc_{label}_per_1000",
                f"members ≥ ${t:,} per 1,000 members",
                f"hcc_{label}",
                "members",
                1000.0,
            )
        )
        out.append(
            ratio(
                f"hcc_{label}_share",
                f"share of allowed of members ≥ ${t:,}",
                f"hcc_{label}_allowed_cents",
                "allowed_cents",
            )
        )
    return tuple(out)


def _lag_statistics() -> tuple[StatisticSpec, ...]:
    return tuple(
        cents(
            f"paid_lag_{k:02d}_cents",
            f"paid dollars paid {k}{'+' if k == LAG_MONTHS else ''} months after the"
            " incurred month",
        )
        for k in range(LAG_MONTHS + 1)
    )


def _completion(k: int) -> FigureSpec:
    names = tuple(f"paid_lag_{j:02d}_cents" for j in range(LAG_MONTHS + 1))

    def formula(inputs: FigureInputs) -> float:
        total = sum(_num(inputs, n) for n in names)
        return sum(_num(inputs, n) for n in names[: k + 1]) / total if total else math.nan

    return FigureSpec(
        f"completion_{k:02d}", f"share of paid dollars paid within {k} months", names, formula
    )


# --- data quality -----------------------------------------------------------------------------

DATA_QUALITY = (
    "Over rows dated in the period (medical by claim_start_date, pharmacy by fill_date):"
    " rows outside the member's enrollment; medical lines with a place_of_service,"
    " revenue_code or drg not in the shipped code lists; professional lines without a"
    " place_of_service and institutional lines without a bill_type. Rows the node's"
    " validation excluded are reported by `carrier-node check`, not here."
)
CONTROL_TOTALS = (
    " Control totals: in each month for which the carrier declares the totals of its financial"
    " reporting for a claims table (medical, pharmacy), the claims and paid dollars its data"
    " holds beside the declared ones. Claims are distinct claim_ids of one member with a row"
    " dated in the month; paid dollars sum paid_amount over those rows (all statuses and"
    " versions), inside enrollment or not. Months without declared totals count zero on"
    " both sides; a declared month without any row is a cell of its own."
)
DATA_QUALITY_DIMS = frozenset({D.CARRIER, D.MONTH, D.QUARTER, D.YEAR})
#: Claims tables with control totals: statistic prefix, most rows of one member in a month.
CONTROLLED = (("medical", 300), ("pharmacy", 60))

DATA_QUALITY_STATISTICS: tuple[StatisticSpec, ...] = (
    CLAIMANTS,
    count("medical_rows", "medical rows", "claimants", bound=300),
    count("pharmacy_rows", "pharmacy rows", "claimants", bound=60),
    count(
        "medical_outside_enrollment",
        "medical rows outside enrollment",
        "claimants",
        bound=300,
        part_of="medical_rows",
    ),
    count(
        "pharmacy_outside_enrollment",
        "pharmacy rows outside enrollment",
        "claimants",
        bound=60,
        part_of="pharmacy_rows",
    ),
    count(
        "invalid_place_of_service",
        "unknown place_of_service",
        "claimants",
        bound=300,
        part_of="medical_rows",
    ),
    count(
        "invalid_revenue_code",
        "unknown revenue_code",
        "claimants",
        bound=300,
        part_of="medical_rows",
    ),
    count("invalid_drg", "unknown drg", "claimants", bound=300, part_of="medical_rows"),
    count(
        "missing_fields",
        "lines missing place_of_service or bill_type",
        "claimants",
        bound=300,
        part_of="medical_rows",
    ),
)
DATA_QUALITY_FIGURES: tuple[FigureSpec, ...] = (
    ratio(
        "outside_enrollment_share",
        "medical rows outside enrollment ÷ medical rows",
        "medical_outside_enrollment",
        "medical_rows",
    ),
)


def _difference(
    minuend: str, subtrahend: str, scale: float = 1.0
) -> Callable[[FigureInputs], float]:
    def formula(inputs: FigureInputs) -> float:
        return (_num(inputs, minuend) - _num(inputs, subtrahend)) * scale

    return formula


def _control_statistics() -> tuple[StatisticSpec, ...]:
    out: list[StatisticSpec] = []
    for table, rows in CONTROLLED:
        claims, paid = f"{table}_claims_in_data", f"{table}_paid_in_data_cents"
        out += [
            count(
                claims,
                f"{table} claims in the data, in months with control totals",
                "claimants",
                bound=rows,
            ),
            StatisticSpec(
                f"{table}_claims_declared",
                StatKind.COUNT,
                f"{table} claims the carrier declares for those months",
                rests_on="claimants",
                bound=rows,
                mirrors=claims,
            ),
            cents(paid, f"{table} paid in the data, in months with control totals"),
            StatisticSpec(
                f"{table}_paid_declared_cents",
                StatKind.CENTS,
                f"{table} paid the carrier declares for those months",
                rests_on="claimants",
                bound=MONTH_CENTS_BOUND,
                mirrors=paid,
            ),
        ]
    return tuple(out)


def _control_figures() -> tuple[FigureSpec, ...]:
    out: list[FigureSpec] = []
    for table, _ in CONTROLLED:
        claims = (f"{table}_claims_in_data", f"{table}_claims_declared")
        paid = (f"{table}_paid_in_data_cents", f"{table}_paid_declared_cents")
        out += [
            ratio(f"{table}_claims_held", f"{table} claims in the data ÷ declared", *claims),
            ratio(f"{table}_paid_held", f"{table} paid in the data ÷ declared", *paid),
            FigureSpec(
                f"{table}_claims_missing",
                f"{table} claims declared less those in the data",
                claims,
                _difference(claims[1], claims[0]),
            ),
            FigureSpec(
                f"{table}_paid_missing",
                f"{table} paid dollars declared less those in the data",
                paid,
                _difference(paid[1], paid[0], 0.01),
            ),
        ]
    return tuple(out)


# --- the catalogue ----------------------------------------------------------------------------

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        name="enrollment.member_months",
        version=1,
        title="Member months",
        definition=(
            "Member months: each member counts once in every calendar month of the period in"
            " which they were enrolled at least one day. Average members = member months ÷"
            " months in the cell." + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(MEMBER_MONTHS, MEMBERS),
        figures=(
            FigureSpec(
                "average_members",
                "member months ÷ calendar months in the cell",
                ("member_months",),
                _average_members,
            ),
        ),
    ),
    MetricSpec(
        name="enrollment.churn",
        version=1,
        title="Adds, terms and deaths",
        definition=(
            "Per member month: an add when the member was not enrolled the month before; a term"
            " when the member is not enrolled the month after; a death when death_date falls in"
            " the month (on the latest-starting span). Counts are distinct members; rates are"
            " per 1,000 members per year (÷ member months × 12,000). Months outside the period"
            " are looked at to decide adds and terms." + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            MEMBER_MONTHS,
            MEMBERS,
            members("adds", "members added in the month", part_of="members"),
            members("terms", "members whose enrollment ends in the month", part_of="members"),
            members("deaths", "members who died in the month", part_of="members"),
        ),
        figures=(per_1000("adds"), per_1000("terms"), per_1000("deaths")),
    ),
    MetricSpec(
        name="cost.pmpm",
        version=1,
        title="Cost per member per month",
        definition=(
            "Σ allowed and Σ paid over medical and pharmacy claims ÷ member months." + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            MEMBER_MONTHS,
            MEMBERS,
            ENROLLED_CLAIMANTS,
            cents("allowed_cents", "allowed amount, all claim versions"),
            cents("paid_cents", "paid amount, all claim versions"),
        ),
        figures=(pmpm("allowed_cents"), pmpm("paid_cents")),
    ),
    MetricSpec(
        name="cost.pmpm_by_service_category",
        version=1,
        title="Cost per member per month by service category",
        definition=(
            "Σ allowed and Σ paid by service category (level 1 `service_category` or level 2"
            " `service_category_2`) ÷ member months. Each claim line is in exactly one category,"
            " chosen by the priority order of the shipped service-category code list; pharmacy"
            " claims are `pharmacy`. Every category of the level (the code list's, `other` and"
            " `pharmacy`) is a cell of every other key with member months, zero where no claim"
            " falls in it, and divides those member months, so categories add up to the"
            " total." + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS | CATEGORY_DIMS,
        statistics=(
            MEMBER_MONTHS,
            MEMBERS,
            ENROLLED_CLAIMANTS,
            cents("allowed_cents", "allowed amount, all claim versions"),
            cents("paid_cents", "paid amount, all claim versions"),
        ),
        figures=(pmpm("allowed_cents"), pmpm("paid_cents")),
        one_of=CATEGORY_DIMS,
    ),
    MetricSpec(
        name="cost.member_cost_share_pmpm",
        version=1,
        title="Member cost share per member per month",
        definition=(
            "Σ (deductible + coinsurance + copay) over medical lines plus Σ member_paid_amount"
            " over pharmacy rows ÷ member months (missing amounts count as zero)." + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            MEMBER_MONTHS,
            MEMBERS,
            ENROLLED_CLAIMANTS,
            cents("cost_share_cents", "all member cost share", bound=MONTH_CENTS_BOUND // 5),
            cents("deductible_cents", "medical deductible", bound=MONTH_CENTS_BOUND // 5),
            cents("coinsurance_cents", "medical coinsurance", bound=MONTH_CENTS_BOUND // 5),
            cents("copay_cents", "medical copay", bound=MONTH_CENTS_BOUND // 5),
            cents(
                "pharmacy_member_paid_cents", "pharmacy member paid", bound=MONTH_CENTS_BOUND // 5
            ),
        ),
        figures=(pmpm("cost_share_cents"),),
    ),
    MetricSpec(
        name="cost.distribution",
        version=1,
        title="Distribution of per-member allowed",
        definition=(
            "Each member enrolled in the period (attributes from their latest enrolled month of"
            " the period; age on its first day) has a period allowed total (medical + pharmacy"
            " rows counted as for cost.pmpm, zero when none). The totals go into the fixed"
            " log-spaced histogram (a bin for ≤ $0, 10 bins per decade from $1 to $10M, one"
            " for ≥ $10M; count and cents per bin), from which the coordinator reads"
            " p50/p75/p90/p95/p99 (to within half a bin, about ±"
            f"{RELATIVE_ERROR_BOUND:.0%}) and the share of spend of the top 1% and 5%."
        ),
        dimensions=PERSON_DIMS,
        statistics=(
            MEMBERS,
            cents(
                "allowed_cents",
                "allowed of the members",
                rests_on="members",
                bound=PERIOD_CENTS_BOUND,
            ),
            StatisticSpec(
                "allowed_histogram",
                StatKind.HISTOGRAM,
                "members and cents by bin of per-member period allowed",
                rests_on="members",
            ),
        ),
        figures=(
            *(percentile_figure("allowed_histogram", q) for q in (50, 75, 90, 95, 99)),
            top_share_figure("allowed_histogram", 1),
            top_share_figure("allowed_histogram", 5),
        ),
    ),
    MetricSpec(
        name="cost.high_cost_claimants",
        version=1,
        title="High-cost claimants",
        definition=(
            "Members enrolled in the period (attributed as for cost.distribution) whose period"
            " allowed total is at least $50k, $100k, $250k and $1M: counts per 1,000 members"
            " and their share of allowed."
        ),
        dimensions=PERSON_DIMS,
        statistics=(
            MEMBERS,
            cents(
                "allowed_cents",
                "allowed of all members",
                rests_on="members",
                bound=PERIOD_CENTS_BOUND,
            ),
            *_hcc_statistics(),
        ),
        figures=_hcc_figures(),
    ),
    MetricSpec(
        name="cost.out_of_network_share",
        version=1,
        title="Out-of-network share of allowed",
        definition=(
            "Σ allowed of medical lines with in_network false ÷ Σ allowed of medical lines with"
            " a known in_network flag (all claim versions)." + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            CLAIMANTS,
            cents(
                "out_of_network_allowed_cents",
                "allowed out of network",
                part_of="known_network_allowed_cents",
            ),
            cents("known_network_allowed_cents", "allowed with a known network flag"),
        ),
        figures=(
            ratio(
                "out_of_network_share",
                "out-of-network share of allowed",
                "out_of_network_allowed_cents",
                "known_network_allowed_cents",
            ),
        ),
    ),
    MetricSpec(
        name="util.inpatient",
        version=1,
        title="Acute inpatient stays",
        definition=(
            "Acute stays and their days per 1,000 members per year and average length of stay;"
            " a stay counts in the member month of its start." + STAYS + FINAL_ACTION + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            MEMBER_MONTHS,
            MEMBERS,
            members("stay_members", "distinct members with a stay", part_of="members"),
            count("stays", "acute stays", "stay_members", bound=2),
            amount("days", "days of the stays", "stay_members", bound=31),
        ),
        figures=(
            per_1000("stays"),
            per_1000("days"),
            ratio("average_length_of_stay", "days ÷ stays", "days", "stays"),
        ),
    ),
    MetricSpec(
        name="util.ed_visits",
        version=1,
        title="Emergency department visits",
        definition=(
            "ED visits per 1,000 members per year: final-action medical lines with revenue_code"
            " 0450–0452, 0459 or 0981, HCPCS 99281–99285, or place_of_service 23, counted once"
            " per member and claim_start_date." + FINAL_ACTION + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            MEMBER_MONTHS,
            MEMBERS,
            members("visit_members", "distinct members with a visit", part_of="members"),
            count("visits", "ED visits (member-days)", "visit_members", bound=31),
        ),
        figures=(per_1000("visits"),),
    ),
    MetricSpec(
        name="util.office_visits",
        version=1,
        title="Office and telehealth E/M visits",
        definition=(
            "Office E/M visits (final-action lines, place_of_service 11, HCPCS 99202–99215) and"
            " telehealth E/M visits (place_of_service 02 or 10, HCPCS 99202–99215), each counted"
            " once per member and claim_start_date, per 1,000 members per year."
            + FINAL_ACTION
            + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            MEMBER_MONTHS,
            MEMBERS,
            members(
                "visit_members",
                "distinct members with an office or telehealth visit",
                part_of="members",
            ),
            count("office_visits", "office visits (member-days)", "visit_members", bound=31),
            count(
                "telehealth_visits", "telehealth visits (member-days)", "visit_members", bound=31
            ),
        ),
        figures=(per_1000("office_visits"), per_1000("telehealth_visits")),
    ),
    MetricSpec(
        name="util.scripts",
        version=1,
        title="Prescriptions",
        definition=(
            "Final-action pharmacy fills per 1,000 members per year and 30-day equivalents"
            " (Σ days_supply ÷ 30) per 1,000." + FINAL_ACTION + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            MEMBER_MONTHS,
            MEMBERS,
            members("fill_members", "distinct members with a fill", part_of="members"),
            count("fills", "final-action fills", "fill_members", bound=31),
            amount("days_supply", "Σ days supply of the fills", "fill_members", bound=1_000),
        ),
        figures=(
            per_1000("fills"),
            ratio(
                "thirty_day_equivalents_per_1000",
                "30-day equivalents per 1,000 per year",
                "days_supply",
                "member_months",
                400.0,
            ),
        ),
    ),
    MetricSpec(
        name="outcome.readmission_30d",
        version=1,
        title="30-day readmissions",
        definition=(
            "Index stays are acute stays ending (discharge) in the period, counted in the member"
            " month of their end; an index stay is readmitted when the member has another acute"
            " stay starting 1 to 30 days after its end (at any facility, even after the"
            " period). Rate = readmissions ÷ index stays." + STAYS + FINAL_ACTION + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            members("stay_members", "distinct members with an index stay"),
            count("index_stays", "index stays", "stay_members", bound=2),
            count(
                "readmissions",
                "index stays followed by a readmission",
                "stay_members",
                bound=2,
                part_of="index_stays",
            ),
        ),
        figures=(
            ratio("readmission_rate", "readmissions ÷ index stays", "readmissions", "index_stays"),
        ),
    ),
    MetricSpec(
        name="rx.generic_dispensing_rate",
        version=1,
        title="Generic dispensing rate",
        definition=(
            "Final-action fills with generic true ÷ all final-action fills."
            + FINAL_ACTION
            + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS | {D.DRUG_CLASS},
        statistics=(
            members("fill_members", "distinct members with a fill"),
            count("fills", "final-action fills", "fill_members", bound=31),
            count(
                "generic_fills",
                "final-action generic fills",
                "fill_members",
                bound=31,
                part_of="fills",
            ),
        ),
        figures=(
            ratio("generic_dispensing_rate", "generic ÷ all fills", "generic_fills", "fills"),
        ),
    ),
    MetricSpec(
        name="rx.specialty_share",
        version=1,
        title="Specialty share of pharmacy spend",
        definition=(
            "Σ allowed of specialty fills ÷ Σ pharmacy allowed (all rows). A fill (claim_id) is"
            " specialty when any of its rows has specialty true, or, when the parameter"
            " cost_per_30_days is above zero, when its net allowed × 30 ÷ its days_supply"
            " (greatest over its rows) is at least that many dollars." + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            members("fill_members", "distinct members with a pharmacy row"),
            members(
                "specialty_members", "distinct members with a specialty row", part_of="fill_members"
            ),
            cents("pharmacy_allowed_cents", "pharmacy allowed", rests_on="fill_members"),
            cents(
                "specialty_allowed_cents",
                "specialty allowed",
                rests_on="specialty_members",
                part_of="pharmacy_allowed_cents",
            ),
        ),
        figures=(
            ratio(
                "specialty_share",
                "specialty ÷ pharmacy allowed",
                "specialty_allowed_cents",
                "pharmacy_allowed_cents",
            ),
        ),
        parameters=(
            ParameterSpec(
                "cost_per_30_days",
                "dollars per 30 days that make a fill specialty (0: the specialty flag alone)",
                0.0,
                0.0,
                1e7,
            ),
        ),
    ),
    MetricSpec(
        name="rx.spend_by_class",
        version=1,
        title="Pharmacy spend by drug class",
        definition=(
            "By drug_class (missing: unknown): Σ allowed and Σ paid (all rows), final-action"
            " fills, and distinct members with a row." + FINAL_ACTION + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS | {D.DRUG_CLASS},
        statistics=(
            members("fill_members", "distinct members with a row"),
            cents("allowed_cents", "pharmacy allowed", rests_on="fill_members"),
            cents("paid_cents", "pharmacy paid", rests_on="fill_members"),
            count("fills", "final-action fills", "fill_members", bound=31),
        ),
        figures=(
            ratio("allowed_per_fill", "allowed dollars per fill", "allowed_cents", "fills", 0.01),
        ),
    ),
    MetricSpec(
        name="rx.rebate_share",
        version=1,
        title="Rebate share of pharmacy allowed",
        definition=(
            "By quarter: Σ rebate_amount of the rebates rows of the quarters the period touches"
            " ÷ Σ pharmacy allowed (all rows counted as for cost.pmpm) in those quarters' months"
            " within the period. By drug_class, rebate rows without a class are unknown; a"
            " class rebated in a quarter that nobody filled in the period is a cell of its"
            " own (its rebates and no pharmacy allowed)."
        ),
        dimensions=frozenset({D.CARRIER, D.QUARTER, D.YEAR, D.DRUG_CLASS}),
        statistics=(
            members("fill_members", "distinct members with a pharmacy row"),
            cents("pharmacy_allowed_cents", "gross pharmacy allowed", rests_on="fill_members"),
            StatisticSpec(
                "rebate_cents",
                StatKind.CENTS,
                "rebates (paid by manufacturers: no member contributes)",
                by_members=False,
            ),
        ),
        figures=(
            ratio(
                "rebate_share",
                "rebates ÷ gross pharmacy allowed",
                "rebate_cents",
                "pharmacy_allowed_cents",
            ),
        ),
    ),
    MetricSpec(
        name="quality.breast_cancer_screening",
        version=1,
        title="Breast cancer screening",
        definition=(
            "Eligible: women (sex F) aged 50–74 enrolled in every month of the period. Screened:"
            " eligible women with a final-action medical line with HCPCS 77061–77063 or"
            " 77065–77067 dated in the 27 months ending on the period's last day (from the first"
            " day of the month 26 months before the period's last month)." + END_AGE + FINAL_ACTION
        ),
        dimensions=PERSON_DIMS,
        statistics=(
            members("eligible", "women in the measure's denominator"),
            members("screened", "eligible women screened", part_of="eligible"),
        ),
        figures=(ratio("screening_rate", "screened ÷ eligible", "screened", "eligible"),),
    ),
    MetricSpec(
        name="quality.diabetes_hba1c_testing",
        version=1,
        title="HbA1c testing for members with diabetes",
        definition=(
            "Eligible: members aged 18–75 with diabetes in the period — final-action medical"
            " lines with a diagnosis (any dx) beginning E10 or E11 on two or more distinct"
            " claim_start_dates outside inpatient (bill_type not beginning '11'), or on one or"
            " more inpatient lines (bill_type beginning '11'). Tested: eligible members with a"
            " final-action line with HCPCS 83036 or 83037 in the period." + END_AGE + FINAL_ACTION
        ),
        dimensions=PERSON_DIMS,
        statistics=(
            members("eligible", "members with diabetes"),
            members("tested", "eligible members with an HbA1c test", part_of="eligible"),
        ),
        figures=(ratio("testing_rate", "tested ÷ eligible", "tested", "eligible"),),
    ),
    MetricSpec(
        name="quality.statin_use_diabetes",
        version=1,
        title="Statin use by members with diabetes",
        definition=(
            "Eligible: members aged 40–75 with two or more final-action fills of drug_class"
            " antidiabetic in the period. On statin: eligible members with a final-action fill"
            " of drug_class statin in the period." + END_AGE + FINAL_ACTION
        ),
        dimensions=PERSON_DIMS,
        statistics=(
            members("eligible", "members with 2+ antidiabetic fills"),
            members("on_statin", "eligible members with a statin fill", part_of="eligible"),
        ),
        figures=(ratio("statin_rate", "on statin ÷ eligible", "on_statin", "eligible"),),
    ),
    MetricSpec(
        name="ops.claims_lag",
        version=1,
        title="Claims lag and completion factors",
        definition=(
            "Paid dollars of medical rows with a paid_date, by incurred month (claim_start_date)"
            " × months from the incurred month to the paid_date month (0 to 11, and 12 for 12 or"
            f" more); completion factor k = paid within k months ÷ all paid.{ATTRIBUTION}"
        ),
        dimensions=MEMBER_DIMS,
        statistics=(CLAIMANTS, *_lag_statistics()),
        figures=tuple(_completion(k) for k in (0, 1, 2, 3, 6, LAG_MONTHS)),
    ),
    MetricSpec(
        name="ops.denial_rate",
        version=1,
        title="Denial rate",
        definition=(
            "Adjudicated lines are, per medical claim line (claim_id, claim_line), the row with"
            " the greatest claim_version when its status is paid, adjusted or denied; denied"
            " lines are those denied. Rates by count and by charge_amount." + ATTRIBUTION
        ),
        dimensions=MEMBER_DIMS,
        statistics=(
            CLAIMANTS,
            count("lines", "adjudicated lines", "claimants", bound=300),
            count("denied_lines", "denied lines", "claimants", bound=300, part_of="lines"),
            cents("charge_cents", "charges of adjudicated lines", bound=2 * MONTH_CENTS_BOUND),
            cents(
                "denied_charge_cents",
                "charges of denied lines",
                bound=2 * MONTH_CENTS_BOUND,
                part_of="charge_cents",
            ),
        ),
        figures=(
            ratio("denial_rate", "denied ÷ adjudicated lines", "denied_lines", "lines"),
            ratio(
                "denied_charge_share",
                "denied ÷ adjudicated charges",
                "denied_charge_cents",
                "charge_cents",
            ),
        ),
    ),
    MetricSpec(
        name="ops.data_quality",
        version=1,
        title="Data quality",
        definition=DATA_QUALITY,
        dimensions=DATA_QUALITY_DIMS,
        statistics=DATA_QUALITY_STATISTICS,
        figures=DATA_QUALITY_FIGURES,
    ),
    MetricSpec(
        name="ops.data_quality",
        version=2,
        title="Data quality and control totals",
        definition=DATA_QUALITY + CONTROL_TOTALS,
        dimensions=DATA_QUALITY_DIMS,
        statistics=(*DATA_QUALITY_STATISTICS, *_control_statistics()),
        figures=(*DATA_QUALITY_FIGURES, *_control_figures()),
    ),
)

_BY_NAME: dict[str, dict[int, MetricSpec]] = {}
for _m in METRICS:
    _BY_NAME.setdefault(_m.name, {})[_m.version] = _m

#: Declarations added by an open :func:`extended`.
_EXTRA: list[MetricSpec] = []


def metrics() -> tuple[MetricSpec, ...]:
    """Every declared metric: :data:`METRICS`, and those of an open :func:`extended`."""
    return (*METRICS, *_EXTRA)


@contextmanager
def extended(*specs: MetricSpec) -> Iterator[None]:
    """Declare ``specs`` as well while the context lasts, in this process: a metric under
    development, tried with its builder and oracle before its declaration joins
    :data:`METRICS` (docs/adding-a-metric.md). A released metric is declared in
    :data:`METRICS`, the catalogue both sides are built with."""
    for spec in specs:
        if spec.version in _BY_NAME.get(spec.name, {}):
            raise ValueError(f"{spec.key} is declared already")
    for spec in specs:
        _BY_NAME.setdefault(spec.name, {})[spec.version] = spec
        _EXTRA.append(spec)
    try:
        yield
    finally:
        for spec in specs:
            _EXTRA.remove(spec)
            versions = _BY_NAME[spec.name]
            del versions[spec.version]
            if not versions:
                del _BY_NAME[spec.name]


def latest_metrics() -> tuple[MetricSpec, ...]:
    """The latest version of each declared metric, in declaration order (what a suite asks
    for; earlier versions stay declared for those who still ask for them)."""
    latest: dict[str, MetricSpec] = {}
    for spec in metrics():
        if spec.name not in latest or spec.version > latest[spec.name].version:
            latest[spec.name] = spec
    return tuple(latest.values())


def get_metric(name: str, version: int | None = None) -> MetricSpec:
    """The declaration of ``name`` at ``version`` (latest when None or 0)."""
    versions = _BY_NAME.get(name)
    if not versions:
        raise UnknownMetricError("unknown metric")
    if not version:
        return versions[max(versions)]
    if version not in versions:
        raise UnknownMetricError("unknown metric version")
    return versions[version]


def metric_names() -> list[str]:
    return sorted(_BY_NAME)
