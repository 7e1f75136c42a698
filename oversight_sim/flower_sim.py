"""A fedoversight round on Flower's simulation runtime (the ``flower`` extra).

The same federation as :class:`~oversight_sim.harness.SimulatedFederation` builds (its PKI, its
coordinator settings: operator key, carriers' result keys, round store under ``work_dir``), with
Flower as the transport: the ServerApp (:mod:`coordinator.flower`) runs the round, and each
simulated SuperNode runs the ClientApp shim (:mod:`carrier_node.flower`) on its carrier's own
``node.toml`` (written here, as provisioning writes it, with the carrier's data directory,
state directory and policy file). Flower's simulation runs ClientApps in Ray workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import tomli_w

from coordinator.client import RoundOutcome
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period
from oversight_sim.harness import SimulatedFederation


def write_node_tomls(fed: SimulatedFederation, policy_file: Path | None = None) -> dict[str, Path]:
    """Each carrier's ``node.toml`` (absolute paths) in its provisioned kit directory."""
    pki = fed.provision()
    out: dict[str, Path] = {}
    for carrier_id in sorted(fed.carrier_dirs):
        kit = pki.carriers[carrier_id]
        assert kit.cert is not None and kit.key is not None and kit.result_signing_key
        node: dict[str, object] = {
            "carrier_id": carrier_id,
            # Unused by the shim (Flower carries the messages); the stream's own setting.
            "coordinator": "127.0.0.1:50051",
            "data_dir": str(fed.carrier_dirs[carrier_id].resolve()),
            "state_dir": str((fed.work_dir / "nodes").resolve()),
            "operator_public_key": str(kit.operator_public_key),
            "result_signing_key": str(kit.result_signing_key),
            "tls": {"ca_cert": str(kit.ca_cert), "cert": str(kit.cert), "key": str(kit.key)},
        }
        if policy_file is not None:
            node["policy_file"] = str(policy_file.resolve())
        path = kit.directory / "flower-node.toml"
        path.write_text(tomli_w.dumps(node), encoding="utf-8")
        out[carrier_id] = path
    return out


def run_flower_round(
    fed: SimulatedFederation,
    period: Period,
    queries: Sequence[QuerySpec],
    *,
    policy_file: Path | None = None,
    deadline_seconds: int = 300,
    output: Path | None = None,
    cpus_per_node: float = 1.0,
) -> RoundOutcome:
    """One round on Flower's simulation runtime, one simulated SuperNode per carrier of
    ``fed`` (not started: its PKI and coordinator settings are used, under its work
    directory); the outcome as the ServerApp stored it (and exported it to ``output``)."""
    from flwr.simulation import run_simulation

    from carrier_node.flower import make_client_app
    from coordinator.flower import RoundSettings, make_server_app

    fed.work_dir.mkdir(parents=True, exist_ok=True)
    tomls = write_node_tomls(fed, policy_file)
    carriers = sorted(fed.carrier_dirs)
    outcomes: list[RoundOutcome] = []
    settings = RoundSettings(
        config=fed.coordinator_config(),
        period=period,
        queries=tuple(queries),
        deadline_seconds=deadline_seconds,
        output=output,
        expected_nodes=len(carriers),
        on_outcome=outcomes.append,
    )
    # Ray's workers start with this process's environment: quiet its advice on accelerators.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    run_simulation(
        server_app=make_server_app(settings),
        client_app=make_client_app({i: tomls[c] for i, c in enumerate(carriers)}),
        num_supernodes=len(carriers),
        backend_config={"client_resources": {"num_cpus": cpus_per_node, "num_gpus": 0.0}},
    )
    if not outcomes:
        raise RuntimeError("the Flower simulation ended without a round (see its log)")
    return outcomes[0]
