"""Complementary suppression: hide enough other cells that no suppressed value can be derived
by subtraction from its lines' margins, then prove it with the interval audit."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from carrier_node.sdc.audit import Bounds, exposed, exposed_sided
from carrier_node.sdc.tables import Table

#: Rounds of "audit, then hide one more cell" before giving up and hiding the table.
MAX_AUDIT_ROUNDS = 200


def _cheapest(table: Table, line: tuple[int, ...], hidden: set[int]) -> int | None:
    """The released cell of ``line`` whose loss costs least (smallest value, non-zero first)."""
    open_cells = [i for i in line if i not in hidden]
    if not open_cells:
        return None
    return min(open_cells, key=lambda i: (table.values[i] == 0, table.values[i], table.keys[i]))


def complementary(
    table: Table, primary: Collection[int], protection: int,
    required: Mapping[int, float] | None = None,
) -> set[int]:
    """Cells to suppress in addition to ``primary`` (never includes a primary cell).

    With ``required``, the audit is the p% rule's: each cell named there must keep an upper
    and a lower bound at least that far from its value (:func:`exposed_sided`); else every
    hidden cell's interval must be ``protection`` wide (:func:`exposed`)."""
    hidden = set(primary)
    if not hidden:
        return set()
    lines = table.lines()
    # 1. No line may hide exactly one cell (the margin minus the rest would give it away).
    changed = True
    while changed:
        changed = False
        for line in lines:
            if sum(1 for i in line if i in hidden) == 1:
                pick = _cheapest(table, line, hidden)
                if pick is not None:
                    hidden.add(pick)
                    changed = True
    # 2. The audit: where a hidden cell is still pinned down, hide more of its lines.
    # What the margins alone reveal: the same every round, each cell's worked out when needed.
    baseline = Bounds.of(table, range(len(table.keys)), protection if required is None else 1)

    for _ in range(MAX_AUDIT_ROUNDS):
        weak = (exposed(table, hidden, protection, baseline) if required is None
                else exposed_sided(table, hidden, required, baseline))
        if not weak:
            break
        cell = weak[0]
        candidates = [
            pick for line in lines if cell in line
            if (pick := _cheapest(table, line, hidden)) is not None
        ]
        if not candidates:
            # Nothing left to hide in its lines: the only safe answer is to hide the table.
            hidden.update(range(len(table.keys)))
            break
        hidden.add(min(candidates, key=lambda i: (table.values[i] == 0, table.values[i])))
    else:
        hidden.update(range(len(table.keys)))
    return hidden - set(primary)
