"""Enrollment metrics: member months, and adds, terms and deaths (``enrollment.churn``)."""

from __future__ import annotations

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.aggregate import (
    KEY,
    BuildContext,
    col,
    distinct_members,
    keys,
    member_month_ctes,
    member_month_totals,
    members_counted,
    with_ctes,
)
from carrier_node.query.registry import implements


@implements("enrollment.member_months")
def member_months(ctx: BuildContext) -> exp.Select:
    """Every group of the period's enrolled member months is a cell."""
    query = member_month_totals(
        ctx.group_by, [col(d.value) for d in ctx.group_by], clamped=ctx.clamped
    )
    return with_ctes(query, member_month_ctes(ctx))


# A member is enrolled in a month when any span overlaps it (filters do not apply here: a member
# who switched plans was enrolled the month before, whatever that month's plan).
_ENROLLED_AROUND = """
SELECT DISTINCT e.member_id AS member_id, x.previous_month_start AS previous_month_start,
       x.next_month_start AS next_month_start
FROM eligibility AS e
JOIN around AS x
  ON e.enrollment_start_date <= x.month_end
 AND (e.enrollment_end_date IS NULL OR e.enrollment_end_date >= x.month_start)
"""

# One row per member month (the in-force span's; each neighbour month joins once).
_CHURN = """
SELECT mm.*,
       CASE WHEN e_prev.member_id IS NULL THEN 1 ELSE 0 END AS added,
       CASE WHEN e_next.member_id IS NULL THEN 1 ELSE 0 END AS termed,
       CASE WHEN mm.death_date BETWEEN mm.month_start AND mm.month_end THEN 1 ELSE 0 END AS died
FROM mm
LEFT JOIN enrolled AS e_prev
  ON e_prev.member_id = mm.member_id AND e_prev.next_month_start = mm.month_start
LEFT JOIN enrolled AS e_next
  ON e_next.member_id = mm.member_id AND e_next.previous_month_start = mm.month_start
"""


@implements("enrollment.churn")
def churn(ctx: BuildContext) -> exp.Select:
    """Per member month: an add when not enrolled the month before, a term when not enrolled
    the month after, a death when the in-force span's death_date is in the month."""
    rows = "churn_rows"
    query = member_month_totals(ctx.group_by, keys(ctx, member_table=rows), rows, ctx.clamped)
    member, key = col("member_id", rows), col(KEY, rows)
    for name, flag in (("adds", "added"), ("terms", "termed"), ("deaths", "died")):
        query = query.select(
            *distinct_members(name, member, key, col(flag, rows).eq(1)), copy=False
        )
    query = members_counted(query, ctx.group_by)
    return with_ctes(
        query,
        [
            *member_month_ctes(ctx, spans=True),  # the span's death date
            ("around", exp.select("*").from_(sql.months_around_cte(ctx.period))),
            ("enrolled", sql.fill(_ENROLLED_AROUND)),
            (rows, sql.fill(_CHURN)),
        ],
    )
