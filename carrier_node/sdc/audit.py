"""The interval audit of a suppression pattern (the usual linear-programming audit).

For each suppressed cell, the attacker's feasible values are those consistent with every
released cell, every known margin and non-negativity. The cell is protected when that interval
is at least ``protection`` wide, so its true value is not pinned down. Margins resting on
fewer than ``protection`` units are treated as unknown (they would themselves be suppressed);
every other margin is assumed known, which is the cautious reading. What the known margins
alone already reveal (the interval with every cell of the table hidden) is the margins'
releases' to protect, not this table's: a cell is exposed when the released cells narrow it
below ``protection`` and below that baseline.

Only cells that could be exposed need their exact interval. The cells' true values are one
feasible point and each LP solved yields another; a cell whose values over the points seen
already differ by enough is proven protected and costs no LP of its own. The baseline is
worked out only for the cells found weak.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np

from carrier_node.sdc.tables import Table, line_margins


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low


#: Float slack when judging widths from seen solutions (values are whole units).
_EPS = 1e-6


class Bounds:
    """The feasible values of a table's hidden cells, each cell's interval solved when asked.

    One HiGHS model serves every cell: only the objective changes between solves, so each
    solve starts from the previous optimal basis (a few pivots, ~10x faster than a
    ``scipy.optimize.linprog`` call per bound). The bare binding (``highspy._Highs``) is used
    because the ``Highs`` wrapper prints a banner on stdout when constructed, before output
    can be switched off, and its callback machinery is not needed here. Runs release the GIL;
    HiGHS supports instances solving at once in several threads provided all use the same
    ``threads`` option (its parallel docs), which holds here: none sets it."""

    def __init__(
        self, hidden: list[int], rows: list[list[float]], rhs: list[float],
        truth: list[float] | None = None, *, closed_form: bool = True,
    ) -> None:
        """``rows @ x == rhs`` over the ``hidden`` cells (columns in that order), ``x >= 0``;
        ``truth``, when known, is a feasible point. With ``closed_form`` (the default),
        constraints sharing no cell are answered without an LP."""
        self.hidden = hidden
        self._column = {cell: j for j, cell in enumerate(hidden)}
        self._solved: dict[int, Interval] = {}
        self._solver: Any = None
        self._constraints = rows, rhs  # the model is built on the first cell asked for
        # The extremes of each cell over the feasible points seen (the truth first).
        self._low = np.array(truth, dtype=float) if truth is not None else np.full(
            len(hidden), math.inf)
        self._high = np.array(truth, dtype=float) if truth is not None else np.full(
            len(hidden), -math.inf)
        if not rows:
            self._solved = {cell: Interval(0.0, math.inf) for cell in hidden}
        elif closed_form and _disjoint(rows):
            self._solved = _disjoint_intervals(hidden, rows, rhs)
        for cell, iv in self._solved.items():
            self._low[self._column[cell]], self._high[self._column[cell]] = iv.low, iv.high

    @classmethod
    def of(cls, table: Table, suppressed: Collection[int], protection: int) -> Bounds:
        """The hidden cells of ``table``: its other cells are released and every margin
        resting on at least ``protection`` units is known."""
        hidden = sorted(suppressed)
        column = {cell: j for j, cell in enumerate(hidden)}
        rows: list[list[float]] = []
        rhs: list[float] = []
        lines = table.lines()
        for line, margin in zip(lines, line_margins(table, lines), strict=True):
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
        return cls(hidden, rows, rhs, [float(table.values[c]) for c in hidden])

    def seen(self, cell: int) -> tuple[float, float]:
        """Least and greatest feasible values of ``cell`` found so far: inside its interval."""
        j = self._column[cell]
        return float(self._low[j]), float(self._high[j])

    def interval(self, cell: int) -> Interval:
        found = self._solved.get(cell)
        if found is None:
            if self._solver is None:
                self._solver = _model(*self._constraints)
            j = self._column[cell]
            self._solver.changeColCost(j, 1.0)
            low = self._solve(highspy.ObjSense.kMinimize)
            high = self._solve(highspy.ObjSense.kMaximize)
            self._solver.changeColCost(j, 0.0)
            # Not optimal: unbounded above (no finite upper bound), or a solver failure, read
            # the cautious way (a failed lower bound reads as 0, never tighter than the truth).
            found = Interval(0.0 if low is None else low, math.inf if high is None else high)
            self._solved[cell] = found
        return found

    def all(self) -> dict[int, Interval]:
        return {cell: self.interval(cell) for cell in self.hidden}

    def _solve(self, sense: highspy.ObjSense) -> float | None:
        solver = self._solver
        assert solver is not None
        solver.changeObjectiveSense(sense)
        solver.run()
        if solver.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        point = np.asarray(solver.getSolution().col_value)
        np.minimum(self._low, point, out=self._low)
        np.maximum(self._high, point, out=self._high)
        return float(solver.getInfo().objective_function_value)


def _model(rows: list[list[float]], rhs: list[float]) -> Any:
    """min/max of a cell subject to ``rows @ x == rhs``, ``x >= 0`` (objective set per solve)."""
    a = np.array(rows)
    n = a.shape[1]
    nonzero = a.T != 0.0  # column-wise: the constraints each hidden cell appears in
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, len(rows)
    lp.col_cost_ = np.zeros(n)
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.full(n, highspy.kHighsInf)
    lp.row_lower_ = lp.row_upper_ = np.array(rhs)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate(([0], np.cumsum(nonzero.sum(axis=1))))
    lp.a_matrix_.index_ = np.nonzero(nonzero)[1]
    lp.a_matrix_.value_ = a.T[nonzero]
    solver = highspy._Highs()  # type: ignore[attr-defined]
    solver.setOptionValue("output_flag", False)
    solver.passModel(lp)
    return solver


def intervals(table: Table, suppressed: Collection[int], protection: int) -> dict[int, Interval]:
    """Feasible interval of every suppressed cell given everything else."""
    return Bounds.of(table, suppressed, protection).all()


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
    baseline: Bounds | None = None,
) -> list[int]:
    """Suppressed cells an analyst can bound, from above or from below, closer to their true
    value than ``required[cell]`` (the p% rule's protection of a dollar total: its upper bound
    must exceed it, and its lower bound fall short of it, by at least p% of it), and closer
    than with the whole table hidden (``baseline``: a :class:`Bounds` of every cell with
    protection 1). Every margin is taken as known."""
    found = Bounds.of(table, suppressed, 1)

    def slack(low: float, high: float, cell: int) -> float:
        value = table.values[cell]
        return min(high - value, value - low)

    weak = []
    for cell in found.hidden:
        if cell not in required or slack(*found.seen(cell), cell) >= required[cell] + _EPS:
            continue  # protected on both sides by feasible values already seen
        iv = found.interval(cell)
        if slack(iv.low, iv.high, cell) < required[cell]:
            weak.append(cell)
    if not weak:
        return []
    base = baseline if baseline is not None else Bounds.of(table, range(len(table.keys)), 1)
    return sorted(c for c in weak if slack(found.interval(c).low, found.interval(c).high, c)
                  < slack(base.interval(c).low, base.interval(c).high, c) - 1e-9)


def exposed(
    table: Table, suppressed: Collection[int], protection: int,
    baseline: Bounds | None = None,
) -> list[int]:
    """Suppressed cells the released cells narrow below ``protection`` and below the baseline
    (``baseline``: a :class:`Bounds` of every cell of the table with the same protection)."""
    found = Bounds.of(table, suppressed, protection)
    weak = []
    for cell in found.hidden:
        low, high = found.seen(cell)
        if high - low >= protection + _EPS:
            continue  # two feasible values this far apart: at least this wide
        if found.interval(cell).width < protection:
            weak.append(cell)
    if not weak:
        return []
    base = (baseline if baseline is not None
            else Bounds.of(table, range(len(table.keys)), protection))
    return sorted(cell for cell in weak
                  if found.interval(cell).width < base.interval(cell).width - 1e-9)
