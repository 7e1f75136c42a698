"""Utilization metrics: acute stays, ED, office and telehealth visits, prescriptions. Counts
use final-action claims only (see :mod:`carrier_node.query.sql`)."""

from __future__ import annotations

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.aggregate import (
    BuildContext,
    col,
    event_cells,
    member_month_cells,
)
from carrier_node.query.registry import implements

ED_REVENUE_CODES = ("0450", "0451", "0452", "0459", "0981")
ED_HCPCS = ("99281", "99282", "99283", "99284", "99285")
ED_PLACE_OF_SERVICE = "23"
EM_HCPCS_RANGE = ("99202", "99215")
OFFICE_PLACE_OF_SERVICE = "11"
TELEHEALTH_PLACES_OF_SERVICE = ("02", "10")

# --- acute stays ------------------------------------------------------------------------------

# Per cell and member (see metric_common.member_cells), as every event query below.
_STAYS_STARTING = """
SELECT 1 AS stay_members, COUNT(*) AS stays, SUM(GREATEST(s.stay_end - s.stay_start, 1)) AS days
FROM stays AS s
JOIN mm
  ON s.member_id = mm.member_id
 AND CAST(DATE_TRUNC('MONTH', s.stay_start) AS DATE) = mm.month_start
WHERE s.stay_start BETWEEN :start AND :end
"""


@implements("util.inpatient")
def inpatient(ctx: BuildContext) -> exp.Select:
    """Acute stays starting in the period, each in the member month of its start."""
    stats = ("stay_members", "stays", "days")
    numerator = event_cells(ctx, sql.fill(_STAYS_STARTING, **ctx.period_values()), "s", *stats)
    return member_month_cells(ctx, numerator, ctx.statistics(*stats), sql.stay_ctes())


# --- visits -----------------------------------------------------------------------------------


def _dated(alias: str, ctx: BuildContext) -> exp.Expr:
    return sql.in_period(col("claim_start_date", alias), ctx.period)


def _ed_line(alias: str) -> exp.Expr:
    return exp.or_(
        sql.codes_in(col("revenue_code", alias), ED_REVENUE_CODES),
        sql.codes_in(col("hcpcs", alias), ED_HCPCS),
        col("place_of_service", alias).eq(sql.lit(ED_PLACE_OF_SERVICE)),
    )


_ED_DAYS = """
SELECT DISTINCT v.member_id AS member_id, v.claim_start_date AS claim_start_date
FROM ed_lines AS v
"""

_ED = """
SELECT 1 AS visit_members, COUNT(*) AS visits
FROM ed_days AS r
JOIN mm
  ON r.member_id = mm.member_id
 AND CAST(DATE_TRUNC('MONTH', r.claim_start_date) AS DATE) = mm.month_start
"""


@implements("util.ed_visits")
def ed_visits(ctx: BuildContext) -> exp.Select:
    """Final-action ED lines of the period, one visit per member and claim_start_date."""
    lines = sql.final_action_lines(lambda a: exp.and_(_dated(a, ctx), _ed_line(a)))
    stats = ("visit_members", "visits")
    numerator = event_cells(ctx, sql.fill(_ED), "r", *stats)
    return member_month_cells(
        ctx,
        numerator,
        ctx.statistics(*stats),
        [sql.later_versions(), ("ed_lines", lines), ("ed_days", sql.fill(_ED_DAYS))],
    )


def _em_line(alias: str) -> exp.Expr:
    places = (OFFICE_PLACE_OF_SERVICE, *TELEHEALTH_PLACES_OF_SERVICE)
    return exp.and_(
        sql.code_range(col("hcpcs", alias), *EM_HCPCS_RANGE),
        sql.codes_in(col("place_of_service", alias), places),
    )


_EM_DAYS = """
SELECT v.member_id AS member_id, v.claim_start_date AS claim_start_date,
       MAX(CASE WHEN v.place_of_service = :office THEN 1 ELSE 0 END) AS office,
       MAX(CASE WHEN v.place_of_service = :office THEN 0 ELSE 1 END) AS telehealth
FROM em_lines AS v
GROUP BY v.member_id, v.claim_start_date
"""

_OFFICE = """
SELECT 1 AS visit_members, SUM(r.office) AS office_visits, SUM(r.telehealth) AS telehealth_visits
FROM em_days AS r
JOIN mm
  ON r.member_id = mm.member_id
 AND CAST(DATE_TRUNC('MONTH', r.claim_start_date) AS DATE) = mm.month_start
"""


@implements("util.office_visits")
def office_visits(ctx: BuildContext) -> exp.Select:
    """Final-action E/M lines (99202–99215) at the office (11) or by telehealth (02, 10), each
    kind counted once per member and claim_start_date."""
    lines = sql.final_action_lines(lambda a: exp.and_(_dated(a, ctx), _em_line(a)))
    days = sql.fill(_EM_DAYS, office=sql.lit(OFFICE_PLACE_OF_SERVICE))
    stats = ("visit_members", "office_visits", "telehealth_visits")
    numerator = event_cells(ctx, sql.fill(_OFFICE), "r", *stats)
    return member_month_cells(
        ctx,
        numerator,
        ctx.statistics(*stats),
        [sql.later_versions(), ("em_lines", lines), ("em_days", days)],
    )


# --- prescriptions ----------------------------------------------------------------------------

_SCRIPTS = """
SELECT 1 AS fill_members, COUNT(*) AS fills, SUM(COALESCE(r.days_supply, 0)) AS days_supply
FROM final_fills AS r
JOIN mm
  ON r.member_id = mm.member_id
 AND CAST(DATE_TRUNC('MONTH', r.fill_date) AS DATE) = mm.month_start
"""


@implements("util.scripts")
def scripts(ctx: BuildContext) -> exp.Select:
    """Final-action fills of the period and their days supply, in enrolled member months."""
    stats = ("fill_members", "fills", "days_supply")
    numerator = event_cells(ctx, sql.fill(_SCRIPTS), "r", *stats)
    return member_month_cells(
        ctx,
        numerator,
        ctx.statistics(*stats),
        sql.fill_ctes(ctx.period),
    )
