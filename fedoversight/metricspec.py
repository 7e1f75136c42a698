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
    """What a statistic is, which decides how a node protects it (see ``docs/disclosure.md``).

    Every kind but ``MEMBERS`` is a sum of per-member contributions; the members with a
    non-zero contribution are the statistic's *support*, the people it rests on."""

    MEMBERS = "members"  # distinct people in the cell (each contributes one)
    COUNT = "count"  # an additive count of events or member months (a few per member)
    AMOUNT = "amount"  # an additive quantity one member can contribute much of (days, supply)
    CENTS = "cents"  # an additive dollar total in integer cents
    HISTOGRAM = "histogram"  # fixed log-spaced bins of per-member dollar totals

    @property
    def magnitude(self) -> bool:
        """Perturbed in proportion to the largest contribution (dollars and quantities)."""
        return self in (StatKind.AMOUNT, StatKind.CENTS)


@dataclass(frozen=True)
class StatisticSpec:
    name: str
    kind: StatKind
    description: str
    #: The MEMBERS statistic of the same cell whose people are the only ones who may
    #: contribute to this one (a bound on its support, reported when it is withheld).
    rests_on: str | None = None
    #: A statistic of the same cell this one is a part of (screened of eligible, generic of
    #: all fills): the rest, whole less part, is an *excluded count* that anyone can work out,
    #: so it must not rest on too few members either.
    part_of: str | None = None
    #: The most one member can contribute to the statistic in one member month (in the
    #: period, for metrics whose cells are people); differential privacy clamps each member's
    #: contribution to it. None for MEMBERS (one each) and HISTOGRAM.
    bound: int | None = None
    #: False for a total no member contributes to (rebates, paid by manufacturers): its
    #: largest contributions are its own rows, and there are no people for a floor to count.
    by_members: bool = True
    #: For a total the carrier declares rather than one summed from its members' rows (control
    #: totals): the statistic of the same cell, of the same kind, that it is compared with. It
    #: is protected with that statistic's people — their support, record keys and largest
    #: contribution — so where the two values are equal their consistent noise is the same,
    #: and releasing both discloses no more than releasing one.
    mirrors: str | None = None


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

    def __post_init__(self) -> None:
        """The declarations disclosure control relies on hold together (a new metric cannot
        forget them): every statistic's support and parts name statistics of the same cell."""
        kinds = {s.name: s.kind for s in self.statistics}
        if len(kinds) != len(self.statistics):
            raise ValueError(f"{self.name}: a statistic is declared twice")
        for s in self.statistics:
            if s.rests_on is not None and kinds.get(s.rests_on) is not StatKind.MEMBERS:
                raise ValueError(f"{self.name}.{s.name} rests on no members statistic")
            if s.part_of is not None and kinds.get(s.part_of) is not s.kind:
                raise ValueError(f"{self.name}.{s.name} is part of no statistic of its kind")
            if s.mirrors is not None:
                mirrored = next((m for m in self.statistics if m.name == s.mirrors), None)
                if mirrored is None or mirrored.kind is not s.kind or mirrored.mirrors:
                    raise ValueError(f"{self.name}.{s.name} mirrors no summed statistic")
                if s.part_of is not None or s.rests_on != mirrored.rests_on:
                    raise ValueError(f"{self.name}.{s.name} rests on other people than its mirror")
            summed = s.kind not in (StatKind.MEMBERS, StatKind.HISTOGRAM)
            if summed and s.by_members and (s.bound is None or s.rests_on is None):
                raise ValueError(f"{self.name}.{s.name} declares no per-member bound or people")

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def per_person(self) -> bool:
        """Whether a cell's rows are people (one each, attributed once for the period) rather
        than member months (cost.distribution, high-cost claimants, quality measures)."""
        return not self.dimensions & {Dimension.MONTH, Dimension.QUARTER}

    def months_per_cell(self, group_by: tuple[Dimension, ...], months: int) -> int:
        """The most member months of one member a cell can hold (1 for people)."""
        if self.per_person or Dimension.MONTH in group_by:
            return 1
        return min(3, months) if Dimension.QUARTER in group_by else months

    def contribution_clamp(
        self, stat: StatisticSpec, group_by: tuple[Dimension, ...], months: int
    ) -> int | None:
        """The most one member may contribute to ``stat`` in one cell under differential
        privacy (its declared bound per member month, times the member months a cell can
        hold); None where nothing is clamped (members, histograms, totals of no member)."""
        if stat.bound is None or not stat.by_members:
            return None
        return stat.bound * self.months_per_cell(group_by, months)

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
