"""Cost metrics beyond PMPM: member cost share, the per-member distribution, high-cost
claimants and the out-of-network share."""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from carrier_node import sql
from carrier_node.metric_common import (
    MM,
    BuildContext,
    attributed_months,
    col,
    keys,
    member_cells,
    member_month_cells,
    member_month_ctes,
    member_month_spend,
    numerator_columns,
    per_member,
    with_ctes,
)
from fedoversight.catalogue import HCC_THRESHOLDS, hcc_label

# --- member cost share ------------------------------------------------------------------------

# Per cell and member (see member_cells).
_COST_SHARE = """
SELECT 1 AS claimants,
       SUM(r.deductible_cents + r.coinsurance_cents + r.copay_cents
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
    statistics = ctx.statistics(*COST_SHARE_STATISTICS)
    numerator = member_cells(ctx, members, [k.name for k in cell_keys], statistics)
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


# Per cell and histogram bin: its members, their cents and disclosure columns (the bin's
# members are its count; see metric_common.disclosure_columns).
_BINS = """
SELECT mm.allowed_bin AS allowed_histogram__bin, COUNT(*) AS allowed_histogram__count,
       SUM(mm.period_allowed_cents) AS allowed_histogram__cents,
       MIN(mm.member_key) AS allowed_histogram__kmin,
       MAX(mm.member_key) AS allowed_histogram__kmax,
       MAX(ABS(mm.period_allowed_cents)) AS allowed_histogram__top
FROM binned AS mm
"""

_BINNED = """
SELECT p.*, :bin AS allowed_bin FROM persons AS p
"""


def distribution(ctx: BuildContext) -> exp.Select:
    """Per cell and histogram bin of per-member period allowed: members and cents; the cell's
    ``members`` and ``allowed_cents`` (with their disclosure columns) repeat on each of its bin
    rows. A member's contribution to ``allowed_cents`` is their period total."""
    cell_keys = keys(ctx)
    bins = sql.fill(_BINS)
    bins = bins.select(*[k.copy() for k in cell_keys]).group_by(
        *[k.copy() for k in cell_keys], col("allowed_bin", MM)
    )
    totals = _person_totals(ctx, ("members", "allowed_cents"))
    on = [col(d.value, "b").eq(col(d.value, "t")) for d in ctx.group_by]
    query = exp.select(
        exp.Column(this=exp.Star(), table=exp.to_identifier("b")),
        *[col(c, "t") for c in numerator_columns(ctx.statistics("members", "allowed_cents"),
                                                  ctx.clamped)],
    ).from_(exp.alias_(exp.to_table("bins"), "b"))
    query = (
        query.join(exp.alias_(exp.to_table("totals"), "t"), on=exp.and_(*on))
        if on
        else query.join(exp.alias_(exp.to_table("totals"), "t"), join_type="cross")
    )
    binned = sql.fill(_BINNED, bin=sql.histogram_bin(col("period_allowed_cents", "p")))
    return with_ctes(
        query, [*_person_ctes(ctx), ("binned", binned), ("bins", bins), ("totals", totals)]
    )


def _person_totals(ctx: BuildContext, names: Sequence[str]) -> exp.Select:
    """Cells of ``names`` from the persons (one row per member: see member_cells), the
    persons' columns standing for their contributions: ``members`` 1, ``allowed_cents`` their
    period allowed, ``hcc_X`` and ``hcc_X_allowed_cents`` those at or above threshold X."""
    allowed = col("period_allowed_cents", "p")
    rows = exp.select(
        exp.Column(this=exp.Star(), table=exp.to_identifier("p")),
        sql.num(1).as_("members"),
        allowed.copy().as_("allowed_cents"),
    ).from_(exp.alias_(exp.to_table("persons"), "p"))
    for threshold in HCC_THRESHOLDS:
        label = hcc_label(threshold)
        at_least = allowed.copy() >= sql.num(threshold * 100)
        rows = rows.select(
            exp.Case().when(at_least, sql.num(1)).else_(sql.num(0)).as_(f"hcc_{label}"),
            exp.Case().when(at_least.copy(), allowed.copy()).else_(sql.num(0)).as_(
                f"hcc_{label}_allowed_cents"
            ),
            copy=False,
        )
    return member_cells(ctx, rows, [d.value for d in ctx.group_by], ctx.statistics(*names))


def high_cost_claimants(ctx: BuildContext) -> exp.Select:
    """Members and allowed per cell, and those of members at or above each threshold; a
    member's contribution to each dollar total is their period allowed."""
    names = [s.name for s in ctx.statistics()]
    return with_ctes(_person_totals(ctx, names), _person_ctes(ctx))


# --- out-of-network share ---------------------------------------------------------------------

# Per cell and member (see member_cells).
_NETWORK = """
SELECT 1 AS claimants, SUM(r.out_of_network_allowed_cents) AS out_of_network_allowed_cents,
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

    A ratio of two dollar totals, but both totals are released, so each is protected like
    any other."""
    cell_keys = keys(ctx)
    members = per_member(sql.fill(_NETWORK), cell_keys, col("member_id", "r"))
    query = member_cells(ctx, members, [k.name for k in cell_keys], ctx.statistics())
    return with_ctes(query, [*member_month_ctes(ctx), ("spend", member_month_spend(ctx))])
