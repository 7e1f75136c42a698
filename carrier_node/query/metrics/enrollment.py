"""Enrollment metrics: member months, and adds, terms and deaths (``enrollment.churn``)."""

from __future__ import annotations

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.aggregate import (
    KEY,
    MM,
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
from fedoversight.periods import Month


@implements("enrollment.member_months")
def member_months(ctx: BuildContext) -> exp.Select:
    """Every group of the period's enrolled member months is a cell."""
    query = member_month_totals(
        ctx.group_by, [col(d.value, MM) for d in ctx.group_by], clamped=ctx.clamped
    )
    return with_ctes(query, member_month_ctes(ctx))


# A member is enrolled in a month when any span overlaps it (filters do not apply here: a member
# who switched plans was enrolled the month before, whatever that month's plan). A member with
# one span (``single_span``, see sql.member_months) is enrolled exactly in that span's months: a
# member month of it is an add when the span starts in that month, a term when it ends there.
# For members with several spans (``multi_span``, see sql.multi_span_members), their enrolled
# months around the period are one row of flags (``in_00`` the month before the period,
# ``in_01`` its first month, ...), grouped from their spans: a member month is an add when its
# previous month's flag is 0, a term when its next month's is. (Joining every member month to
# a row of flags, one span's or several's, was most of the metric's cost; looking neighbour
# months up by joining the member months to the enrolled months twice, more still.)
_ENROLLED_FLAGS = """
SELECT e.member_id AS member_id, :grouped_flags
FROM eligibility AS e
WHERE e.enrollment_start_date <= :last_day
  AND (e.enrollment_end_date IS NULL OR e.enrollment_end_date >= :first_day)
  AND e.member_id IN (SELECT x.member_id FROM multi_span AS x)
GROUP BY e.member_id
"""

# One row per member month (the in-force span's), with whether it is an add, a term, a death.
# A member month of several spans without flags (no member id) is left out, as a join leaves it.
_CHURN = """
SELECT mm.*,
       CASE WHEN mm.single_span = 1
            THEN CASE WHEN mm.span_start < mm.month_start THEN 0 ELSE 1 END
            ELSE CASE WHEN :previous = 1 THEN 0 ELSE 1 END END AS added,
       CASE WHEN mm.single_span = 1
            THEN CASE WHEN mm.span_end IS NULL OR mm.span_end > mm.month_end THEN 0 ELSE 1 END
            ELSE CASE WHEN :next = 1 THEN 0 ELSE 1 END END AS termed,
       CASE WHEN mm.death_date BETWEEN mm.month_start AND mm.month_end THEN 1 ELSE 0 END AS died
FROM mm
LEFT JOIN enrolled AS f ON f.member_id = mm.member_id
WHERE mm.single_span = 1 OR f.member_id IS NOT NULL
"""


def _flag(index: int) -> str:
    return f"in_{index:02d}"


def _enrolled_flags(ctx: BuildContext) -> exp.Query:
    """Per member with several spans, one overlapping the period or a month beside it: a flag
    (0 or 1) per such month, whether a span overlaps it. Reads the CTE ``multi_span``."""
    months = _months_around(ctx)
    start, end = col("enrollment_start_date", "e"), col("enrollment_end_date", "e")
    grouped: list[exp.Expr] = []
    for index, month in enumerate(months):
        overlaps = exp.and_(
            start.copy() <= sql.date_lit(month.last_day),
            exp.or_(end.copy().is_(exp.null()), end.copy() >= sql.date_lit(month.first_day)),
        )
        case = exp.Case().when(overlaps, sql.num(1)).else_(sql.num(0))
        grouped.append(exp.Max(this=case).as_(_flag(index)))
    tree = sql.fill_query(
        _ENROLLED_FLAGS,
        {"grouped_flags": grouped},
        first_day=sql.date_lit(months[0].first_day),
        last_day=sql.date_lit(months[-1].last_day),
    )
    return tree


def _months_around(ctx: BuildContext) -> list[Month]:
    first = ctx.period.first
    before = Month(first.year - 1, 12) if first.month == 1 else Month(first.year, first.month - 1)
    return [before, *ctx.period.months(), ctx.period.last.next()]


def _neighbour_flag(ctx: BuildContext, offset: int) -> exp.Expr:
    """The flag of the month ``offset`` months from the member month's own (-1 or 1)."""
    case = exp.Case()
    for index, month in enumerate(ctx.period.months(), start=1):
        case = case.when(
            col("month_start", MM).eq(sql.date_lit(month.first_day)),
            col(_flag(index + offset), "f"),
            copy=False,
        )
    return case


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
    churn_rows = sql.fill(_CHURN, previous=_neighbour_flag(ctx, -1), next=_neighbour_flag(ctx, 1))
    month_ctes = member_month_ctes(ctx, spans=True)  # the span's death date
    if not any(name == "multi_span" for name, _ in month_ctes):
        month_ctes.insert(0, sql.multi_span_members())
    return with_ctes(
        query,
        [
            *month_ctes,
            ("enrolled", _enrolled_flags(ctx)),
            (rows, churn_rows),
        ],
    )
