"""Raw cells: what the query layer computes and the disclosure layer protects.

A raw cell holds a cell's exact statistics and, beside each, what disclosure control needs of
it (:class:`Support`). Raw cells never leave the node: :mod:`carrier_node.disclosure` turns
them into the only tables that are ever sent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fedoversight.domain import CellKey, QuerySpec
from fedoversight.histogram import Histogram

RawValue = int | Histogram


@dataclass(frozen=True)
class Support:
    """What disclosure control needs of one statistic of one cell (or of one histogram bin),
    computed in the same pass as the statistic (see :mod:`carrier_node.query.aggregate`). Never
    leaves the node."""

    #: Members with a non-zero contribution (for MEMBERS: the value itself).
    members: int
    #: The least and greatest record key of those members (None when there are none, and for a
    #: total no member contributes to).
    key_low: str | None = None
    key_high: str | None = None
    #: The largest absolute contribution of one member (of one row, for a total no member
    #: contributes to); 0 where not computed (counts of people and events).
    top: int = 0
    #: For a part of another statistic: the members contributing to the rest (whole less part).
    rest: int = 0
    #: Under differential privacy: the statistic with each member's contribution clamped to
    #: its bound (None when not computed).
    clamped: int | None = None


@dataclass(frozen=True)
class RawCell:
    key: CellKey
    values: tuple[tuple[str, RawValue], ...]
    #: Per statistic (histograms excepted), what disclosure control needs of it.
    supports: tuple[tuple[str, Support], ...] = ()
    #: Per histogram statistic, the support of each bin (None for an empty bin).
    bins: tuple[tuple[str, tuple[Support | None, ...]], ...] = ()

    def support(self, name: str) -> Support:
        return self._supports[name]

    def bin_supports(self, name: str) -> tuple[Support | None, ...]:
        return dict(self.bins)[name]

    @functools.cached_property
    def _supports(self) -> dict[str, Support]:
        return dict(self.supports)

    def value(self, name: str) -> int:
        """An integer statistic (counts, members, cents)."""
        value = dict(self.values)[name]
        if not isinstance(value, int):
            raise TypeError(f"statistic {name} is not an integer")
        return value

    def histogram(self, name: str) -> Histogram:
        value = dict(self.values)[name]
        if not isinstance(value, Histogram):
            raise TypeError(f"statistic {name} is not a histogram")
        return value


@dataclass(frozen=True)
class RawTable:
    query: QuerySpec
    cells: tuple[RawCell, ...]
