"""How this node evaluates each catalogue metric: one query per metric, built as expressions.

Every builder returns a SELECT whose columns are the query's group-by dimensions (named by the
dimension) and the metric's declared statistics (named by the statistic), one row per cell,
each statistic followed by what disclosure control needs of it (:func:`disclosure_columns`:
the members it rests on, their record keys, the largest contribution of one member; see
:mod:`carrier_node.query.aggregate`). A metric with a histogram statistic returns one row per
cell and non-empty bin instead (see :func:`histogram_columns`). The engine runs the query where
the data lives and never looks at a row; none of the disclosure columns leaves the node. One
module per family (enrollment, cost, util, outcome, rx, quality, ops) holds its builders, each
registered against its catalogue declaration (:func:`carrier_node.query.registry.implements`);
the aggregation layer they share is :mod:`carrier_node.query.aggregate` (generated from the
declared statistic kinds) and the shared query pieces :mod:`carrier_node.query.sql`.

A member's contribution is their part of the cell's statistic: claim rows and events are
summed per member and cell first (per-member metrics — cost.distribution,
cost.high_cost_claimants and the quality measures — have one row per person). Rebates have no
member contributions: their largest contribution is their largest row.
"""

from __future__ import annotations

# Importing a family registers its builders.
from carrier_node.query.metrics import cost, enrollment, ops, outcome, quality, rx, util
from carrier_node.query.registry import build, implemented, missing

__all__ = [
    "build",
    "cost",
    "enrollment",
    "implemented",
    "missing",
    "ops",
    "outcome",
    "quality",
    "rx",
    "util",
]
