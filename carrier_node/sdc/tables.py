"""A query's result seen as a table for disclosure control: cells, their lines and margins.

A *line* is the set of cells that agree on every group-by dimension but one; its sum is a
*margin*. Anyone may learn margins from other releases (a total, a coarser grouping), so a
suppressed cell must not be derivable from the released cells of any of its lines together
with the line's margin.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from fedoversight.domain import CellKey


@dataclass(frozen=True)
class Table:
    keys: tuple[CellKey, ...]
    #: One additive, non-negative count per cell (the statistic the audit protects).
    values: tuple[int, ...]

    def lines(self) -> list[tuple[int, ...]]:
        """Index tuples of every line with at least two cells (and the whole table when the
        table has one dimension: its margin is the total)."""
        if not self.keys or not self.keys[0]:
            return []
        n_dims = len(self.keys[0])
        out: list[tuple[int, ...]] = []
        for dim in range(n_dims):
            groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
            for i, key in enumerate(self.keys):
                rest = tuple(v for j, (_, v) in enumerate(key) if j != dim)
                groups[rest].append(i)
            out.extend(tuple(g) for g in groups.values() if len(g) >= 2)
        return out


def line_margins(table: Table, lines: Sequence[tuple[int, ...]]) -> list[int]:
    return [sum(table.values[i] for i in line) for line in lines]
