"""Cost metrics beyond PMPM: member cost share, the per-member distribution, high-cost
claimants and the out-of-network share."""

from __future__ import annotations

from sqlglot import exp

from carrier_node import sql
from carrier_node.metric_common import (
    MM,
    BuildContext,
    attributed_months,
    cell_max,
    col,
    contribution_columns,
    keyed,
    keys,
    member_cells,
    member_month_cells,
    member_month_ctes,
    member_month_spend,
    per_member,
    top_two,
    with_ctes,
)
from fedoversight.catalogue import HCC_THRESHOLDS

# --- member cost share ------------------------------------------------------------------------

# Per cell and member (see member_cells).
_COST_SHARE = """
SELECT SUM(r.deductible_cents + r.coinsurance_cents + r.copay_cents
           + r.pharmacy_member_paid_cents) AS cost_share_cents,
       SUM(r.deductible_cents) AS deductible_cents,
       SUM(r.coinsurance_cents) AS coinsurance_cents,
       SUM(r.copay_cents) AS copay_cents,
       SUM(r.pharmacy_member_paid_cents) AS pharmacy_member_paid_cents
FROM spend AS r
JOIN mm ON r.member_id = mm.member_id AND r.month_start = mm.month_start
"""

COST_SHARE_CENTS = (
    "cost_share_cents",
    "deductible_cents",
    "coinsurance_cents",
    "copay_cents",
    "pharmacy_member_paid_cents",
)
COST_SHARE_STATISTICS = ("claimants", *COST_SHARE_CENTS)


def member_cost_share(ctx: BuildContext) -> exp.Select:
    """Medical deductible + coinsurance + copay and pharmacy member paid (missing: 0), all
    claim versions, in enrolled member months."""
    cell_keys = keys(ctx)
    members = per_member(sql.fill(_COST_SHARE), cell_keys, col("member_id", "r"))
    claimants = exp.Count(this=exp.Star()).as_("claimants")  # one row per member
    numerator = member_cells(members, [k.name for k in cell_keys], COST_SHARE_CENTS, [claimants])
    tops = (c for n in COST_SHARE_CENTS for c in contribution_columns(n))
    statistics = (*COST_SHARE_STATISTICS, *tops)
    return member_month_cells(ctx, numerator, statistics, [("spend", member_month_spend(ctx))])


# --- per-member period allowed ----------------------------------------------------------------

_MEMBER_TOTALS = """
SELECT a.member_id AS member_id, SUM(a.allowed_cents) AS allowed_cents
FROM spend AS a
JOIN mm ON a.member_id = mm.member_id AND a.month_start = mm.month_start
GROUP BY a.member_id
"""

_PERSONS = """
SELECT p.*, COALESCE(t.allowed_cents, 0) AS period_allowed_cents
FROM attributed AS p
LEFT JOIN member_totals AS t ON t.member_id = p.member_id
"""


def _person_ctes(ctx: BuildContext) -> list[tuple[str, exp.Expr]]:
    """CTEs ending in ``persons``: every member enrolled in the period, with the dimensions of
    their latest enrolled month and their period allowed in cents (claims counted as for
    cost.pmpm: every version, in any enrolled month of the period; 0 when none)."""
    return [
        *member_month_ctes(ctx, filtered=False),
        ("spend", member_month_spend(ctx)),
        ("member_totals", sql.fill(_MEMBER_TOTALS)),
        ("attributed", attributed_months(ctx, last_month_only=False)),
        ("persons", sql.fill(_PERSONS)),
    ]


# Each person carries the largest period allowed of their cell (:largest), from which the
# cell's two largest contributions are read as metric_common.top_two reads them: per bin, the
# persons at the largest and the largest below it; then over the cell's bins.
_BINNED = """
SELECT p.*, :bin AS allowed_bin, :largest AS allowed_max FROM persons AS p
"""

# Columns named as metric_common.histogram_columns("allowed_histogram") says.
_BINS = """
SELECT mm.allowed_bin AS allowed_histogram__bin, COUNT(*) AS allowed_histogram__count,
       SUM(mm.period_allowed_cents) AS allowed_histogram__cents,
       MAX(mm.allowed_max) AS bin_max,
       SUM(CASE WHEN mm.period_allowed_cents = mm.allowed_max THEN 1 ELSE 0 END) AS bin_ties,
       MAX(CASE WHEN mm.period_allowed_cents < mm.allowed_max AND mm.period_allowed_cents > 0
                THEN mm.period_allowed_cents END) AS bin_below
FROM binned AS mm
"""

# Contribution columns named as metric_common.contribution_columns("allowed_cents") says.
_CELL_TOTALS = """
SELECT b.*, SUM(b.allowed_histogram__count) OVER () AS members,
       SUM(b.allowed_histogram__cents) OVER () AS allowed_cents,
       CASE WHEN MAX(b.bin_max) OVER () > 0 THEN MAX(b.bin_max) OVER () ELSE 0 END
         AS allowed_cents__top1,
       CASE WHEN SUM(b.bin_ties) OVER () > 1 AND MAX(b.bin_max) OVER () > 0
            THEN MAX(b.bin_max) OVER ()
            ELSE COALESCE(MAX(b.bin_below) OVER (), 0) END AS allowed_cents__top2
FROM bins AS b
"""


def distribution(ctx: BuildContext) -> exp.Select:
    """Per cell and histogram bin of per-member period allowed: members and cents; the cell's
    ``members`` and ``allowed_cents`` (with its two largest member contributions) repeat on
    each of its bin rows.

    The dominance rule applies to ``allowed_cents``, a member's contribution being their period
    total. It is not applied to the histogram's bins: the top bins of nearly every cell hold
    one or two members, so a p% rule per bin would withhold every cell's histogram; a bin's
    cents are a coarse location of the members in it, protected with the cell by the member
    floor and by ``allowed_cents``'s dominance (a dominated cell is withheld whole)."""
    cell_keys = keys(ctx)
    bins = sql.fill(_BINS)
    bins = bins.select(*[k.copy() for k in cell_keys]).group_by(
        *[k.copy() for k in cell_keys], col("allowed_bin", MM)
    )
    totals = sql.fill(_CELL_TOTALS)
    for window in totals.find_all(exp.Window):  # the cell's totals, over its bin rows
        window.set("partition_by", [col(d.value, "b") for d in ctx.member_dims] or None)
    allowed = col("period_allowed_cents", "p")
    largest = cell_max(allowed, [col(d.value, "p") for d in ctx.group_by])
    binned = sql.fill(_BINNED, bin=sql.histogram_bin(allowed), largest=largest)
    return with_ctes(totals, [*_person_ctes(ctx), ("binned", binned), ("bins", bins)])


def _hcc_label(threshold: int) -> str:
    return f"{threshold // 1000}k" if threshold < 1_000_000 else f"{threshold // 1_000_000}m"


_HCC = """
SELECT COUNT(*) AS members, COALESCE(SUM(mm.period_allowed_cents), 0) AS allowed_cents
FROM (SELECT p.*, :largest AS allowed_max FROM persons AS p) AS mm
"""


def high_cost_claimants(ctx: BuildContext) -> exp.Select:
    """Members and allowed per cell, and those of members at or above each threshold.

    A member's contribution to each dollar total is their period allowed: the two largest of
    the cell are those of ``allowed_cents``, and of a threshold's total where they reach it."""
    largest = cell_max(col("period_allowed_cents", "p"), [col(d.value, "p") for d in ctx.group_by])
    query = sql.fill(_HCC, largest=largest)
    allowed = col("period_allowed_cents", MM)
    tops = top_two(allowed, col("allowed_max", MM), "allowed_cents")
    query = query.select(*tops, copy=False)
    for threshold in HCC_THRESHOLDS:
        label = _hcc_label(threshold)
        at_least = allowed.copy() >= sql.num(threshold * 100)
        query = query.select(
            exp.func(
                "COALESCE",
                exp.Sum(this=exp.Case().when(at_least, sql.num(1)).else_(sql.num(0))),
                sql.num(0),
            ).as_(f"hcc_{label}"),
            exp.func(
                "COALESCE",
                exp.Sum(this=exp.Case().when(at_least.copy(), allowed.copy()).else_(sql.num(0))),
                sql.num(0),
            ).as_(f"hcc_{label}_allowed_cents"),
        )
        for top, name in zip(tops, contribution_columns(f"hcc_{label}_allowed_cents"), strict=True):
            value = top.this  # the COALESCEd MAX of allowed_cents's column
            reached = value.copy() >= sql.num(threshold * 100)
            query = query.select(exp.Case().when(reached, value.copy()).else_(sql.num(0)).as_(name))
    return with_ctes(keyed(query, keys(ctx)), _person_ctes(ctx))


# --- out-of-network share ---------------------------------------------------------------------

# Per cell and member (see member_cells).
_NETWORK = """
SELECT SUM(r.out_of_network_allowed_cents) AS out_of_network_allowed_cents,
       SUM(r.known_network_allowed_cents) AS known_network_allowed_cents
FROM spend AS r
JOIN mm ON r.member_id = mm.member_id AND r.month_start = mm.month_start
WHERE r.medical_rows > 0
"""

NETWORK_CENTS = ("out_of_network_allowed_cents", "known_network_allowed_cents")


def out_of_network_share(ctx: BuildContext) -> exp.Select:
    """Medical rows (all versions) in enrolled member months: allowed out of network and
    allowed with a known network flag. Claimants are members with a medical row counted in the
    cell, whatever its network flag.

    A ratio of two dollar totals, but both totals are released, so each has the dominance
    rule's contribution columns like any other."""
    cell_keys = keys(ctx)
    members = per_member(sql.fill(_NETWORK), cell_keys, col("member_id", "r"))
    claimants = exp.Count(this=exp.Star()).as_("claimants")  # one row per member
    query = member_cells(members, [k.name for k in cell_keys], NETWORK_CENTS, [claimants])
    return with_ctes(query, [*member_month_ctes(ctx), ("spend", member_month_spend(ctx))])
