"""Integration tests with simulated carriers: the public, versioned surface (``docs/testing.md``).

- the pytest plugin :mod:`fedoversight.testing.plugin` (loaded by the ``pytest11`` entry
  point when the package is installed): fixtures ``federation_config``, ``carrier_data``,
  ``carrier_sets``, ``federation``, ``operator_client``, ``carrier_tables`` and the
  ``federation`` marker;
- scenarios: :class:`Scenario`, :class:`Plant`, :class:`Fault`, :func:`load_scenario`;
- a running federation driven from plain code: :class:`Federation`, :class:`Client`,
  :class:`CarrierSet`, :func:`write_carrier_set`;
- the async harness underneath, for tests under an async plugin:
  :class:`SimulatedFederation` and its identities :data:`OPERATOR`, :data:`VIEWER`,
  :data:`TOKEN_OPERATOR`;
- synthetic data: :class:`SynthConfig`, :func:`write_carriers`, :func:`spread`, and
  :func:`load_directory` (a carrier directory into a PostgreSQL schema: a warehouse);
- the oracle: :mod:`fedoversight.testing.oracle` (plain pandas over the carriers' files).

Importing this package imports none of them: each name is loaded on first use, so the plugin
costs a test session that does not use it nothing but this module. The implementation lives
in the simulator (``oversight_sim``) and the two sides; only the names listed here (and in
``__all__``) are the surface, versioned by :data:`API_VERSION`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: The version of this surface: the major part changes when a name listed here is removed or
#: changes meaning, the minor part when one is added (see docs/testing.md).
API_VERSION = "1.0"

if TYPE_CHECKING:
    from oversight_sim.canned import spread
    from oversight_sim.carrier_sets import CarrierSet, Refresh, write_carrier_set
    from oversight_sim.harness import HARNESS_OPERATOR as OPERATOR
    from oversight_sim.harness import HARNESS_TOKEN_OPERATOR as TOKEN_OPERATOR
    from oversight_sim.harness import HARNESS_VIEWER as VIEWER
    from oversight_sim.harness import SimulatedFederation
    from oversight_sim.pgload import load_directory
    from oversight_sim.runner import Client, Federation, start_federation
    from oversight_sim.scenario import Fault, Plant, Scenario, load_scenario, scenario_from
    from oversight_sim.synth import SynthConfig, write_carriers

#: Public name -> (module, name there).
_EXPORTS: dict[str, tuple[str, str]] = {
    "CarrierSet": ("oversight_sim.carrier_sets", "CarrierSet"),
    "Client": ("oversight_sim.runner", "Client"),
    "Fault": ("oversight_sim.scenario", "Fault"),
    "Federation": ("oversight_sim.runner", "Federation"),
    "OPERATOR": ("oversight_sim.harness", "HARNESS_OPERATOR"),
    "Plant": ("oversight_sim.scenario", "Plant"),
    "Refresh": ("oversight_sim.carrier_sets", "Refresh"),
    "Scenario": ("oversight_sim.scenario", "Scenario"),
    "SimulatedFederation": ("oversight_sim.harness", "SimulatedFederation"),
    "SynthConfig": ("oversight_sim.synth", "SynthConfig"),
    "TOKEN_OPERATOR": ("oversight_sim.harness", "HARNESS_TOKEN_OPERATOR"),
    "VIEWER": ("oversight_sim.harness", "HARNESS_VIEWER"),
    "load_directory": ("oversight_sim.pgload", "load_directory"),
    "load_scenario": ("oversight_sim.scenario", "load_scenario"),
    "scenario_from": ("oversight_sim.scenario", "scenario_from"),
    "spread": ("oversight_sim.canned", "spread"),
    "start_federation": ("oversight_sim.runner", "start_federation"),
    "write_carrier_set": ("oversight_sim.carrier_sets", "write_carrier_set"),
    "write_carriers": ("oversight_sim.synth", "write_carriers"),
}

__all__ = [
    "API_VERSION",
    "OPERATOR",
    "TOKEN_OPERATOR",
    "VIEWER",
    "CarrierSet",
    "Client",
    "Fault",
    "Federation",
    "Plant",
    "Refresh",
    "Scenario",
    "SimulatedFederation",
    "SynthConfig",
    "load_directory",
    "load_scenario",
    "scenario_from",
    "spread",
    "start_federation",
    "write_carrier_set",
    "write_carriers",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
