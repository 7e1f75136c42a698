"""The Kubernetes kit of a provisioned federation: a kustomize overlay over ``deploy/k8s``.

``oversight provision`` writes it beside the other kits::

    OUT/k8s/kustomization.yaml   resources: [base]; the federation's ConfigMaps and Secrets
    OUT/k8s/base/                a copy of deploy/k8s (the manifests the overlay builds on)
    OUT/k8s/coordinator.toml     the federation's coordinator config, with the pod's paths
    OUT/k8s/revoked-serials      revoked certificate serials (none yet)
    OUT/k8s/tls/                 ca.crt (trust bundle), tls.crt, tls.key: the coordinator's
    OUT/k8s/signing/             operator-signing.key, operator-signing.pub
    OUT/k8s/result-keys/         ID.pub: each carrier's result-signing public key

The directory holds everything the cluster needs and nothing else (no CA key, no operator or
carrier kit), so it can be moved anywhere and applied with ``kubectl apply -k OUT/k8s``. The
pod's paths are the base's: the kit's ``coordinator.toml`` is the base's example with the
federation's own name, carriers (and their pins), operators (and token digests) and revoked
serials put in.

The base is found in the checkout this package runs from. An installed package without
``deploy/`` writes no Kubernetes kit (and says so): copy ``deploy/k8s`` of the same release
and build the overlay by hand, as ``deploy/README.md`` describes.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from fedoversight.errors import ConfigError

if TYPE_CHECKING:
    from coordinator.provision import Provisioned

log = logging.getLogger(__name__)

#: ``deploy/k8s`` of the checkout this module belongs to, or, installed from a wheel, the copy
#: the wheel installs as data (``share/fedoversight/k8s`` under the environment's prefix).
_CHECKOUT_BASE = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
_INSTALLED_BASE = Path(sys.prefix) / "share" / "fedoversight" / "k8s"
DEFAULT_BASE = _CHECKOUT_BASE if _CHECKOUT_BASE.is_dir() else _INSTALLED_BASE
#: The namespace of the base's resources.
NAMESPACE = "fedoversight"
#: The port of operator_listen in the pod, set when an operator holds a bearer token.
OPERATOR_PORT = 50052
#: What the kit takes from the provisioned coordinator config; the rest is the pod's.
FEDERATION_KEYS = ("coordinator_id", "carriers", "operators", "revoked_serials")

_LABELS = """\
    options:
      labels:
        app.kubernetes.io/name: oversight-coordinator
        app.kubernetes.io/part-of: fedoversight
"""

_HEADER = """\
# The Kubernetes kit of this federation, written by `oversight provision`: the manifests in
# base/ (a copy of deploy/k8s) with this federation's config and keys.
#
#     kubectl apply -k .            # from this directory; or `kubectl kustomize .` to look
#
# Set the image first (the `images:` entry below). The Secrets hold the coordinator's private
# keys: keep this directory as safe as the keys themselves, and out of version control.
# A changed coordinator.toml or key rolls the pod (the generated names carry a hash); a changed
# revoked-serials is picked up without a restart.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - base
# images:
#   - name: registry.example.org/fedoversight/coordinator
#     newName: REGISTRY/fedoversight/coordinator
#     newTag: VERSION
"""

_OPERATOR_PORT_PATCHES = """\
# An operator holds a bearer token: the operator API also on operator_listen, where TLS asks for
# no client certificate (the token is the identity), in the pod and in the Service.
patches:
  - target: {{kind: StatefulSet, name: oversight-coordinator}}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/ports/-
        value: {{name: operator, containerPort: {port}, protocol: TCP}}
  - target: {{kind: Service, name: oversight-coordinator}}
    patch: |-
      - op: add
        path: /spec/ports/-
        value: {{name: operator, port: {port}, targetPort: operator, protocol: TCP}}
"""

_COORDINATOR_HEADER = """\
# The coordinator's config in the pod, written by `oversight provision` from the base's
# (base/coordinator.toml) with this federation's carriers, operators and revocations. Every path
# is one the StatefulSet mounts (base/statefulset.yaml).

"""


def write_k8s_kit(done: Provisioned, *, base: Path = DEFAULT_BASE) -> Path | None:
    """Write ``OUT/k8s`` for the federation just provisioned; None (and a warning) when the
    base manifests are not there to copy."""
    if not (base / "kustomization.yaml").is_file():
        log.warning("no Kubernetes base at %s: no Kubernetes kit written", base)
        return None
    kit = done.out_dir / "k8s"
    if kit.exists():
        raise ConfigError(f"{kit} exists: refusing to overwrite a Kubernetes kit")
    shutil.copytree(base, kit / "base", ignore=shutil.ignore_patterns(".*", "*.md"))

    config = _pod_config(base / "coordinator.toml", done.coordinator_config)
    # Bearer tokens work on operator_listen only (TLS without a client certificate).
    tokens = any("token_sha256" in o for o in config.get("operators", []))
    if tokens:
        config["operator_listen"] = f"0.0.0.0:{OPERATOR_PORT}"
    _write(kit / "coordinator.toml", _COORDINATOR_HEADER + tomli_w.dumps(config))
    _write(kit / "revoked-serials", (base / "revoked-serials").read_text(encoding="utf-8"))

    tls = {
        "ca.crt": _copy(done.trust_bundle, kit / "tls" / "ca.crt"),
        "tls.crt": _copy(done.coordinator_cert, kit / "tls" / "tls.crt"),
        "tls.key": _copy(done.coordinator_key, kit / "tls" / "tls.key", secret=True),
    }
    signing = {
        "operator-signing.key": _copy(
            done.operator_signing_key, kit / "signing" / "operator-signing.key", secret=True
        ),
        "operator-signing.pub": _copy(
            done.operator_public_key, kit / "signing" / "operator-signing.pub"
        ),
    }
    result_keys = {
        f"{carrier_id}.pub": _copy(
            done.result_keys_dir / f"{carrier_id}.pub",
            kit / "result-keys" / f"{carrier_id}.pub",
        )
        for carrier_id in done.carriers
    }

    text = [_HEADER, "configMapGenerator:\n"]
    text.append(
        _generator("oversight-coordinator-config", {"coordinator.toml": "coordinator.toml"})
    )
    text.append(
        _generator(
            "oversight-revocations",
            {"revoked-serials": "revoked-serials"},
            extra="      disableNameSuffixHash: true\n",
        )
    )
    text.append("secretGenerator:\n")
    text.append(_generator("oversight-coordinator-tls", _files(kit, tls), kind="kubernetes.io/tls"))
    text.append(_generator("oversight-operator-signing", _files(kit, signing), kind="Opaque"))
    text.append(_generator("oversight-result-keys", _files(kit, result_keys), kind="Opaque"))
    if tokens:
        text.append(_OPERATOR_PORT_PATCHES.format(port=OPERATOR_PORT))
    _write(kit / "kustomization.yaml", "".join(text))
    log.info("wrote the Kubernetes kit (%d carriers' result keys)", len(result_keys))
    return kit


def _pod_config(base_config: Path, provisioned: Path) -> dict[str, Any]:
    """The base's coordinator.toml with the federation's own entries."""
    pod = tomllib.loads(base_config.read_text(encoding="utf-8"))
    federation = tomllib.loads(provisioned.read_text(encoding="utf-8"))
    for key in FEDERATION_KEYS:
        if key in federation:
            pod[key] = federation[key]
    return pod


def _generator(
    name: str, files: dict[str, str], *, kind: str | None = None, extra: str = ""
) -> str:
    """One configMapGenerator or secretGenerator entry; ``files`` maps key -> kit path. A
    ConfigMap replaces the base's (a Secret the base does not have is simply created)."""
    lines = [f"  - name: {name}\n", f"    namespace: {NAMESPACE}\n"]
    if kind is None:
        lines.append("    behavior: replace\n")
    else:
        lines.append(f"    type: {kind}\n")
    lines.append("    files:\n")
    lines.extend(f"      - {key}={path}\n" for key, path in files.items())
    lines.append(_LABELS)
    lines.append(extra)
    return "".join(lines)


def _files(kit: Path, files: dict[str, Path]) -> dict[str, str]:
    return {key: path.relative_to(kit).as_posix() for key, path in files.items()}


def _copy(source: Path, target: Path, *, secret: bool = False) -> Path:
    """Copy a provisioned file into the kit; a private key stays readable by its owner only
    (and is never written over an existing file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not secret:
        shutil.copyfile(source, target)
        return target
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(source.read_bytes())
    return target


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
