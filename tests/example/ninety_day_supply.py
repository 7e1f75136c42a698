"""The worked example of docs/adding-a-metric.md: ``rx.ninety_day_supply``, the share of
final-action fills dispensed for 84 days or more (90-day fills cost plans less per day).

Everything the metric needs is in this one module, in three parts; in the project each part
goes to its own home (the guide says where):

1. the declaration (``fedoversight/catalogue.py``, in ``METRICS``);
2. the node's builder (a family module of ``carrier_node/query/metrics/``, here ``rx.py``);
3. the test oracle's reading of the definition (``fedoversight/testing/oracle.py``, in ``METRICS``).

Nothing else is written for it: the operator API lists it, policies may name it, nodes
advertise it, the aggregation layer gives its statistics their disclosure columns from their
declared kinds, disclosure control protects it and the coordinator combines it.
"""

from __future__ import annotations

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.aggregate import BuildContext, event_cells, member_month_ctes, with_ctes
from carrier_node.query.registry import implements
from fedoversight.catalogue import (
    ATTRIBUTION,
    FINAL_ACTION,
    MEMBER_DIMS,
    MetricSpec,
    count,
    members,
    ratio,
)
from fedoversight.testing import oracle

LONG_SUPPLY_DAYS = 84

# --- 1. the declaration -----------------------------------------------------------------------

SPEC = MetricSpec(
    name="rx.ninety_day_supply",
    version=1,
    title="90-day supply share",
    definition=(
        f"Final-action fills with days_supply of {LONG_SUPPLY_DAYS} or more ÷ all final-action"
        " fills." + FINAL_ACTION + ATTRIBUTION
    ),
    dimensions=MEMBER_DIMS,
    statistics=(
        members("fill_members", "distinct members with a fill"),
        count("fills", "final-action fills", "fill_members", bound=31),
        count(
            "long_fills",
            f"final-action fills of {LONG_SUPPLY_DAYS} days or more",
            "fill_members",
            bound=31,
            part_of="fills",
        ),
    ),
    figures=(ratio("ninety_day_share", "long fills ÷ all fills", "long_fills", "fills"),),
)

# --- 2. the node's builder --------------------------------------------------------------------

# Per cell and member (event_cells groups by both, then by cell).
_LONG_FILLS = """
SELECT 1 AS fill_members, COUNT(*) AS fills,
       COALESCE(SUM(CASE WHEN r.days_supply >= :days THEN 1 ELSE 0 END), 0) AS long_fills
FROM final_fills AS r
JOIN mm
  ON r.member_id = mm.member_id
 AND CAST(DATE_TRUNC('MONTH', r.fill_date) AS DATE) = mm.month_start
"""


@implements(SPEC)
def ninety_day_supply(ctx: BuildContext) -> exp.Select:
    """Final-action fills of the period in enrolled member months, and the long ones."""
    rows = sql.fill(_LONG_FILLS, days=sql.num(LONG_SUPPLY_DAYS))
    query = event_cells(ctx, rows, "r", *(s.name for s in ctx.statistics()))
    return with_ctes(query, [*member_month_ctes(ctx), ("final_fills", sql.final_fills(ctx.period))])


# --- 3. the oracle --------------------------------------------------------------------------


def _long_fill_facts(u: oracle._Union) -> oracle._Facts:
    fills = u.fills_in_period()
    long = (fills["_days_supply"] >= LONG_SUPPLY_DAYS).astype("int64")
    return {oracle.FILLS: u.attribute(fills.assign(_long=long))}


ORACLE = oracle._Metric(
    (*oracle._FILL_STATS, oracle._rows_of("long_fills", oracle.FILLS, "_long")),
    oracle._MEMBER_DIMS,
    _long_fill_facts,
)
