"""The interval audit of a suppression pattern (the usual linear-programming audit).

For each suppressed cell, the attacker's feasible values are those consistent with every
released cell, every known margin and non-negativity. The cell is protected when that interval
is at least ``protection`` wide, so its true value is not pinned down. Margins resting on
fewer than ``protection`` units are treated as unknown (they would themselves be suppressed);
every other margin is assumed known, which is the cautious reading. What the known margins
alone already reveal (the interval with every cell of the table hidden) is the margins'
releases' to protect, not this table's: a cell is exposed when the released cells narrow it
below ``protection`` and below that baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from carrier_node.sdc.tables import Table, line_margins


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low


def intervals(table: Table, suppressed: Collection[int], protection: int) -> dict[int, Interval]:
    """Feasible interval of every suppressed cell given everything else."""
    hidden = sorted(suppressed)
    if not hidden:
        return {}
    column = {cell: j for j, cell in enumerate(hidden)}
    lines = table.lines()
    margins = line_margins(table, lines)
    rows: list[list[float]] = []
    rhs: list[float] = []
    for line, margin in zip(lines, margins, strict=True):
        if margin < protection:
            continue
        members = [i for i in line if i in column]
        if not members:
            continue
        row = [0.0] * len(hidden)
        for i in members:
            row[column[i]] = 1.0
        rows.append(row)
        rhs.append(float(margin - sum(table.values[i] for i in line if i not in column)))
    if not rows:
        return {cell: Interval(0.0, math.inf) for cell in hidden}
    if _disjoint(rows):
        return _disjoint_intervals(hidden, rows, rhs)
    return _lp_intervals(hidden, rows, rhs)


def _lp_intervals(
    hidden: list[int], rows: list[list[float]], rhs: list[float]
) -> dict[int, Interval]:
    """Each hidden cell's least and greatest value under the constraints, by two LPs."""
    out: dict[int, Interval] = {}
    a_eq, b_eq = np.array(rows), np.array(rhs)
    bounds = [(0.0, None)] * len(hidden)
    for j, cell in enumerate(hidden):
        c = np.zeros(len(hidden))
        c[j] = 1.0
        low = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        high = linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        lo = float(low.fun) if low.status == 0 else 0.0
        hi = math.inf if high.status == 3 else (-float(high.fun) if high.status == 0 else math.inf)
        out[cell] = Interval(lo, hi)
    return out


def _disjoint(rows: list[list[float]]) -> bool:
    """No hidden cell is in two constraints (a one-dimensional table, for one)."""
    return bool(np.all(np.array(rows).sum(axis=0) <= 1.0))


def _disjoint_intervals(
    hidden: list[int], rows: list[list[float]], rhs: list[float]
) -> dict[int, Interval]:
    """The LP's answer in closed form when the constraints share no cell: a cell alone in its
    constraint is its right-hand side; one of several non-negative cells summing to ``r`` lies
    anywhere in [0, r]; a cell in no constraint in [0, ∞)."""
    out = {cell: Interval(0.0, math.inf) for cell in hidden}
    for row, total in zip(rows, rhs, strict=True):
        members = [hidden[j] for j, v in enumerate(row) if v]
        for cell in members:
            out[cell] = Interval(total, total) if len(members) == 1 else Interval(0.0, total)
    return out


def exposed_sided(
    table: Table, suppressed: Collection[int], required: Mapping[int, float],
    baseline: Callable[[], Mapping[int, Interval]] | None = None,
) -> list[int]:
    """Suppressed cells an analyst can bound, from above or from below, closer to their true
    value than ``required[cell]`` (the p% rule's protection of a dollar total: its upper bound
    must exceed it, and its lower bound fall short of it, by at least p% of it), and closer
    than with the whole table hidden. Every margin is taken as known."""
    found = intervals(table, suppressed, 1)

    def slack(iv: Interval, cell: int) -> float:
        value = table.values[cell]
        return min(iv.high - value, value - iv.low)

    weak = [cell for cell, iv in found.items()
            if cell in required and slack(iv, cell) < required[cell]]
    if not weak:
        return []
    base = baseline() if baseline is not None else intervals(table, range(len(table.keys)), 1)
    return sorted(c for c in weak if slack(found[c], c) < slack(base[c], c) - 1e-9)


def exposed(
    table: Table, suppressed: Collection[int], protection: int,
    baseline: Callable[[], Mapping[int, Interval]] | None = None,
) -> list[int]:
    """Suppressed cells the released cells narrow below ``protection`` (and the baseline)."""
    found = intervals(table, suppressed, protection)
    weak = [cell for cell, iv in found.items() if iv.width < protection]
    if not weak:
        return []
    base = (baseline() if baseline is not None
            else intervals(table, range(len(table.keys)), protection))
    return sorted(cell for cell in weak if found[cell].width < base[cell].width - 1e-9)
