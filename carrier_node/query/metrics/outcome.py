"""Outcome metrics: 30-day readmissions after acute stays."""

from __future__ import annotations

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.aggregate import BuildContext, event_cells, member_month_ctes, with_ctes
from carrier_node.query.registry import implements

READMISSION_DAYS = 30

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


@implements("outcome.readmission_30d")
def readmission_30d(ctx: BuildContext) -> exp.Select:
    """Index stays ending in the period (in the member month of their end), and those followed
    by any acute stay starting 1 to 30 days after their end."""
    query = event_cells(ctx, sql.fill(_READMISSION), "r", *(s.name for s in ctx.statistics()))
    index = sql.fill(_INDEX_STAYS, days=sql.num(READMISSION_DAYS), **ctx.period_values())
    return with_ctes(query, [*member_month_ctes(ctx), *sql.stay_ctes(), ("index_stays", index)])
