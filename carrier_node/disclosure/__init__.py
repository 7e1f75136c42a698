"""Disclosure control at the node: what makes a raw table safe to release.

- :mod:`~carrier_node.disclosure.pipeline` — the rules and their order (:class:`Discloser`);
- :mod:`~carrier_node.disclosure.noise` — the perturbation table, magnitude noise, keyed draws;
- :mod:`~carrier_node.disclosure.secret` — the node's secret behind record keys and draws;
- :mod:`~carrier_node.disclosure.privacy` — formal differential privacy, the strict option.

``docs/disclosure.md`` explains the method to a carrier's privacy officer.
"""

from __future__ import annotations

from carrier_node.disclosure.pipeline import Discloser, TableDecision, protect_table
from carrier_node.disclosure.privacy import BudgetExhaustedError, PrivacyBudget
from carrier_node.disclosure.secret import NodeSecret

__all__ = [
    "BudgetExhaustedError",
    "Discloser",
    "NodeSecret",
    "PrivacyBudget",
    "TableDecision",
    "protect_table",
]
