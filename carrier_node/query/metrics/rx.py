"""Pharmacy metrics: generic dispensing, specialty share, spend by drug class, rebate share."""

from __future__ import annotations

from decimal import Decimal

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.aggregate import (
    KEY,
    MEMBER_ROWS,
    BuildContext,
    col,
    filter_lines,
    keys,
    matches,
    member_cells,
    member_month_ctes,
    one_row_per_member_month,
    per_member,
    with_ctes,
)
from carrier_node.query.registry import implements
from fedoversight.dimensions import Dimension


def _drug_class(alias: str) -> exp.Expr:
    return sql.checked_code(col("drug_class", alias), Dimension.DRUG_CLASS)


# --- generic dispensing -----------------------------------------------------------------------

_CLASSED_FILLS = """
SELECT x.claim_id AS claim_id, x.member_id AS member_id,
       CAST(DATE_TRUNC('MONTH', x.fill_date) AS DATE) AS month_start,
       :drug_class AS drug_class, x.days_supply AS days_supply, x.generic AS generic
FROM final_fills AS x
"""

# Per cell and member (see member_cells).
_GENERIC = """
SELECT 1 AS fill_members, COUNT(*) AS fills, COALESCE(SUM(r.generic), 0) AS generic_fills
FROM classed_fills AS r
JOIN mm ON r.member_id = mm.member_id AND r.month_start = mm.month_start
"""


def _fill_ctes(ctx: BuildContext) -> list[tuple[str, exp.Expr]]:
    return [
        *sql.fill_ctes(ctx.period),
        ("classed_fills", sql.fill(_CLASSED_FILLS, drug_class=_drug_class("x"))),
    ]


@implements("rx.generic_dispensing_rate")
def generic_dispensing_rate(ctx: BuildContext) -> exp.Select:
    """Final-action fills of the period in enrolled member months, and the generic ones."""
    cell_keys = keys(ctx, "r")
    rows = filter_lines(per_member(sql.fill(_GENERIC), cell_keys, col("member_id", "r")), ctx, "r")
    query = member_cells(ctx, rows, [k.name for k in cell_keys], ctx.statistics())
    return with_ctes(query, [*member_month_ctes(ctx), *_fill_ctes(ctx)])


# --- specialty share --------------------------------------------------------------------------

# Every row of a fill with a row in the period decides whether the fill is specialty (read off
# the fills' profile, sql.pharmacy_fills, which the batch's other fill metrics share).
_FILL_PROFILE = """
SELECT f.claim_id AS claim_id, f.flagged AS flagged, f.net_allowed_cents AS net_allowed_cents,
       f.days_supply AS days_supply
FROM pharmacy_fills AS f
"""

# Summed per member and month first: the member months are then joined to one row per member
# month rather than to every row (the sums are the same).
_SPECIALTY_ROWS = """
SELECT r.member_id AS member_id, r.month_start AS month_start,
       MAX(r.specialty) AS specialty,
       SUM(r.allowed_cents) AS allowed_cents,
       SUM(CASE WHEN r.specialty = 1 THEN r.allowed_cents ELSE 0 END) AS specialty_allowed_cents
FROM (
  SELECT p.member_id AS member_id,
         CAST(DATE_TRUNC('MONTH', p.fill_date) AS DATE) AS month_start,
         CAST(p.allowed_amount * 100 AS BIGINT) AS allowed_cents,
         CASE WHEN :specialty THEN 1 ELSE 0 END AS specialty
  FROM pharmacy_claims AS p
  JOIN fill_profile AS f ON f.claim_id = p.claim_id
  WHERE p.fill_date BETWEEN :start AND :end
) AS r
GROUP BY r.member_id, r.month_start
"""

# Per cell and member (see member_cells).
_SPECIALTY = """
SELECT 1 AS fill_members, MAX(r.specialty) AS specialty_members,
       SUM(r.allowed_cents) AS pharmacy_allowed_cents,
       SUM(r.specialty_allowed_cents) AS specialty_allowed_cents
FROM specialty_rows AS r
JOIN mm ON r.member_id = mm.member_id AND r.month_start = mm.month_start
"""

# net allowed × 30 ÷ days supply ≥ dollars, as exact arithmetic in cents (days supply > 0).
_COSTLY = """
SELECT f.days_supply > 0 AND f.net_allowed_cents * 30 >= :threshold_cents * f.days_supply
"""


@implements("rx.specialty_share")
def specialty_share(ctx: BuildContext) -> exp.Select:
    """Pharmacy rows (all versions) of the period in enrolled member months; those of
    specialty fills apart."""
    specialty: exp.Expr = col("flagged", "f").eq(1)
    dollars = ctx.parameter("cost_per_30_days")
    if dollars > 0:
        # The parameter as an exact decimal literal of cents (repr is the float's shortest form).
        threshold = Decimal(repr(dollars)) * 100
        costly = sql.fill(_COSTLY, threshold_cents=exp.Literal.number(str(threshold)))
        specialty = exp.or_(specialty, exp.paren(costly.expressions[0].copy()))
    rows = sql.fill(_SPECIALTY_ROWS, specialty=specialty, **ctx.period_values())
    cell_keys = keys(ctx)
    members = one_row_per_member_month(
        per_member(sql.fill(_SPECIALTY), cell_keys, col("member_id", "r")), ctx.group_by
    )
    query = member_cells(ctx, members, [k.name for k in cell_keys], ctx.statistics())
    return with_ctes(
        query,
        [
            *member_month_ctes(ctx),
            sql.pharmacy_fills(ctx.period),
            ("fill_profile", sql.fill(_FILL_PROFILE)),
            ("specialty_rows", rows),
        ],
    )


# --- spend by class ---------------------------------------------------------------------------

_CLASS_ROWS = """
SELECT p.member_id AS member_id, CAST(DATE_TRUNC('MONTH', p.fill_date) AS DATE) AS month_start,
       :drug_class AS drug_class, p.member_id AS row_member_id,
       CAST(p.allowed_amount * 100 AS BIGINT) AS allowed_cents,
       CAST(p.paid_amount * 100 AS BIGINT) AS paid_cents, CAST(NULL AS VARCHAR) AS claim_id
FROM pharmacy_claims AS p
WHERE p.fill_date BETWEEN :start AND :end
UNION ALL
SELECT x.member_id AS member_id, x.month_start AS month_start, x.drug_class AS drug_class,
       CAST(NULL AS VARCHAR) AS row_member_id, CAST(0 AS BIGINT) AS allowed_cents,
       CAST(0 AS BIGINT) AS paid_cents, x.claim_id AS claim_id
FROM classed_fills AS x
"""

# Per cell and member (see member_cells). A final-action fill is one row of classed_fills (the
# only rows with a claim_id) and one member month holds it, so counting claim_ids counts fills.
_SPEND = """
SELECT MAX(CASE WHEN r.row_member_id IS NULL THEN 0 ELSE 1 END) AS fill_members,
       SUM(r.allowed_cents) AS allowed_cents,
       SUM(r.paid_cents) AS paid_cents,
       COUNT(r.claim_id) AS fills
FROM class_rows AS r
JOIN mm ON r.member_id = mm.member_id AND r.month_start = mm.month_start
"""


@implements("rx.spend_by_class")
def spend_by_class(ctx: BuildContext) -> exp.Select:
    """Pharmacy rows (all versions) by drug class, and final-action fills by drug class."""
    rows = sql.fill_query(_CLASS_ROWS, drug_class=_drug_class("p"), **ctx.period_values())
    cell_keys = keys(ctx, "r")
    members = filter_lines(per_member(sql.fill(_SPEND), cell_keys, col("member_id", "r")), ctx, "r")
    query = member_cells(ctx, members, [k.name for k in cell_keys], ctx.statistics())
    return with_ctes(query, [*member_month_ctes(ctx), *_fill_ctes(ctx), ("class_rows", rows)])


# --- rebate share -----------------------------------------------------------------------------

_REBATE_CELLS = """
SELECT mm.quarter AS quarter, mm.year AS year, :carrier AS carrier, :drug_class AS drug_class,
       p.member_id AS member_id, mm.member_key AS member_key,
       CAST(p.allowed_amount * 100 AS BIGINT) AS pharmacy_allowed_cents,
       CAST(0 AS BIGINT) AS rebate_cents
FROM pharmacy_claims AS p
JOIN mm
  ON p.member_id = mm.member_id
 AND CAST(DATE_TRUNC('MONTH', p.fill_date) AS DATE) = mm.month_start
WHERE p.fill_date BETWEEN :start AND :end
UNION ALL
SELECT b.quarter AS quarter, b.year AS year, :carrier AS carrier, b.drug_class AS drug_class,
       CAST(NULL AS VARCHAR) AS member_id, CAST(NULL AS VARCHAR) AS member_key,
       CAST(0 AS BIGINT) AS pharmacy_allowed_cents,
       b.rebate_cents AS rebate_cents
FROM quarter_rebates AS b
"""

# A rebate row's quarter is read as YYYYQn or YYYY-Qn (any case, surrounding spaces ignored).
_QUARTER_REBATES = """
SELECT q.quarter AS quarter, q.year AS year, :drug_class AS drug_class,
       CAST(b.rebate_amount * 100 AS BIGINT) AS rebate_cents
FROM rebates AS b
JOIN quarters AS q ON UPPER(TRIM(b.quarter)) IN (q.quarter, q.spelled)
"""

_NO_REBATES = """
SELECT q.quarter AS quarter, q.year AS year, CAST(NULL AS VARCHAR) AS drug_class,
       CAST(0 AS BIGINT) AS rebate_cents
FROM quarters AS q
WHERE 1 = 0
"""

# Per cell and member (see member_cells); the rebates of a cell make one row without a member,
# which takes no part in the pharmacy allowed's contributions (its NULL is none) and carries
# the cell's largest rebate row.
_REBATE_SHARE = """
SELECT CASE WHEN r.member_id IS NULL THEN 0 ELSE 1 END AS fill_members,
       CASE WHEN r.member_id IS NULL THEN NULL ELSE SUM(r.pharmacy_allowed_cents) END
         AS pharmacy_allowed_cents,
       SUM(r.rebate_cents) AS rebate_cents, MAX(ABS(r.rebate_cents)) AS rebate_row_top
FROM rebate_cells AS r
"""

# A cell exists when people count in it or rebates do (a drug class rebated in the quarter
# that nobody filled in the period is a cell of its own: its rebates are in the program sum).
_HAS_ROWS = """
SELECT COUNT(*) > 0
"""


@implements("rx.rebate_share")
def rebate_share(ctx: BuildContext) -> exp.Select:
    """By quarter: rebates of the quarters the period touches, and pharmacy allowed (all rows,
    in enrolled member months) of the period's months; no rebates table means no rebates.

    No member contributes to the rebates (``by_members`` is false): their largest
    contribution is their largest row."""
    if ctx.has_table("rebates"):
        rebates = sql.fill(_QUARTER_REBATES, drug_class=_drug_class("b"))
    else:
        rebates = sql.fill(_NO_REBATES)
    cells = sql.fill_query(
        _REBATE_CELLS,
        carrier=sql.lit(ctx.carrier_id),
        drug_class=_drug_class("p"),
        **ctx.period_values(),
    )
    cell_keys = [col(d.value, "r") for d in ctx.group_by]
    members = per_member(
        sql.fill(_REBATE_SHARE), cell_keys, col("member_id", "r"), key=col(KEY, "r")
    )
    for dim, values in ctx.query.filters:
        members = members.where(matches(col(dim.value, "r"), values))
    query = member_cells(
        ctx,
        members,
        [k.name for k in cell_keys],
        ctx.statistics(),
        tops={"rebate_cents": exp.Max(this=col("rebate_row_top", MEMBER_ROWS))},
    )
    query = query.having(sql.fill(_HAS_ROWS).expressions[0].copy(), copy=False)
    return with_ctes(
        query,
        [
            *member_month_ctes(ctx, filtered=False),
            ("quarters", exp.select("*").from_(sql.quarters_cte(ctx.period))),
            ("quarter_rebates", rebates),
            ("rebate_cells", cells),
        ],
    )
