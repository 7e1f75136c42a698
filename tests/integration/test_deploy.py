"""The deployment as shipped, started as real processes on loopback.

The compose federation: ``deploy/compose`` copied as it is, ``oversight provision`` run on its
``plan.toml`` into ``kit/`` as ``docker-compose.yml``'s header says, then every service's
command run with the entry point of its image's Dockerfile. Each container path is mapped onto
the host through the volumes the compose file gives that service (a bind mount to its source, a
named volume to a directory of its own), so a config that names a path the compose file does
not mount fails here, and so does a missing key, certificate or operator. Only the network is
mapped: the coordinator listens on 127.0.0.1 (``OVERSIGHT_LISTEN``), and the nodes dial
127.0.0.1 while still checking the coordinator's certificate for the name they dial in compose.

A carrier host's kit: ``oversight provision`` with the carriers' data outside the kits, then the
coordinator's and every node's provisioned config run exactly as written.

Both run one small round through the operator CLI, with the settings of the operator kit's
``operator.env``, over mutual TLS, and check every carrier's signed result with
``oversight round verify``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tomllib
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import tomli_w
import yaml
from pydantic import BaseModel

from carrier_node.config import NodeConfig
from coordinator.client import OperatorClient
from coordinator.config import CoordinatorConfig
from fedoversight.errors import OversightError
from fedoversight.testing import SynthConfig, write_carriers
from tests.faults.procs import (
    CARRIER_NODE,
    OVERSIGHT,
    REPO,
    Proc,
    child_env,
    free_port,
    wait_until,
)

DEPLOY = REPO / "deploy"
PERIOD = "2026-01:2026-03"
METRIC = "enrollment.member_months"
#: What each image's ENTRYPOINT runs, as this checkout's command.
COMMANDS: dict[str, tuple[str, ...]] = {"oversight": OVERSIGHT, "carrier-node": CARRIER_NODE}
#: The config model each daemon reads (to know which of its values are paths).
CONFIG_MODELS: dict[str, type[BaseModel]] = {
    "oversight": CoordinatorConfig,
    "carrier-node": NodeConfig,
}


# --- the compose file, mapped onto the host ---------------------------------------------------


class Unmounted(AssertionError):
    """A service needs a container path that the compose file does not mount."""


@dataclass(frozen=True)
class Mount:
    source: Path
    target: PurePosixPath
    read_only: bool


@dataclass(frozen=True)
class Service:
    """One compose service as a host process: its program, mounts and (mapped) arguments."""

    name: str
    program: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...]

    def host_path(self, container: PurePosixPath, *, writable: bool = False) -> Path:
        """Where a container path of this service is on the host (the longest mount over it)."""
        over = [m for m in self.mounts if container == m.target or m.target in container.parents]
        if not over:
            raise Unmounted(f"{self.name}: {container} is not mounted by the compose file")
        mount = max(over, key=lambda m: len(m.target.parts))
        if writable and mount.read_only:
            raise Unmounted(f"{self.name}: {container} must be writable, but {mount.target} is :ro")
        return mount.source.joinpath(*container.relative_to(mount.target).parts)


def compose_services(compose_dir: Path, volumes: Path) -> dict[str, Service]:
    """The services of ``compose_dir/docker-compose.yml`` with their mounts on this host:
    bind mounts resolved against the compose directory, named volumes as ``volumes/NAME``."""
    doc = yaml.safe_load((compose_dir / "docker-compose.yml").read_text(encoding="utf-8"))
    named = set(doc.get("volumes") or {})
    services = {}
    for name, spec in doc["services"].items():
        dockerfile = REPO / spec["build"]["dockerfile"]
        entry = re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile.read_text(), flags=re.M)
        program = json.loads(entry[-1])[0]
        mounts = []
        for volume in spec.get("volumes", []):
            source, target, *options = volume.split(":")
            if source in named:
                host = volumes / source
                host.mkdir(parents=True, exist_ok=True)
            else:
                assert source.startswith("./"), f"{name}: bind mounts are relative: {volume}"
                host = compose_dir / source
            read_only = bool(options) and "ro" in options[0].split(",")
            mounts.append(Mount(host, PurePosixPath(target), read_only))
        services[name] = Service(name, program, tuple(spec["command"]), tuple(mounts))
    return services


def _path_models(annotation: Any) -> tuple[bool, type[BaseModel] | None]:
    """Whether a field holds a path, and the model of its nested table(s), if any."""
    members = typing.get_args(annotation) or (annotation,)
    is_path = Path in members
    for member in members:
        if isinstance(member, type) and issubclass(member, BaseModel):
            return is_path, member
        inner = typing.get_args(member)
        for item in inner:
            if isinstance(item, type) and issubclass(item, BaseModel):
                return is_path, item
    return is_path, None


def map_paths(
    model: type[BaseModel],
    data: dict[str, Any],
    service: Service,
    base: PurePosixPath,
    writable: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """A config's values with every path (relative ones resolved against ``base``, the config's
    directory in the container) replaced by where it is on the host."""
    out = dict(data)
    for name, field in model.model_fields.items():
        value = out.get(name)
        is_path, nested = _path_models(field.annotation)
        if isinstance(value, str) and is_path:
            container = base / value  # an absolute value stays as it is
            out[name] = str(service.host_path(container, writable=name in writable))
        elif isinstance(value, dict) and nested is not None:
            out[name] = map_paths(nested, value, service, base)
        elif isinstance(value, list) and nested is not None:
            out[name] = [map_paths(nested, v, service, base) for v in value]
    return out


#: Config values the daemons write to: their mounts must not be read only.
WRITABLE = {"oversight": frozenset({"store_path"}), "carrier-node": frozenset({"state_dir"})}


def host_command(service: Service, run_dir: Path) -> tuple[list[str], Path | None]:
    """The service's command on this host: each path argument mapped, and the ``--config`` it
    names written out with its paths mapped under ``run_dir`` (returned too)."""
    args: list[str] = []
    config: Path | None = None
    command = list(service.command)
    for i, arg in enumerate(command):
        if i > 0 and command[i - 1] == "--config":
            container = PurePosixPath(arg)
            raw = tomllib.loads(service.host_path(container).read_text(encoding="utf-8"))
            model = CONFIG_MODELS[service.program]
            mapped = map_paths(
                model, raw, service, container.parent, WRITABLE.get(service.program, frozenset())
            )
            config = run_dir / service.name / container.name
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(tomli_w.dumps(mapped), encoding="utf-8")
            args.append(str(config))
        elif arg.startswith("/"):
            args.append(str(service.host_path(PurePosixPath(arg))))
        else:
            args.append(arg)
    return [*COMMANDS[service.program], *args], config


# --- the operator CLI -------------------------------------------------------------------------


def operator_env(kit: Path, address: str) -> dict[str, str]:
    """The OVERSIGHT_* settings of an operator kit's ``operator.env``, at ``address``."""
    settings = {}
    for line in (kit / "operator.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key] = value
    assert {"OVERSIGHT_CA_CERT", "OVERSIGHT_CERT", "OVERSIGHT_KEY"} <= set(settings), settings
    for key in ("OVERSIGHT_CA_CERT", "OVERSIGHT_CERT", "OVERSIGHT_KEY"):
        assert Path(settings[key]).is_file(), (key, settings[key])
    settings["OVERSIGHT_ADDRESS"] = address
    return child_env(**settings)


def oversight(
    args: Sequence[str], env: dict[str, str], timeout: float = 120, cwd: Path = REPO
) -> tuple[int, str]:
    done = subprocess.run(
        [*OVERSIGHT, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def api_client(env: dict[str, str]) -> OperatorClient:
    """An operator API client with the settings ``env`` gives the CLI."""
    return OperatorClient(
        env["OVERSIGHT_ADDRESS"],
        ca_cert=Path(env["OVERSIGHT_CA_CERT"]),
        cert=Path(env["OVERSIGHT_CERT"]),
        key=Path(env["OVERSIGHT_KEY"]),
    )


def connected(env: dict[str, str]) -> set[str] | None:
    """The carriers the operator API shows as connected, None while it does not answer (asked
    in this process: polling with the CLI would start an interpreter each time)."""

    async def ask() -> set[str]:
        async with api_client(env) as client:
            carriers = await asyncio.wait_for(client.list_carriers(), 10)
        return {c.carrier_id for c in carriers if c.connected}

    try:
        return asyncio.run(ask())
    except OversightError:
        return None


def answers(coordinator: Proc, env: dict[str, str]) -> bool:
    assert coordinator.alive, coordinator.tail()
    return connected(env) is not None


def cli_connected(env: dict[str, str]) -> set[str]:
    """The carriers ``oversight carriers`` lists as connected."""
    code, out = oversight(["carriers"], env)
    assert code == 0, out
    return set(re.findall(r"^\W*(\S+)\s.*\byes\b", out, flags=re.M))


def run_signed_round(
    operator: dict[str, str], coordinator_kit: Path, carriers: set[str], work: Path
) -> str:
    """One round through the operator CLI; every carrier's signed result verified."""
    output = work / "round.json"
    code, out = oversight(
        ["round", "run", "--metric", METRIC, "--period", PERIOD, "--output", str(output)],
        operator,
    )
    assert code == 0, out
    round_id = json.loads(output.read_text())["round"]["round_id"]
    code, out = oversight(
        [
            "round",
            "verify",
            round_id,
            "--coordinator",
            operator["OVERSIGHT_ADDRESS"],
            "--operator-key",
            str(coordinator_kit / "operator-signing.pub"),
            "--result-keys",
            str(coordinator_kit / "carrier-keys"),
        ],
        operator,
    )
    assert code == 0, out
    assert f"request and {len(carriers)} receipts verified" in out, out
    return str(round_id)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes to stop at the end, whatever happens."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop(timeout=10)


def _report(procs: Sequence[Proc]) -> str:
    return "\n".join(f"----- {p.name}: {p.log}\n{p.tail(40)}" for p in procs)


# --- the tests --------------------------------------------------------------------------------


def test_the_compose_federation_runs_a_signed_round_over_mutual_tls(
    tmp_path: Path, procs: list[Proc]
) -> None:
    compose_dir = tmp_path / "compose"
    shutil.copytree(DEPLOY / "compose", compose_dir, ignore=shutil.ignore_patterns("kit"))
    # Step 1 of the compose file's header: provision the federation from its plan into kit/.
    code, out = oversight(
        ["provision", "--carriers", "compose/plan.toml", "--out", "compose/kit"],
        child_env(),
        cwd=tmp_path,
    )
    assert code == 0, out
    kit = compose_dir / "kit"
    services = compose_services(compose_dir, tmp_path / "volumes")
    nodes = sorted(n for n, s in services.items() if s.program == "carrier-node")
    assert nodes == ["node-c001", "node-c002", "node-c003"]
    address = f"127.0.0.1:{free_port()}"
    run_dir = tmp_path / "run"
    logs = tmp_path / "logs"

    # The one-shot synth service writes the carriers into the carrier-data volume.
    synth = subprocess.run(
        host_command(services["synth"], run_dir)[0],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert synth.returncode == 0, synth.stdout + synth.stderr

    coordinator = Proc(
        "coordinator",
        host_command(services["coordinator"], run_dir)[0],
        logs / "coordinator.log",
        env=child_env(OVERSIGHT_LISTEN=address),
    )
    procs.append(coordinator.start())
    operator = operator_env(kit / "operators" / "operator", address)
    auditor = operator_env(kit / "operators" / "auditor", address)

    wait_until(lambda: answers(coordinator, operator), 60, "the coordinator to answer")
    carrier_ids = set()
    for name in nodes:
        args, config = host_command(services[name], run_dir)
        assert config is not None
        # The network: dial loopback, and still expect the name dialled in compose (the
        # service name) in the coordinator's certificate.
        data = tomllib.loads(config.read_text())
        carrier_ids.add(data["carrier_id"])
        data["tls"].setdefault("server_name", data["coordinator"].rsplit(":", 1)[0])
        data["coordinator"] = address
        config.write_text(tomli_w.dumps(data))
        procs.append(Proc(name, args, logs / f"{name}.log").start())

    def all_connected() -> bool:
        for proc in procs:
            assert proc.alive, _report(procs)
        return connected(operator) == carrier_ids

    try:
        wait_until(all_connected, 90, "every node to connect", step=0.5)
        run_signed_round(operator, kit / "coordinator", carrier_ids, tmp_path)
        # The plan's viewer reads, and may not run rounds.
        assert cli_connected(auditor) == carrier_ids
        code, out = oversight(["round", "run", "--metric", METRIC, "--period", PERIOD], auditor)
        assert code == 1 and "may not" in out, out
    except BaseException:
        print(_report(procs))
        raise


def test_a_config_path_the_compose_file_does_not_mount_fails(tmp_path: Path) -> None:
    """Guards the mapping above: drop a mount and the node's config no longer maps."""
    compose_dir = tmp_path / "compose"
    shutil.copytree(DEPLOY / "compose", compose_dir, ignore=shutil.ignore_patterns("kit"))
    services = compose_services(compose_dir, tmp_path / "volumes")
    node = services["node-c001"]
    assert host_command(node, tmp_path / "run")[1] is not None  # maps as shipped
    for target in ("/etc/fedoversight/tls", "/data", "/etc/fedoversight/policy.toml"):
        without = Service(
            node.name,
            node.program,
            node.command,
            tuple(m for m in node.mounts if m.target != PurePosixPath(target)),
        )
        with pytest.raises(Unmounted, match="not mounted"):
            host_command(without, tmp_path / "run")
    state = next(m for m in node.mounts if m.target == PurePosixPath("/var/lib/carrier-node"))
    read_only_state = Service(
        node.name,
        node.program,
        node.command,
        tuple(Mount(m.source, m.target, True) if m is state else m for m in node.mounts),
    )
    with pytest.raises(Unmounted, match="must be writable"):
        host_command(read_only_state, tmp_path / "run")


def test_provisioned_host_kits_run_as_written(tmp_path: Path, procs: list[Proc]) -> None:
    data = write_carriers(tmp_path / "hosts", SynthConfig(carriers=2, members=2_000, months=3))
    carriers = sorted(d.name for d in data)
    port = free_port()
    plan = tmp_path / "plan.toml"
    plan.write_text(
        tomli_w.dumps(
            {
                "coordinator_id": "agency",
                "coordinator_address": f"localhost:{port}",
                "carriers": [
                    {
                        "id": c,
                        "data_dir": str(tmp_path / "hosts" / c),
                        "state_dir": str(tmp_path / "state" / c),
                    }
                    for c in carriers
                ],
                "operators": [{"name": "alice", "role": "operator"}],
            }
        )
    )
    kits = tmp_path / "kits"
    code, out = oversight(["provision", "--carriers", str(plan), "--out", str(kits)], child_env())
    assert code == 0, out
    logs = tmp_path / "logs"
    # Every config exactly as provisioned: the coordinator on 127.0.0.1, the nodes dialling
    # localhost, their data and state where the plan says.
    coordinator = Proc(
        "coordinator",
        [*OVERSIGHT, "serve", "--config", str(kits / "coordinator" / "coordinator.toml")],
        logs / "coordinator.log",
    )
    procs.append(coordinator.start())
    # The operator kit's settings as written: 127.0.0.1 and the plan's port, no server name.
    env_file = (kits / "operators" / "alice" / "operator.env").read_text()
    assert f"OVERSIGHT_ADDRESS=127.0.0.1:{port}\n" in env_file
    assert "OVERSIGHT_SERVER_NAME" not in env_file
    operator = operator_env(kits / "operators" / "alice", f"127.0.0.1:{port}")
    wait_until(lambda: answers(coordinator, operator), 60, "the coordinator to answer")
    for carrier_id in carriers:
        config = kits / "carriers" / carrier_id / "node.toml"
        proc = Proc(
            f"node {carrier_id}",
            [*CARRIER_NODE, "serve", "--config", str(config)],
            logs / f"node-{carrier_id}.log",
        )
        procs.append(proc.start())
    try:
        wait_until(lambda: connected(operator) == set(carriers), 90, "the nodes", step=0.5)
        run_signed_round(operator, kits / "coordinator", set(carriers), tmp_path)
        assert cli_connected(operator) == set(carriers)
        for carrier_id in carriers:
            assert (tmp_path / "state" / carrier_id / f"{carrier_id}.audit.jsonl").is_file()
            assert sorted(p.name for p in (kits / "carriers" / carrier_id).iterdir()) == [
                "node.toml",
                "policy.toml",
                "tls",
            ]
    except BaseException:
        print(_report(procs))
        raise
