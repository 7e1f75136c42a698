"""Operational metrics: claims lag, denial rate and data quality."""

from __future__ import annotations

from sqlglot import exp

from carrier_node.data.control_totals import CONTROLLED_TABLES, ControlTotal
from carrier_node.query import sql
from carrier_node.query.aggregate import (
    MM,
    BuildContext,
    col,
    enrolled_spend_ctes,
    keys,
    lag_column,
    matches,
    member_cells,
    member_month_ctes,
    member_month_spend,
    one_row_per_member_month,
    per_member,
    with_ctes,
)
from carrier_node.query.registry import implements
from fedoversight.catalogue import LAG_MONTHS
from fedoversight.periods import Month

# --- claims lag -------------------------------------------------------------------------------

# Months from the incurred month to the paid month, LAG_MONTHS taking that many or more; a paid
# date in a month before the incurred month is in no bucket (the row does not count). The
# buckets are summed per member month with the batch's other claim totals (see
# aggregate.member_month_spend); a member month counts where a row of it has a bucket.
_LAG_MEMBERS = """
SELECT 1 AS claimants
FROM enrolled_spend AS mm
WHERE mm.lag_rows > 0
"""


@implements("ops.claims_lag")
def claims_lag(ctx: BuildContext) -> exp.Select:
    """Paid cents of medical rows (all versions) with a paid date, in enrolled member months of
    their incurred month, by months to payment."""
    cell_keys = keys(ctx)
    query = sql.fill(_LAG_MEMBERS)
    for k in range(LAG_MONTHS + 1):
        query = query.select(
            exp.Sum(this=col(lag_column(k), MM)).as_(f"paid_lag_{k:02d}_cents"), copy=False
        )
    members = one_row_per_member_month(
        per_member(query, cell_keys, col("member_id", MM)), ctx.group_by
    )
    return with_ctes(
        member_cells(ctx, members, [k.name for k in cell_keys], ctx.statistics()),
        [*member_month_ctes(ctx), *enrolled_spend_ctes(ctx)],
    )


# --- denial rate ------------------------------------------------------------------------------

# Per cell and member (see member_cells), from the adjudicated lines summed per member month
# with the batch's other claim totals (see aggregate.member_month_spend): a member month counts
# where it has an adjudicated line.
_DENIALS = """
SELECT 1 AS claimants, SUM(mm.adjudicated_lines) AS lines, SUM(mm.denied_lines) AS denied_lines,
       SUM(mm.adjudicated_charge_cents) AS charge_cents,
       SUM(mm.denied_charge_cents) AS denied_charge_cents
FROM enrolled_spend AS mm
WHERE mm.adjudicated_lines > 0
"""


@implements("ops.denial_rate")
def denial_rate(ctx: BuildContext) -> exp.Select:
    """Per medical line, its latest row when paid, adjusted or denied, dated in the period in
    an enrolled member month; the denied ones apart, by count and charge."""
    cell_keys = keys(ctx)
    # enrolled_spend holds a member month once: where the cells are months, each row is its
    # member's contribution already.
    members = one_row_per_member_month(
        per_member(sql.fill(_DENIALS), cell_keys, col("member_id", MM)), ctx.group_by
    )
    return with_ctes(
        member_cells(ctx, members, [k.name for k in cell_keys], ctx.statistics()),
        [*member_month_ctes(ctx), *enrolled_spend_ctes(ctx)],
    )


# --- data quality -----------------------------------------------------------------------------

_QUALITY_MONTHS = """
SELECT m.month_start AS month_start, :carrier AS carrier, m.month AS month, m.quarter AS quarter,
       m.year AS year
FROM months AS m
"""

# Every row dated in the period (from the member-month totals), in the month of its date; a row
# is outside enrollment when its month is not an enrolled month of its member (the rule by which
# claims count elsewhere). An empty code is a missing one.
_QUALITY = """
SELECT 1 AS claimants,
       COALESCE(SUM(r.medical_rows), 0) AS medical_rows,
       COALESCE(SUM(r.pharmacy_rows), 0) AS pharmacy_rows,
       COALESCE(SUM(CASE WHEN e.member_id IS NULL THEN r.medical_rows ELSE 0 END), 0)
         AS medical_outside_enrollment,
       COALESCE(SUM(CASE WHEN e.member_id IS NULL THEN r.pharmacy_rows ELSE 0 END), 0)
         AS pharmacy_outside_enrollment,
       COALESCE(SUM(r.invalid_place_of_service), 0) AS invalid_place_of_service,
       COALESCE(SUM(r.invalid_revenue_code), 0) AS invalid_revenue_code,
       COALESCE(SUM(r.invalid_drg), 0) AS invalid_drg,
       COALESCE(SUM(r.missing_fields), 0) AS missing_fields
FROM spend AS r
JOIN quality_months AS m ON m.month_start = r.month_start
LEFT JOIN mm AS e ON e.member_id = r.member_id AND e.month_start = r.month_start
"""


def _quality_rows(ctx: BuildContext, *, one_per_member_month: bool) -> exp.Select:
    """Per member (one row per cell and member) the data-quality statistics of ``ctx``'s
    version, from ``quality_rows`` (version 2: with the control totals) or ``spend``.
    ``one_per_member_month``: the rows read hold each member month once (``spend`` alone), so
    where the cells are months a row is its member's contribution, not grouped again."""
    cell_keys = [col(d.value, "m") for d in ctx.group_by]
    template = _QUALITY if ctx.query.version == 1 else _QUALITY_CONTROLLED
    rows = per_member(
        sql.fill(template),
        cell_keys,
        col("member_id", "r"),
        key=ctx.member_key(col("member_id", "r")),  # rows outside enrollment have no mm row
    )
    for dim, values in ctx.query.filters:
        rows = rows.where(matches(col(dim.value, "m"), values))
    return one_row_per_member_month(rows, ctx.group_by) if one_per_member_month else rows


@implements("ops.data_quality", version=1)
@implements("ops.data_quality", version=2)
def data_quality(ctx: BuildContext) -> exp.Select:
    """Medical and pharmacy rows dated in the period by month: outside enrollment, unknown
    codes, missing place of service or bill type; from version 2, the claims and paid dollars
    of the months with control totals beside the declared ones."""
    cell_keys = [d.value for d in ctx.group_by]
    declared = _declared_months(ctx) if ctx.query.version != 1 else {}
    # Nothing declared: quality_rows is the spend rows alone, one per member month.
    rows = _quality_rows(ctx, one_per_member_month=not declared)
    query = member_cells(ctx, rows, cell_keys, ctx.statistics())
    quality_months = sql.fill(_QUALITY_MONTHS, carrier=sql.lit(ctx.carrier_id))
    ctes: list[tuple[str, exp.Expr]] = [
        *member_month_ctes(ctx, filtered=False),
        ("quality_months", quality_months),
        sql.later_versions(),
        ("spend", member_month_spend(ctx)),
    ]
    if ctx.query.version != 1:
        # Nothing declared in the period: no claims table is read a second time.
        claims = (
            sql.fill_query(_CONTROLLED_CLAIMS, **ctx.period_values())
            if declared
            else sql.fill(_NO_CONTROLLED_CLAIMS)
        )
        ctes += [
            ("controls", control_months(declared)),
            ("controlled_claims", claims),
            ("quality_rows", sql.fill_query(_QUALITY_ROWS)),
        ]
    return with_ctes(query, ctes)


def _declared_months(ctx: BuildContext) -> dict[Month, dict[str, ControlTotal]]:
    """The declared totals of the period's months, by month and table."""
    months: dict[Month, dict[str, ControlTotal]] = {}
    for total in ctx.control_totals.entries:
        if ctx.period.first <= total.month <= ctx.period.last:
            months.setdefault(total.month, {})[total.table] = total
    return months


def control_months(months: dict[Month, dict[str, ControlTotal]]) -> exp.Query:
    """The declared totals, one row per month with a declaration (a table without one in
    that month has a 0 flag); no row when nothing is declared."""
    selects: list[exp.Select] = []
    for month, tables in sorted(months.items()):
        columns: list[exp.Expr] = [sql.date_lit(month.first_day).as_("month_start")]
        for table, prefix in _CONTROL_PREFIXES.items():
            declared = tables.get(table)
            columns += [
                _bigint(1 if declared else 0).as_(f"{prefix}_declared"),
                _bigint(declared.claims if declared else 0).as_(f"{prefix}_claims"),
                _bigint(declared.paid_cents if declared else 0).as_(f"{prefix}_paid_cents"),
            ]
        selects.append(exp.select(*columns))
    if not selects:
        return sql.fill(_NO_CONTROLS)
    query: exp.Query = selects[0]
    for more in selects[1:]:
        query = exp.union(query, more, distinct=False)
    return query


def _bigint(value: int) -> exp.Expr:
    return sql.cast(sql.num(value), "BIGINT")


#: Claims tables with control totals, and the prefix of their statistics.
_CONTROL_PREFIXES = {"medical_claims": "medical", "pharmacy_claims": "pharmacy"}
assert set(_CONTROL_PREFIXES) == set(CONTROLLED_TABLES)

_NO_CONTROLS = """
SELECT CAST(NULL AS DATE) AS month_start,
       CAST(0 AS BIGINT) AS medical_declared, CAST(0 AS BIGINT) AS medical_claims,
       CAST(0 AS BIGINT) AS medical_paid_cents,
       CAST(0 AS BIGINT) AS pharmacy_declared, CAST(0 AS BIGINT) AS pharmacy_claims,
       CAST(0 AS BIGINT) AS pharmacy_paid_cents
WHERE 1 = 0
"""

_NO_CONTROLLED_CLAIMS = """
SELECT CAST(NULL AS VARCHAR) AS member_id, CAST(NULL AS DATE) AS month_start,
       CAST(0 AS BIGINT) AS medical_claims, CAST(0 AS BIGINT) AS medical_paid_cents,
       CAST(0 AS BIGINT) AS pharmacy_claims, CAST(0 AS BIGINT) AS pharmacy_paid_cents
WHERE 1 = 0
"""

# Per member and month of a declared table: its distinct claims and paid cents (every row).
_CONTROLLED_CLAIMS = """
SELECT c.member_id AS member_id, k.month_start AS month_start,
       COUNT(DISTINCT c.claim_id) AS medical_claims,
       SUM(CAST(c.paid_amount * 100 AS BIGINT)) AS medical_paid_cents,
       CAST(0 AS BIGINT) AS pharmacy_claims, CAST(0 AS BIGINT) AS pharmacy_paid_cents
FROM medical_claims AS c
JOIN controls AS k
  ON k.month_start = CAST(DATE_TRUNC('MONTH', c.claim_start_date) AS DATE)
 AND k.medical_declared = 1
WHERE c.claim_start_date BETWEEN :start AND :end
GROUP BY c.member_id, k.month_start
UNION ALL
SELECT p.member_id AS member_id, k.month_start AS month_start,
       CAST(0 AS BIGINT) AS medical_claims, CAST(0 AS BIGINT) AS medical_paid_cents,
       COUNT(DISTINCT p.claim_id) AS pharmacy_claims,
       SUM(CAST(p.paid_amount * 100 AS BIGINT)) AS pharmacy_paid_cents
FROM pharmacy_claims AS p
JOIN controls AS k
  ON k.month_start = CAST(DATE_TRUNC('MONTH', p.fill_date) AS DATE)
 AND k.pharmacy_declared = 1
WHERE p.fill_date BETWEEN :start AND :end
GROUP BY p.member_id, k.month_start
"""

# The rows of version 2: the member-month totals, the controlled claims, and one row without a
# member per declared month carrying the declared totals (no member contributes to them).
_QUALITY_ROWS = """
SELECT s.member_id AS member_id, s.month_start AS month_start,
       s.medical_rows AS medical_rows, s.pharmacy_rows AS pharmacy_rows,
       s.invalid_place_of_service AS invalid_place_of_service,
       s.invalid_revenue_code AS invalid_revenue_code, s.invalid_drg AS invalid_drg,
       s.missing_fields AS missing_fields,
       CAST(0 AS BIGINT) AS medical_claims_in_data, CAST(0 AS BIGINT) AS medical_claims_declared,
       CAST(0 AS BIGINT) AS medical_paid_in_data_cents,
       CAST(0 AS BIGINT) AS medical_paid_declared_cents,
       CAST(0 AS BIGINT) AS pharmacy_claims_in_data,
       CAST(0 AS BIGINT) AS pharmacy_claims_declared,
       CAST(0 AS BIGINT) AS pharmacy_paid_in_data_cents,
       CAST(0 AS BIGINT) AS pharmacy_paid_declared_cents
FROM spend AS s
UNION ALL
SELECT c.member_id, c.month_start, 0, 0, 0, 0, 0, 0,
       c.medical_claims, 0, c.medical_paid_cents, 0,
       c.pharmacy_claims, 0, c.pharmacy_paid_cents, 0
FROM controlled_claims AS c
UNION ALL
SELECT CAST(NULL AS VARCHAR), k.month_start, 0, 0, 0, 0, 0, 0,
       0, k.medical_claims, 0, k.medical_paid_cents,
       0, k.pharmacy_claims, 0, k.pharmacy_paid_cents
FROM controls AS k
"""

# As _QUALITY, over quality_rows; the row without a member is nobody (no claimant).
_QUALITY_CONTROLLED = """
SELECT CASE WHEN r.member_id IS NULL THEN 0 ELSE 1 END AS claimants,
       COALESCE(SUM(r.medical_rows), 0) AS medical_rows,
       COALESCE(SUM(r.pharmacy_rows), 0) AS pharmacy_rows,
       COALESCE(SUM(CASE WHEN e.member_id IS NULL THEN r.medical_rows ELSE 0 END), 0)
         AS medical_outside_enrollment,
       COALESCE(SUM(CASE WHEN e.member_id IS NULL THEN r.pharmacy_rows ELSE 0 END), 0)
         AS pharmacy_outside_enrollment,
       COALESCE(SUM(r.invalid_place_of_service), 0) AS invalid_place_of_service,
       COALESCE(SUM(r.invalid_revenue_code), 0) AS invalid_revenue_code,
       COALESCE(SUM(r.invalid_drg), 0) AS invalid_drg,
       COALESCE(SUM(r.missing_fields), 0) AS missing_fields,
       COALESCE(SUM(r.medical_claims_in_data), 0) AS medical_claims_in_data,
       COALESCE(SUM(r.medical_claims_declared), 0) AS medical_claims_declared,
       COALESCE(SUM(r.medical_paid_in_data_cents), 0) AS medical_paid_in_data_cents,
       COALESCE(SUM(r.medical_paid_declared_cents), 0) AS medical_paid_declared_cents,
       COALESCE(SUM(r.pharmacy_claims_in_data), 0) AS pharmacy_claims_in_data,
       COALESCE(SUM(r.pharmacy_claims_declared), 0) AS pharmacy_claims_declared,
       COALESCE(SUM(r.pharmacy_paid_in_data_cents), 0) AS pharmacy_paid_in_data_cents,
       COALESCE(SUM(r.pharmacy_paid_declared_cents), 0) AS pharmacy_paid_declared_cents
FROM quality_rows AS r
JOIN quality_months AS m ON m.month_start = r.month_start
LEFT JOIN mm AS e ON e.member_id = r.member_id AND e.month_start = r.month_start
"""
