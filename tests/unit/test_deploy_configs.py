"""The deployment artefacts under deploy/ agree with the code that reads them.

Every coordinator and node TOML loads with the real loaders, every policy with ``Policy.load``
(all of them reject unknown keys, so a misspelled key fails here). The compose file, the
Kubernetes manifests, the Dockerfiles and the systemd unit are checked with plain text parsing:
PyYAML is not a project dependency (when it happens to be installed, the YAML is parsed fully
as well).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from carrier_node.config import NodeConfig, load_node_config
from carrier_node.policy import Policy
from coordinator.config import CoordinatorConfig, load_coordinator_config
from fedoversight.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
COMPOSE_CONFIG = DEPLOY / "compose" / "config"
K8S = DEPLOY / "k8s"
NODE_IDS = ("c001", "c002", "c003")


def _tomls(prefix: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.toml") if p.name.startswith(prefix))


COORDINATOR_TOMLS = _tomls("coordinator")
NODE_TOMLS = _tomls("node")
POLICY_TOMLS = _tomls("policy")


def _pyyaml() -> ModuleType | None:
    """PyYAML when installed (it is not a project dependency), else None."""
    if importlib.util.find_spec("yaml") is None:
        return None
    return importlib.import_module("yaml")


def _id(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loaders read OVERSIGHT_* / CARRIER_NODE_* variables; the files alone must load."""
    for key in list(os.environ):
        if key.startswith(("OVERSIGHT_", "CARRIER_NODE_")):
            monkeypatch.delenv(key)


# --- TOML configs ---------------------------------------------------------------------------


def test_every_toml_under_deploy_is_a_known_kind() -> None:
    every = set(DEPLOY.rglob("*.toml"))
    assert every == set(COORDINATOR_TOMLS) | set(NODE_TOMLS) | set(POLICY_TOMLS)
    assert {_id(p) for p in COORDINATOR_TOMLS} == {
        "compose/config/coordinator.toml",
        "k8s/coordinator.toml",
    }
    assert {p.name for p in NODE_TOMLS} == {
        "node-c001.toml",
        "node-c002.toml",
        "node-c003.toml",
        "node.example.toml",
    }
    assert {p.name for p in POLICY_TOMLS} == {"policy.toml", "policy.example.toml"}


@pytest.mark.parametrize("path", COORDINATOR_TOMLS, ids=_id)
def test_coordinator_config_loads(path: Path) -> None:
    config = load_coordinator_config(path)
    assert isinstance(config, CoordinatorConfig)
    assert config.listen == "0.0.0.0:50051"
    assert config.store_path.is_absolute()


@pytest.mark.parametrize("path", NODE_TOMLS, ids=_id)
def test_node_config_loads(path: Path) -> None:
    # TLS files need not exist: the loader only types them as paths (the daemon reads them).
    config = load_node_config(path)
    assert isinstance(config, NodeConfig)
    assert config.data_dir is not None and config.data_dir.is_absolute()
    assert config.policy_file is not None
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    if Path(raw["policy_file"]).is_absolute():  # a host path of a real deployment
        assert config.policy_file.parent == Path("/etc/fedoversight")
    else:  # resolved next to the config file: the policy shipped beside it
        assert config.policy_file == path.parent / raw["policy_file"]
        assert Policy.load(config.policy_file).min_cell_size >= 11


@pytest.mark.parametrize("path", POLICY_TOMLS, ids=_id)
def test_policy_loads(path: Path) -> None:
    policy = Policy.load(path)
    assert policy.min_cell_size >= 11


@pytest.mark.parametrize("path", COORDINATOR_TOMLS + NODE_TOMLS + POLICY_TOMLS, ids=_id)
def test_a_misspelled_key_is_rejected(path: Path, tmp_path: Path) -> None:
    """Guards the tests above: an extra (misspelled) key must make loading fail."""
    text = path.read_text(encoding="utf-8")
    copy = tmp_path / path.name
    copy.write_text("lisen = 1\n" + text, encoding="utf-8")
    with pytest.raises(ConfigError, match="lisen"):
        if path in COORDINATOR_TOMLS:
            load_coordinator_config(copy)
        elif path in NODE_TOMLS:
            load_node_config(copy)
        else:
            Policy.load(copy)


def test_production_node_example_is_secure() -> None:
    config = load_node_config(DEPLOY / "systemd" / "node.example.toml")
    assert config.insecure is False
    assert config.tls is not None and config.operator_public_key is not None
    for path in (config.tls.ca_cert, config.tls.cert, config.tls.key, config.operator_public_key):
        assert path.is_absolute() and str(path).startswith("/etc/fedoversight/")
    assert config.state_dir == Path("/var/lib/carrier-node")


# --- compose demo ---------------------------------------------------------------------------


def _compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


def _blocks(text: str, parent: str, indent: int) -> dict[str, list[str]]:
    """Lines of each key directly under top-level ``parent:`` (keys at ``indent`` spaces)."""
    blocks: dict[str, list[str]] = {}
    inside = False
    current: str | None = None
    key = re.compile(rf"^ {{{indent}}}([A-Za-z0-9_.-]+):\s*(#.*)?$")
    for line in text.splitlines():
        if re.match(r"^\S", line):
            inside = line.rstrip() == f"{parent}:"
            current = None
            continue
        if not inside:
            continue
        match = key.match(line)
        if match:
            current = match.group(1)
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line)
    return blocks


def _uncommented(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_compose_services_and_ports() -> None:
    text = _compose_text()
    services = _blocks(text, "services", 2)
    assert set(services) == {"synth", "coordinator", *(f"node-{c}" for c in NODE_IDS)}
    # Only the coordinator publishes a port, and only on loopback; nodes publish or expose none.
    published = [
        ln for ln in _uncommented(text.splitlines()) if re.match(r"^\s+(ports|expose):", ln)
    ]
    assert len(published) == 1
    assert any("ports:" in ln for ln in services["coordinator"])
    assert any('"127.0.0.1:50051:50051"' in ln for ln in services["coordinator"])
    for node in NODE_IDS:
        body = _uncommented(services[f"node-{node}"])
        assert not any(re.match(r"^\s+(ports|expose|network_mode):", ln) for ln in body)
        assert any(ln.strip() == "<<: *node" for ln in body)
    anchor = _blocks(text, "x-node", 2)
    assert not any("ports" in ln or "expose" in ln for v in anchor.values() for ln in v)
    assert "INSECURE DEMO MODE" in text


def test_compose_mounts_match_the_configs() -> None:
    text = _compose_text()
    services = _blocks(text, "services", 2)
    mounts = re.findall(r"^\s+- \./(config/[^:]+):(/[^:]+):ro\s*$", text, flags=re.M)
    for host, _ in mounts:
        assert (DEPLOY / "compose" / host).is_file(), host
    assert ("config/coordinator.toml", "/etc/fedoversight/coordinator.toml") in mounts
    registry = {c.id for c in load_coordinator_config(COMPOSE_CONFIG / "coordinator.toml").carriers}
    assert registry == set(NODE_IDS)
    for node in NODE_IDS:
        body = "\n".join(services[f"node-{node}"])
        assert f"./config/node-{node}.toml:/etc/fedoversight/node.toml:ro" in body
        assert "./config/policy.toml:/etc/fedoversight/policy.toml:ro" in body
        assert "carrier-data:/data:ro" in body
        raw = tomllib.loads((COMPOSE_CONFIG / f"node-{node}.toml").read_text(encoding="utf-8"))
        assert raw["policy_file"] == "policy.toml"  # beside node.toml in the container too
        config = load_node_config(COMPOSE_CONFIG / f"node-{node}.toml")
        assert config.carrier_id == node
        assert config.coordinator == "coordinator:50051"
        assert config.data_dir == Path("/data") / node
    synth = " ".join(services["synth"])
    assert re.search(r'"--out", "/data", "--carriers", "3"', synth)
    assert "carrier-data:/data" in synth


@pytest.mark.parametrize("name", ["coordinator.toml", *(f"node-{c}.toml" for c in NODE_IDS)])
def test_compose_config_switches_to_mutual_tls(name: str, tmp_path: Path) -> None:
    """Following the documented switch (insecure = false + the TLS block) gives a valid config."""
    lines = (COMPOSE_CONFIG / name).read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("# >>> mutual TLS"))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("# <<< mutual TLS"))
    block = [ln.removeprefix("#").removeprefix(" ") for ln in lines[start + 1 : end]]
    head = [re.sub(r"^insecure = true\b", "insecure = false", ln) for ln in lines[:start]]
    assert head != lines[:start], "the file must say insecure = true"
    secure = tmp_path / name
    secure.write_text("\n".join([*head, *block, ""]), encoding="utf-8")
    (tmp_path / "policy.toml").write_text((COMPOSE_CONFIG / "policy.toml").read_text())
    tls_dir = Path("/etc/fedoversight/tls")
    if name == "coordinator.toml":
        coordinator = load_coordinator_config(secure)
        assert coordinator.insecure is False and coordinator.tls is not None
        assert coordinator.tls.cert.parent == tls_dir
    else:
        node = load_node_config(secure)
        assert node.insecure is False and node.tls is not None
        assert node.tls.server_name == "coordinator"
        assert node.operator_public_key is not None and node.operator_public_key.parent == tls_dir
    # The compose file documents the matching mount.
    assert re.search(r"#\s*mTLS: - \./tls/\S+:/etc/fedoversight/tls:ro", _compose_text())


def test_compose_parses_as_yaml_when_pyyaml_is_installed() -> None:
    """Always checks the text shape; with PyYAML present, also the merged document."""
    text = _compose_text()
    assert "\t" not in text
    assert re.search(r"^services:$", text, flags=re.M)
    yaml = _pyyaml()
    if yaml is None:
        return
    doc = yaml.safe_load(text)
    services = doc["services"]
    assert set(services) == {"synth", "coordinator", *(f"node-{c}" for c in NODE_IDS)}
    for node in NODE_IDS:
        merged = services[f"node-{node}"]
        assert "ports" not in merged and "expose" not in merged
        assert merged["networks"] == ["federation"]
        assert merged["depends_on"]["synth"]["condition"] == "service_completed_successfully"
    assert doc["networks"]["federation"]["internal"] is True


# --- Kubernetes -----------------------------------------------------------------------------
# Text checks only; tests/unit/test_deploy_k8s.py checks what `kubectl kustomize` renders.


def _k8s_docs(path: Path) -> list[str]:
    docs = re.split(r"^---\s*$", path.read_text(encoding="utf-8"), flags=re.M)
    return [d for d in docs if re.search(r"^kind:", d, flags=re.M)]


def _field(doc: str, name: str) -> str:
    match = re.search(rf"^\s*{name}:\s*(\S+)\s*$", doc, flags=re.M)
    assert match, f"{name} missing"
    return match.group(1).strip("\"'")


def test_k8s_manifests_are_the_expected_resources() -> None:
    kustomization = (K8S / "kustomization.yaml").read_text(encoding="utf-8")
    resources = re.findall(r"^\s+- (\S+\.yaml)\s*$", kustomization, flags=re.M)
    kinds: dict[str, str] = {}
    for name in resources:
        for doc in _k8s_docs(K8S / name):
            kinds[_field(doc, "kind")] = doc
            assert re.search(r"^apiVersion: \S+", doc, flags=re.M)
    assert set(kinds) == {"Namespace", "PersistentVolumeClaim", "StatefulSet", "Service"}
    # The ConfigMaps are generated from the files beside the manifests.
    generated = re.findall(r"^\s+- (coordinator\.toml|revoked-serials)\s*$", kustomization, re.M)
    assert generated == ["coordinator.toml", "revoked-serials"]
    assert kustomization.count("namespace: fedoversight") == 2
    for kind, doc in kinds.items():
        if kind != "Namespace":
            assert re.search(r"^  namespace: fedoversight$", doc, flags=re.M), kind
    assert _field(kinds["Service"], "type") == "ClusterIP"
    assert _field(kinds["PersistentVolumeClaim"], "storage")
    yaml = _pyyaml()
    if yaml is not None:
        for path in K8S.glob("*.yaml"):
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                assert doc["apiVersion"] and doc["kind"]


def test_k8s_coordinator_config_is_secure() -> None:
    config = load_coordinator_config(K8S / "coordinator.toml")
    assert config.insecure is False and config.auto_register is False
    assert config.tls is not None and config.operator_signing_key is not None
    assert config.result_keys_dir is not None and config.operators
    assert config.health_listen is not None


def test_k8s_statefulset_matches_the_config() -> None:
    sts = (K8S / "statefulset.yaml").read_text(encoding="utf-8")
    for setting in (
        "replicas: 1",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
    ):
        assert re.search(rf"^\s+{setting}$", sts, flags=re.M), setting
    assert "tcpSocket" not in sts and "httpGet" not in sts
    assert re.search(r"^\s+requests:\n\s+cpu:", sts, flags=re.M)
    assert re.search(r"^\s+limits:\n\s+cpu:", sts, flags=re.M)
    config = tomllib.loads((K8S / "coordinator.toml").read_text(encoding="utf-8"))
    port = config["listen"].rsplit(":", 1)[1]
    health = config["health_listen"].rsplit(":", 1)[1]
    assert re.findall(r"containerPort: (\d+)", sts) == [port, health]
    assert re.findall(r"grpc:\n\s+port: (\d+)", sts) == [health] * 3
    service = (K8S / "service.yaml").read_text(encoding="utf-8")
    assert re.findall(r"^\s+port: (\d+)$", service, flags=re.M) == [port]
    mounts = dict(re.findall(r"- name: (\S+)\n\s+mountPath: (\S+)", sts))
    assert Path(config["store_path"]).parent == Path(mounts["store"])
    for key in ("ca_cert", "cert", "key"):
        assert Path(config["tls"][key]).parent == Path(mounts["tls"])
    for key in ("operator_signing_key", "operator_public_key"):
        assert Path(config[key]).parent == Path(mounts["signing"])
    assert Path(config["result_keys_dir"]) == Path(mounts["result-keys"])
    assert Path(config["revocation_file"]).parent == Path(mounts["revocations"])
    assert f'"{mounts["config"]}/coordinator.toml"' in sts
    pvc = (K8S / "pvc.yaml").read_text(encoding="utf-8")
    assert _field(sts, "claimName") == _field(pvc, "name")
    assert re.search(r"^\s+- \{key: tls\.crt, path: tls\.crt\}", sts, flags=re.M)


def test_k8s_secrets_are_documented_and_none_is_shipped() -> None:
    """The base ships no Secret (the provisioned kit generates them); the kustomization's
    header names each one the StatefulSet mounts."""
    assert not list(K8S.glob("*secret*"))
    sts = (K8S / "statefulset.yaml").read_text(encoding="utf-8")
    header = (K8S / "kustomization.yaml").read_text(encoding="utf-8")
    names = re.findall(r"secretName: (\S+)", sts)
    assert names == [
        "oversight-coordinator-tls",
        "oversight-operator-signing",
        "oversight-result-keys",
    ]
    for name in names:
        assert re.search(rf"^#   {name}\b", header, flags=re.M), name
    for path in K8S.iterdir():
        assert "PRIVATE KEY-----" not in path.read_text(encoding="utf-8")


# --- images and the systemd unit ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dockerfile", "command", "port"),
    [
        ("coordinator.Dockerfile", "oversight", "50051"),
        ("carrier-node.Dockerfile", "carrier-node", None),
    ],
)
def test_dockerfile_shape(dockerfile: str, command: str, port: str | None) -> None:
    text = (DEPLOY / "docker" / dockerfile).read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert len(re.findall(r"^FROM \$\{PYTHON_IMAGE\} AS \w+$", text, flags=re.M)) == 2
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
    assert re.search(rf'^ENTRYPOINT \["{command}"\]$', text, flags=re.M)
    exposed = re.findall(r"^EXPOSE (\d+)$", text, flags=re.M)
    assert exposed == ([port] if port else [])
    assert not re.search(r"^(ENV|ARG)\b.*(SECRET|PASSWORD|TOKEN|PRIVATE)", text, flags=re.M)
    assert not re.search(r"^COPY .*\.(key|pem|crt)\b", text, flags=re.M)


def _unit(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_is_hardened_and_matches_the_example_config() -> None:
    unit = _unit(DEPLOY / "systemd" / "carrier-node.service")
    assert unit["ExecStart"] == [
        "/opt/fedoversight/bin/carrier-node serve --config /etc/fedoversight/node.toml --json-logs"
    ]
    for key, value in {
        "User": "carrier-node",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
    }.items():
        assert unit[key] == [value], key
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert unit["CapabilityBoundingSet"] == [""]
    node = load_node_config(DEPLOY / "systemd" / "node.example.toml")
    assert str(node.state_dir) in unit["ReadWritePaths"]
    assert str(node.data_dir) in unit["ReadOnlyPaths"]
    assert node.policy_file is not None
    assert str(node.policy_file.parent) in unit["ReadOnlyPaths"]
