"""The shape of a metric declaration (the declarations themselves are in
:mod:`fedoversight.catalogue`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from fedoversight.dimensions import Dimension
from fedoversight.errors import InvalidRequestError


class StatKind(StrEnum):
    COUNT = "count"  # an additive integer count (events, member months, fills)
    MEMBERS = "members"  # distinct people in the cell: the disclosure floor applies
    CENTS = "cents"  # an additive dollar total in integer cents: the dominance rule applies
    HISTOGRAM = "histogram"  # fixed log-spaced bins of per-member dollar totals


@dataclass(frozen=True)
class StatisticSpec:
    name: str
    kind: StatKind
    description: str
    #: For a COUNT or CENTS statistic: the MEMBERS statistic of the same cell it rests on.
    rests_on: str | None = None


#: Inputs of a figure formula: combined statistic values by name (histograms as
#: :class:`fedoversight.histogram.Histogram`), plus ``months_in_cell``.
FigureInputs = Mapping[str, object]


@dataclass(frozen=True)
class FigureSpec:
    name: str
    description: str
    inputs: tuple[str, ...]
    formula: Callable[[FigureInputs], float]


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    description: str
    default: float
    minimum: float = -math.inf
    maximum: float = math.inf


@dataclass(frozen=True)
class MetricSpec:
    name: str
    version: int
    title: str
    definition: str
    dimensions: frozenset[Dimension]
    statistics: tuple[StatisticSpec, ...]
    figures: tuple[FigureSpec, ...] = ()
    parameters: tuple[ParameterSpec, ...] = ()
    #: Dimensions of which a query must group by exactly one (e.g. a service category level).
    one_of: frozenset[Dimension] = field(default_factory=frozenset)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def statistic(self, name: str) -> StatisticSpec:
        for s in self.statistics:
            if s.name == name:
                return s
        raise KeyError(name)

    def check_query(
        self,
        group_by: tuple[Dimension, ...],
        filters: Mapping[Dimension, tuple[str, ...]],
        parameters: Mapping[str, float],
    ) -> dict[str, float]:
        """Validate a query's shape; return its parameters with defaults filled in."""
        if len(set(group_by)) != len(group_by):
            raise InvalidRequestError("a dimension is grouped twice")
        for dim in (*group_by, *filters):
            if dim not in self.dimensions:
                raise InvalidRequestError(f"{self.name} does not accept dimension {dim}")
        if self.one_of and len(self.one_of.intersection(group_by)) != 1:
            names = ", ".join(sorted(self.one_of))
            raise InvalidRequestError(f"{self.name} groups by exactly one of: {names}")
        known = {p.name: p for p in self.parameters}
        for name in parameters:
            if name not in known:
                raise InvalidRequestError(f"{self.name} has no parameter {name!r}")
        out: dict[str, float] = {}
        for p in self.parameters:
            value = float(parameters.get(p.name, p.default))
            if not (math.isfinite(value) and p.minimum <= value <= p.maximum):
                raise InvalidRequestError(f"parameter {p.name} out of range")
            out[p.name] = value
        return out


