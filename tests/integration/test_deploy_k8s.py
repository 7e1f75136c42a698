"""The Kubernetes kit as the pod would run it, with processes on loopback.

``oversight provision`` writes the kits; ``kubectl kustomize`` renders the Kubernetes one (over
its copy of ``deploy/k8s``). From that output alone: the coordinator's config is the ConfigMap
at the path the container's ``--config`` names, and the files are what the StatefulSet's
volumes hold at the paths it mounts them (``/etc/fedoversight/...`` under a local root). Any
path of the config that no mount provides fails the test before anything starts. Then the
init container's ``serve --check`` finds nothing missing, the coordinator runs with the
container's arguments, its probe port answers the gRPC health check as a kubelet asks it
(plaintext), two nodes from their carrier kits connect over mutual TLS, the operator CLI runs a
round and verifies every carrier's signed result, and the token viewer reads it on the operator
port.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tomllib
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.client import OperatorClient
from fedoversight.v1 import operator_pb2, operator_pb2_grpc
from tests import kustomize
from tests.faults.procs import (
    CARRIER_NODE,
    OVERSIGHT,
    REPO,
    Proc,
    child_env,
    free_port,
    wait_until,
)

CARRIERS = ("c001", "c002")
OPERATOR = "alice"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """An ``oversight`` command of this checkout, to its end."""
    return subprocess.run(
        [*OVERSIGHT, *args],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def to_loopback(value: Any, root: Path) -> Any:
    """The pod's config for this machine: each absolute path under ``root``."""
    if isinstance(value, dict):
        return {k: to_loopback(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [to_loopback(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return str(kustomize.local(root, PurePosixPath(value)))
    return value


def health_status(port: int) -> str:
    """What the kubelet's gRPC probe sees: a plaintext Check of the empty service name."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def plaintext_code(port: int, call: str) -> grpc.StatusCode:
    """The status of a plaintext call of ``health`` or the operator API's ListCarriers."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            if call == "health":
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            else:
                operator_pb2_grpc.OversightStub(channel).ListCarriers(
                    operator_pb2.ListCarriersRequest(), timeout=5
                )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_the_kit_s_pod_runs_a_round_with_signed_results(tmp_path: Path) -> None:
    port, health_port, operator_port = free_port(), free_port(), free_port()
    metrics_port = free_port()
    address = f"localhost:{port}"
    data = tmp_path / "data"
    done = run("synth", "--out", str(data), "--carriers", "2", "--members", "600", "--months", "1")
    assert done.returncode == 0, done.stderr

    plan = tmp_path / "plan.toml"
    plan.write_text(
        tomli_w.dumps(
            {
                "coordinator_id": "agency",
                "coordinator_address": address,
                "carriers": [{"id": c, "name": f"Carrier {c}"} for c in CARRIERS],
                "operators": [
                    {"name": OPERATOR, "role": "operator"},
                    {"name": "audit", "role": "viewer", "token": True},
                ],
            }
        )
    )
    kits = tmp_path / "kits"
    done = run("provision", "--carriers", str(plan), "--out", str(kits))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (kits / "k8s" / "kustomization.yaml").is_file()

    # The pod, from the rendered manifests only.
    pod = kustomize.CoordinatorPod(kustomize.build(kits / "k8s"))
    config = kustomize.pod_config(pod)
    assert kustomize.unmounted_paths(pod, config) == []
    assert {o["name"]: o["role"] for o in config["operators"]} == {
        OPERATOR: "operator",
        "audit": "viewer",
    }
    root = tmp_path / "pod"
    pod.materialise(root)
    local = to_loopback(config, root)
    assert local["listen"] == "0.0.0.0:50051"  # the container port
    local["listen"] = f"127.0.0.1:{port}"
    local["health_listen"] = f"127.0.0.1:{health_port}"
    assert local["metrics_address"] == "0.0.0.0:9464"  # the container port
    local["metrics_address"] = f"127.0.0.1:{metrics_port}"
    assert local["operator_listen"] == "0.0.0.0:50052"  # "audit" holds a token
    local["operator_listen"] = f"127.0.0.1:{operator_port}"
    local_config = tmp_path / "coordinator.local.toml"
    local_config.write_text(tomli_w.dumps(local), encoding="utf-8")
    args = list(pod.container["args"])
    args[args.index(kustomize.CONFIG_FLAG) + 1] = str(local_config)

    # The init container: `serve --check` finds nothing missing (else the pod stays in Init).
    check = kustomize.CoordinatorPod(pod.manifests, kustomize.CHECK_CONTAINER)
    assert kustomize.unmounted_paths(check, kustomize.pod_config(check)) == []
    check_args = list(check.container["args"])
    assert check_args[check_args.index(kustomize.CONFIG_FLAG) + 1] == str(pod.config_path)
    check_args[check_args.index(kustomize.CONFIG_FLAG) + 1] = str(local_config)
    done = run(*check_args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ready to serve" in done.stdout and "problem" not in done.stdout

    logs = tmp_path / "logs"
    coordinator = Proc("coordinator", [*OVERSIGHT, *args], logs / "coordinator.log")
    nodes = []
    for carrier in CARRIERS:
        kit = kits / "carriers" / carrier
        node_config = tomllib.loads((kit / "node.toml").read_text(encoding="utf-8"))
        assert node_config["coordinator"] == address and node_config["insecure"] is False
        state = tmp_path / "state" / carrier
        state.mkdir(parents=True)
        node_config.update(
            data_dir=str(data / carrier),
            state_dir=str(state),
            reconnect_min_seconds=0.2,
            reconnect_max_seconds=1.0,
            engine_threads=1,
            audit_fsync=False,
        )
        (kit / "node.toml").write_text(tomli_w.dumps(node_config), encoding="utf-8")
        nodes.append(
            Proc(
                f"node {carrier}",
                [*CARRIER_NODE, "serve", "--config", str(kit / "node.toml")],
                logs / f"node-{carrier}.log",
            )
        )
    operator = kits / "operators" / OPERATOR
    tls = [
        "--coordinator",
        address,
        "--ca-cert",
        str(operator / "ca.crt"),
        "--cert",
        str(operator / "operator.crt"),
        "--key",
        str(operator / "operator.key"),
    ]

    def connected() -> dict[str, bool]:
        async def ask() -> dict[str, bool]:
            client = OperatorClient(
                address,
                ca_cert=operator / "ca.crt",
                cert=operator / "operator.crt",
                key=operator / "operator.key",
            )
            async with client:
                return {c.carrier_id: c.connected for c in await client.list_carriers()}

        return asyncio.run(ask())

    def serving() -> bool:
        if not coordinator.alive:
            raise RuntimeError(f"the coordinator exited:\n{coordinator.tail()}")
        try:
            return health_status(health_port) == "SERVING"
        except grpc.RpcError:
            return False

    try:
        coordinator.start()
        wait_until(serving, 30, "the coordinator's health port to say SERVING")
        # The probe port serves health alone; the main port speaks nothing but mutual TLS.
        assert plaintext_code(health_port, "operator API") == grpc.StatusCode.UNIMPLEMENTED
        assert plaintext_code(port, "health") == grpc.StatusCode.UNAVAILABLE
        for node in nodes:
            node.start()
        wait_until(lambda: all(connected().get(c) for c in CARRIERS), 60, "both nodes")

        done = run(
            "round", "run", "--metric", "enrollment.member_months", "--period", "2026-01",
            "--deadline", "60", *tls,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr  # complete: both answered
        found = re.search(r"^(\S+): 2/2 carriers answered", done.stdout, flags=re.M)
        assert found is not None, done.stdout
        round_id = found.group(1)

        # Signed request and signed results, checked with the kit's public keys.
        k8s = kits / "k8s"
        done = run(
            "round", "verify", round_id,
            "--operator-key", str(k8s / "signing" / "operator-signing.pub"),
            "--result-keys", str(k8s / "result-keys"), *tls,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"round {round_id}: request and 2 receipts verified" in done.stdout

        # The viewer with a bearer token, on the operator port.
        audit = kits / "operators" / "audit"
        done = run(
            "round", "list", "--coordinator", f"localhost:{operator_port}",
            "--ca-cert", str(audit / "ca.crt"), "--token-file", str(audit / "token"),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert round_id in done.stdout

        # The metrics port the pod's annotations name: the round and both carriers counted.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'oversight_rounds_finished_total{outcome="complete"} 1.0' in metrics, metrics
        assert "oversight_carriers_connected 2.0" in metrics, metrics
    except BaseException:
        for proc in (coordinator, *nodes):
            print(f"----- {proc.name}: {proc.log}\n{proc.tail(80)}")
        raise
    finally:
        for proc in (*nodes, coordinator):
            proc.stop(timeout=10)
    # A clean stop: SIGTERM ends the coordinator with status 0, as the kubelet would end it.
    assert coordinator.returncode == 0, coordinator.tail()
