"""What a request would cost, estimated from the request alone, before anything runs.

The size of an answer is the number of its cells: per query, the product of its group-by
dimensions' cardinalities (the months, quarters or years of the period; a filter's values where
the query filters on the dimension; otherwise the dimension's closed set, or a generous bound
for an open one), summed over the queries. Nothing of the carrier's data is read: the estimate
is an upper bound the node can compute, and say, before admitting a request. The policy's
``max_request_cells`` is the limit (see :class:`carrier_node.policy.Policy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedoversight.dimensions import AGE_BANDS, SERVICE_CATEGORIES_1, Dimension
from fedoversight.domain import QuerySpec, RequestSpec
from fedoversight.periods import Period

#: Values a dimension can take in one carrier's answer, "unknown" included: the closed sets'
#: sizes, and bounds for the open ones (states and territories, a carrier's plan codes, the
#: drug classes of the code list).
CARDINALITY: dict[Dimension, int] = {
    Dimension.CARRIER: 1,
    Dimension.PROGRAM: 3,
    Dimension.PLAN_CODE: 30,
    Dimension.AGE_BAND: len(AGE_BANDS) + 1,
    Dimension.SEX: 4,
    Dimension.STATE: 60,
    Dimension.MEDICARE_PRIMARY: 3,
    Dimension.ENROLLEE_TYPE: 4,
    Dimension.SERVICE_CATEGORY: len(SERVICE_CATEGORIES_1) + 1,
    Dimension.SERVICE_CATEGORY_2: 40,
    Dimension.DRUG_CLASS: 60,
}


@dataclass(frozen=True)
class Estimate:
    """A request's estimated cells, in all and per query (in order)."""

    per_query: tuple[int, ...]

    @property
    def cells(self) -> int:
        return sum(self.per_query)


def _time_values(dimension: Dimension, period: Period) -> int:
    months = period.months()
    if dimension is Dimension.MONTH:
        return len(months)
    if dimension is Dimension.QUARTER:
        return len({(m.year, (m.month - 1) // 3) for m in months})
    return len({m.year for m in months})


def query_cells(query: QuerySpec, period: Period) -> int:
    filters = dict(query.filters)
    sizes = []
    for dimension in query.group_by:
        if dimension in filters:
            sizes.append(len(filters[dimension]))
        elif dimension in (Dimension.MONTH, Dimension.QUARTER, Dimension.YEAR):
            sizes.append(_time_values(dimension, period))
        else:
            sizes.append(CARDINALITY[dimension])
    return math.prod(sizes)


def estimate(request: RequestSpec) -> Estimate:
    return Estimate(tuple(query_cells(q, request.period) for q in request.queries))
