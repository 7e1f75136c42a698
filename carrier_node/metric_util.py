"""Utilization metrics (acute stays, ED, office and telehealth visits, prescriptions) and
30-day readmissions. Counts use final-action claims only (see :mod:`carrier_node.sql`)."""

from __future__ import annotations

from sqlglot import exp

from carrier_node import sql
from carrier_node.metric_common import (
    BuildContext,
    col,
    keys,
    member_cells,
    member_month_cells,
    member_month_ctes,
    per_member,
    with_ctes,
)

ED_REVENUE_CODES = ("0450", "0451", "0452", "0459", "0981")
ED_HCPCS = ("99281", "99282", "99283", "99284", "99285")
ED_PLACE_OF_SERVICE = "23"
EM_HCPCS_RANGE = ("99202", "99215")
OFFICE_PLACE_OF_SERVICE = "11"
TELEHEALTH_PLACES_OF_SERVICE = ("02", "10")
READMISSION_DAYS = 30

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


def _events(ctx: BuildContext, per_member_rows: exp.Select, member: str, *names: str) -> exp.Select:
    """Cells of the statistics ``names`` from ``per_member_rows`` (aggregates over event rows
    joined to ``mm``, whose member column is ``member``), grouped by cell and member first."""
    cell_keys = keys(ctx)
    rows = per_member(per_member_rows, cell_keys, col("member_id", member))
    return member_cells(ctx, rows, [k.name for k in cell_keys], ctx.statistics(*names))


def inpatient(ctx: BuildContext) -> exp.Select:
    """Acute stays starting in the period, each in the member month of its start."""
    stats = ("stay_members", "stays", "days")
    numerator = _events(ctx, sql.fill(_STAYS_STARTING, **ctx.period_values()), "s", *stats)
    return member_month_cells(ctx, numerator, ctx.statistics(*stats), sql.stay_ctes())


_INDEX_STAYS = """
SELECT i.member_id AS member_id, CAST(DATE_TRUNC('MONTH', i.stay_end) AS DATE) AS month_start,
       CASE WHEN EXISTS (
         SELECT 1 FROM stays AS n
         WHERE n.member_id = i.member_id
           AND n.stay_start - i.stay_end BETWEEN 1 AND :days
       ) THEN 1 ELSE 0 END AS readmitted
FROM stays AS i
WHERE i.stay_end BETWEEN :start AND :end
"""

_READMISSION = """
SELECT 1 AS stay_members, COUNT(*) AS index_stays, COALESCE(SUM(r.readmitted), 0) AS readmissions
FROM index_stays AS r
JOIN mm ON r.member_id = mm.member_id AND r.month_start = mm.month_start
"""


def readmission_30d(ctx: BuildContext) -> exp.Select:
    """Index stays ending in the period (in the member month of their end), and those followed
    by any acute stay starting 1 to 30 days after their end."""
    query = _events(ctx, sql.fill(_READMISSION), "r", *(s.name for s in ctx.statistics()))
    index = sql.fill(_INDEX_STAYS, days=sql.num(READMISSION_DAYS), **ctx.period_values())
    return with_ctes(query, [*member_month_ctes(ctx), *sql.stay_ctes(), ("index_stays", index)])


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


def ed_visits(ctx: BuildContext) -> exp.Select:
    """Final-action ED lines of the period, one visit per member and claim_start_date."""
    lines = sql.final_action_lines(lambda a: exp.and_(_dated(a, ctx), _ed_line(a)))
    stats = ("visit_members", "visits")
    numerator = _events(ctx, sql.fill(_ED), "r", *stats)
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


def office_visits(ctx: BuildContext) -> exp.Select:
    """Final-action E/M lines (99202–99215) at the office (11) or by telehealth (02, 10), each
    kind counted once per member and claim_start_date."""
    lines = sql.final_action_lines(lambda a: exp.and_(_dated(a, ctx), _em_line(a)))
    days = sql.fill(_EM_DAYS, office=sql.lit(OFFICE_PLACE_OF_SERVICE))
    stats = ("visit_members", "office_visits", "telehealth_visits")
    numerator = _events(ctx, sql.fill(_OFFICE), "r", *stats)
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


def scripts(ctx: BuildContext) -> exp.Select:
    """Final-action fills of the period and their days supply, in enrolled member months."""
    stats = ("fill_members", "fills", "days_supply")
    numerator = _events(ctx, sql.fill(_SCRIPTS), "r", *stats)
    return member_month_cells(
        ctx,
        numerator,
        ctx.statistics(*stats),
        [("final_fills", sql.final_fills(ctx.period))],
    )
