"""Query suites that stand for what the agency asks of every carrier each month."""

from __future__ import annotations

from fedoversight import catalogue, wire
from fedoversight.dimensions import Dimension
from fedoversight.domain import QuerySpec


def monthly_suite(totals: bool = False) -> list[QuerySpec]:
    """Every metric of the catalogue by month (and by its category where it needs one); with
    ``totals``, each metric's whole-period figure as well (or by category only)."""
    out = []
    for spec in catalogue.latest_metrics():
        category = [min(spec.one_of)] if spec.one_of else []
        if totals:
            out.append(wire.make_query(spec.name, spec.version, category))
        if Dimension.MONTH in spec.dimensions:
            out.append(wire.make_query(spec.name, spec.version, [Dimension.MONTH, *category]))
        elif not totals:
            out.append(wire.make_query(spec.name, spec.version, category))
    return out
