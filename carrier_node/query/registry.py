"""Which builder evaluates each catalogue metric.

A builder registers itself against its catalogue declaration with :func:`implements`, next to
its definition: the declaration is looked up when the module is imported, so a builder of a
metric the catalogue does not declare (or a second builder of one) fails at import; a builder
is used only while its metric is declared; and
:func:`missing` names every declared metric this node cannot evaluate (a test keeps it empty).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from carrier_node.query.aggregate import BuildContext, Builder
from fedoversight import catalogue
from fedoversight.errors import UnknownMetricError
from fedoversight.metricspec import MetricSpec

_BUILDERS: dict[str, Builder] = {}


def implements(*metrics: str | MetricSpec, version: int = 1) -> Callable[[Builder], Builder]:
    """Register the decorated builder for the catalogue metrics named (at ``version``), or
    declared, in ``metrics``."""
    specs = [m if isinstance(m, MetricSpec) else catalogue.get_metric(m, version) for m in metrics]

    def register(builder: Builder) -> Builder:
        for spec in specs:
            if spec.key in _BUILDERS:
                raise RuntimeError(f"{spec.key} has two builders")
            _BUILDERS[spec.key] = builder
        return builder

    return register


def implemented() -> frozenset[str]:
    """The declared metrics (``name@version``) this node can evaluate."""
    return frozenset(s.key for s in catalogue.metrics() if s.key in _BUILDERS)


def missing() -> tuple[str, ...]:
    """Declared metrics no builder implements."""
    return tuple(s.key for s in catalogue.metrics() if s.key not in _BUILDERS)


def build(ctx: BuildContext) -> exp.Select:
    """The expression of ``ctx``'s query (see :mod:`carrier_node.query.metrics`)."""
    key = f"{ctx.query.metric}@{ctx.query.version}"
    try:
        catalogue.get_metric(ctx.query.metric, ctx.query.version)
        builder = _BUILDERS[key]
    except (KeyError, UnknownMetricError):
        raise UnknownMetricError(f"this node does not implement {key}") from None
    return builder(ctx)
