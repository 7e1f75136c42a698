"""The Kubernetes manifests as ``kubectl kustomize`` renders them: ``deploy/k8s`` and the kit
``oversight provision`` writes over it. Valid against the Kubernetes schemas, the pod at the
``restricted`` Pod Security level, and every path of the pod's coordinator.toml mounted with
the file it names. The round a kit's pod answers is in tests/integration/test_deploy_k8s.py.
"""

from __future__ import annotations

import copy
import filecmp
import stat
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from coordinator.config import Role, load_coordinator_config
from coordinator.provision import OperatorPlan, Provisioned, ProvisionPlan, provision
from coordinator.provision_k8s import DEFAULT_BASE, write_k8s_kit
from tests import kustomize

ROOT = Path(__file__).resolve().parents[2]
BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
#: The oldest Kubernetes release the manifests are for (gRPC probes are GA from 1.27), and the
#: newest the schemas know.
VERSIONS = ("1.28.0", latest_version())


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    plan = ProvisionPlan(
        coordinator_id="agency",
        coordinator_address="oversight.example.gov:443",
        carriers=({"id": "c001", "name": "Carrier one"}, {"id": "c-002"}),  # type: ignore[arg-type]
        operators=(
            OperatorPlan(name="alice", role=Role.OPERATOR),
            OperatorPlan(name="audit", role=Role.VIEWER, token=True),
        ),
    )
    return provision(plan, tmp_path_factory.mktemp("federation") / "kits")


@pytest.fixture(scope="module")
def kit(provisioned: Provisioned) -> Path:
    return provisioned.out_dir / "k8s"


def test_the_base_is_found_in_this_checkout() -> None:
    assert DEFAULT_BASE == BASE
    assert (BASE / "kustomization.yaml").is_file()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("which", ["deploy/k8s", "kit"])
def test_manifests_are_valid_kubernetes_objects(which: str, version: str, kit: Path) -> None:
    manifests = kustomize.build(BASE if which == "deploy/k8s" else kit)
    kinds = sorted(m["kind"] for m in manifests)
    expected = ["ConfigMap", "ConfigMap", "Namespace", "PersistentVolumeClaim", "Service"]
    expected += ["StatefulSet"] if which == "deploy/k8s" else ["Secret"] * 3 + ["StatefulSet"]
    assert kinds == sorted(expected)
    for manifest in manifests:
        # strict: a field the schema does not know (a typo) is an error too.
        kubernetes_validate.validate(manifest, version, strict=True)


def test_schema_validation_catches_a_wrong_field() -> None:
    """Guards the test above: a misspelled probe field does not validate."""
    manifests = kustomize.build(BASE)
    broken = copy.deepcopy(kustomize.only(manifests, "StatefulSet"))
    probe = broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["grpc"]["prot"] = probe["grpc"].pop("port")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_kit_builds_on_a_copy_of_deploy_k8s(kit: Path) -> None:
    files = sorted(p.name for p in BASE.iterdir() if p.is_file())
    assert sorted(p.name for p in (kit / "base").iterdir()) == files
    match, mismatch, errors = filecmp.cmpfiles(BASE, kit / "base", files, shallow=False)
    assert mismatch == [] and errors == [] and match == files
    text = (kit / "kustomization.yaml").read_text(encoding="utf-8")
    assert "resources:\n  - base\n" in text


@pytest.mark.parametrize("container", [kustomize.CHECK_CONTAINER, kustomize.CONTAINER])
def test_every_path_of_the_kit_config_is_mounted(container: str, kit: Path) -> None:
    pod = kustomize.CoordinatorPod(kustomize.build(kit), container)
    assert pod.config_path == kustomize.CoordinatorPod(pod.manifests).config_path
    config = kustomize.pod_config(pod)
    assert kustomize.unmounted_paths(pod, config) == []
    named = {key for key, _ in kustomize.paths_in(config)}
    assert named >= {
        "store_path",
        "operator_signing_key",
        "operator_public_key",
        "result_keys_dir",
        "revocation_file",
        "tls.ca_cert",
        "tls.cert",
        "tls.key",
    }


def test_every_path_of_the_base_config_has_a_mount() -> None:
    """The base alone has no Secrets (the kit generates them): each path still lies in a
    mount, and the mount of a Secret names the file."""
    pod = kustomize.CoordinatorPod(kustomize.build(BASE))
    config = kustomize.pod_config(pod)
    for key, path in kustomize.paths_in(config):
        mount = pod.mount_of(path)
        assert mount is not None, f"{key} = {path}: nothing is mounted there"
        secret = mount.volume.get("secret")
        if secret is not None and "items" in secret and path != mount.path:
            assert str(path.relative_to(mount.path)) in {i["path"] for i in secret["items"]}


@pytest.mark.parametrize(
    "breakage",
    ["no result-keys mount", "a carrier's key missing", "signing key not projected"],
)
def test_a_missing_mount_or_key_is_found(breakage: str, kit: Path) -> None:
    """Guards the test above: the check sees what a broken pod would lack."""
    manifests = kustomize.build(kit)
    sts = kustomize.only(manifests, "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    if breakage == "no result-keys mount":
        container["volumeMounts"] = [
            m for m in container["volumeMounts"] if m["name"] != "result-keys"
        ]
        expected = "result_keys_dir"
    elif breakage == "a carrier's key missing":
        del kustomize.only(manifests, "Secret", "oversight-result-keys")["data"]["c-002.pub"]
        expected = "result_keys_dir"  # the directory holds c001's key, not c-002's
    else:
        volume = next(
            v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "signing"
        )
        volume["secret"]["items"] = volume["secret"]["items"][1:]
        expected = "operator_signing_key"
    pod = kustomize.CoordinatorPod(manifests)
    problems = kustomize.unmounted_paths(pod, kustomize.pod_config(pod))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_the_kit_config_is_the_federation_s(provisioned: Provisioned, kit: Path) -> None:
    config = load_coordinator_config(kit / "coordinator.toml")
    assert config.insecure is False and config.auto_register is False
    assert config.tls is not None
    assert config.operator_signing_key is not None and config.result_keys_dir is not None
    assert config.coordinator_id == "agency"
    assert [(c.id, c.name) for c in config.carriers] == [("c001", "Carrier one"), ("c-002", "")]
    assert {o.name: o.role for o in config.operators} == {
        "alice": Role.OPERATOR,
        "audit": Role.VIEWER,
    }
    provisioned_config = load_coordinator_config(provisioned.coordinator_config)
    assert config.operators == provisioned_config.operators  # token digests included
    assert config.listen == "0.0.0.0:50051"  # the container port, whatever carriers dial
    for path in (kit / "tls" / "tls.key", kit / "signing" / "operator-signing.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (kit / "tls" / "ca.crt").read_bytes() == provisioned.trust_bundle.read_bytes()
    assert sorted(p.name for p in (kit / "result-keys").iterdir()) == ["c-002.pub", "c001.pub"]
    # Nothing the cluster does not need: no CA key, no operator or carrier secrets.
    assert not list(kit.rglob("ca.key")) and not list(kit.rglob("node.key"))
    assert not list(kit.rglob("operator.key")) and not list(kit.rglob("token"))


@pytest.mark.parametrize("which", ["deploy/k8s", "kit"])
def test_the_pod_is_restricted_and_probed_on_grpc_health(which: str, kit: Path) -> None:
    manifests = kustomize.build(BASE if which == "deploy/k8s" else kit)
    namespace = kustomize.only(manifests, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = kustomize.CoordinatorPod(manifests)
    spec, container = pod.pod_spec, pod.container
    assert pod.statefulset["spec"]["replicas"] == 1
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    (check,) = spec["initContainers"]
    assert check["args"][-1] == "--check" and check["image"] == container["image"]
    for each in (check, container):
        context = each["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert each["resources"]["requests"] and each["resources"]["limits"]
    allowed = {"configMap", "secret", "projected", "emptyDir", "persistentVolumeClaim"}
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= allowed, volume
    assert container["resources"]["requests"] and container["resources"]["limits"]

    config = kustomize.pod_config(pod)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == int(config["listen"].rsplit(":", 1)[1])
    assert ports["health"] == int(config["health_listen"].rsplit(":", 1)[1])
    assert ports["metrics"] == int(config["metrics_address"].rsplit(":", 1)[1])
    template = pod.statefulset["spec"]["template"]["metadata"]
    assert template["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(container[probe]) - {
            "periodSeconds",
            "failureThreshold",
            "timeoutSeconds",
        } == {"grpc"}
        assert container[probe]["grpc"] == {"port": ports["health"]}
    # The Service carries the TLS ports only; the plaintext health port stays in the pod.
    expected = [(50051, "grpc")]
    if "operator_listen" in config:  # the kit: an operator holds a token
        assert ports["operator"] == int(config["operator_listen"].rsplit(":", 1)[1])
        expected.append((ports["operator"], "operator"))
    assert ("operator_listen" in config) == (which == "kit")
    service = kustomize.only(manifests, "Service")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == expected


def test_no_kit_without_the_base(provisioned: Provisioned, tmp_path: Path) -> None:
    """An installed package without deploy/ writes no Kubernetes kit (and says so)."""
    other = Provisioned(**{**provisioned.__dict__, "out_dir": tmp_path})
    assert write_k8s_kit(other, base=tmp_path / "nowhere") is None
    assert not (tmp_path / "k8s").exists()


def test_the_kit_toml_keeps_the_base_s_pod_settings(kit: Path) -> None:
    base = tomllib.loads((BASE / "coordinator.toml").read_text(encoding="utf-8"))
    pod = tomllib.loads((kit / "coordinator.toml").read_text(encoding="utf-8"))
    federation = {"coordinator_id", "carriers", "operators", "revoked_serials", "operator_listen"}
    assert pod["operator_listen"] == "0.0.0.0:50052"  # audit holds a token
    assert {k: v for k, v in pod.items() if k not in federation} == {
        k: v for k, v in base.items() if k not in federation
    }


def test_without_tokens_the_operator_api_is_on_the_main_port_only(tmp_path: Path) -> None:
    plan = ProvisionPlan(carriers=({"id": "c001"},))  # type: ignore[arg-type]
    kit = provision(plan, tmp_path / "kits").out_dir / "k8s"
    assert "operator_listen" not in tomllib.loads((kit / "coordinator.toml").read_text())
    assert "patches:" not in (kit / "kustomization.yaml").read_text()
    manifests = kustomize.build(kit)
    service = kustomize.only(manifests, "Service")
    assert [p["port"] for p in service["spec"]["ports"]] == [50051]
    ports = kustomize.CoordinatorPod(manifests).container["ports"]
    assert [p["name"] for p in ports] == ["grpc", "health", "metrics"]


def test_a_wheel_carries_every_file_of_the_kubernetes_base() -> None:
    """``oversight provision`` in an image (a wheel, no checkout) copies the base from the
    data files the wheel installs: pyproject must list every file of ``deploy/k8s``, and the
    images' build contexts must include them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = pyproject["tool"]["setuptools"]["data-files"]["share/fedoversight/k8s"]
    assert sorted(listed) == sorted(
        str(p.relative_to(ROOT)) for p in BASE.iterdir() if p.is_file() and p.suffix != ".md"
    )
    for image in ("coordinator", "carrier-node"):
        ignore = (ROOT / "deploy" / "docker" / f"{image}.Dockerfile.dockerignore").read_text()
        assert "!deploy/k8s/" in ignore.splitlines(), image
