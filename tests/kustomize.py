"""Kubernetes manifests as the cluster would see them: ``kubectl kustomize`` output, the
coordinator pod's mounts, and the files those mounts would hold, written under a local root.

``kubectl`` (with its built-in kustomize, which runs offline) is required: where it is missing
the tests needing it skip with the reason, and fail in CI (``CI`` set), where it is part of
the machine.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

Manifest = dict[str, Any]

#: The coordinator's container in the StatefulSet, and the init container checking its config.
CONTAINER = "coordinator"
CHECK_CONTAINER = "check"
#: Where the container reads its config (its ``--config`` argument).
CONFIG_FLAG = "--config"


def kubectl() -> str:
    """The kubectl binary, or a skip (a failure in CI)."""
    found = shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is required here (kubectl kustomize) but not on PATH")
        pytest.skip("kubectl not on PATH (install it to build the Kubernetes manifests)")
    return found


def build(directory: Path) -> list[Manifest]:
    """``kubectl kustomize DIRECTORY``: every resource it renders."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def only(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one resource of ``kind`` (named ``name``, or with the name ``name-HASH`` that a
    kustomize generator gives it)."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind
        and (
            name is None
            or m["metadata"]["name"] == name
            or m["metadata"]["name"].rsplit("-", 1)[0] == name
        )
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in the manifests"
    return found[0]


@dataclass(frozen=True)
class Mount:
    """One volumeMount of the coordinator container and the volume behind it."""

    path: PurePosixPath
    read_only: bool
    volume: Manifest

    @property
    def writable_volume(self) -> bool:
        return not self.read_only and (
            "emptyDir" in self.volume or "persistentVolumeClaim" in self.volume
        )


class CoordinatorPod:
    """The coordinator's pod as ``kubectl kustomize`` renders it, seen from one of its
    containers (or init containers)."""

    def __init__(self, manifests: list[Manifest], container: str = CONTAINER) -> None:
        self.manifests = manifests
        self.statefulset = only(manifests, "StatefulSet", "oversight-coordinator")
        spec = self.statefulset["spec"]["template"]["spec"]
        self.pod_spec: Manifest = spec
        every = [*spec.get("initContainers", []), *spec["containers"]]
        containers = [c for c in every if c["name"] == container]
        assert len(containers) == 1, f"no container {container}"
        self.container: Manifest = containers[0]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.mounts = []
        for m in self.container.get("volumeMounts", []):
            assert "subPath" not in m, "a subPath mount never sees a ConfigMap's updates"
            assert m["name"] in volumes, f"volumeMount {m['name']} has no volume"
            self.mounts.append(
                Mount(PurePosixPath(m["mountPath"]), bool(m.get("readOnly")), volumes[m["name"]])
            )

    @property
    def config_path(self) -> PurePosixPath:
        args = list(self.container.get("args", []))
        return PurePosixPath(args[args.index(CONFIG_FLAG) + 1])

    def mount_of(self, path: PurePosixPath) -> Mount | None:
        """The (deepest) mount a path of the container lies in."""
        holding = [m for m in self.mounts if path == m.path or m.path in path.parents]
        return max(holding, key=lambda m: len(m.path.parts), default=None)

    def volume_files(self, mount: Mount) -> dict[str, bytes]:
        """The files a ConfigMap or Secret volume holds: relative path -> content."""
        volume = mount.volume
        if "configMap" in volume:
            return self._object_files("ConfigMap", volume["configMap"]["name"], volume["configMap"])
        if "secret" in volume:
            return self._object_files("Secret", volume["secret"]["secretName"], volume["secret"])
        if "projected" in volume:
            files: dict[str, bytes] = {}
            for source in volume["projected"]["sources"]:
                for kind in ("configMap", "secret"):
                    if kind in source:
                        resource = "ConfigMap" if kind == "configMap" else "Secret"
                        name = source[kind]["name"]
                        files.update(self._object_files(resource, name, source[kind]))
            return files
        return {}

    def _object_files(self, kind: str, name: str, source: Manifest) -> dict[str, bytes]:
        matching = [
            m for m in self.manifests if m["kind"] == kind and m["metadata"]["name"] == name
        ]
        if not matching:
            assert source.get("optional"), f"the pod mounts {kind} {name}, which is not there"
            return {}
        data = _object_data(matching[0])
        items = source.get("items")
        if items is None:
            return data
        files = {}
        for item in items:
            assert item["key"] in data, f"{kind} {name} has no key {item['key']}"
            files[item["path"]] = data[item["key"]]
        return files

    def materialise(self, root: Path) -> None:
        """Write every mount's files under ``root`` (``/a/b`` becomes ``root/a/b``); a
        writable volume becomes an empty directory."""
        for mount in self.mounts:
            target = local(root, mount.path)
            target.mkdir(parents=True, exist_ok=True)
            source: Manifest = next(
                (
                    mount.volume[k]
                    for k in ("configMap", "secret", "projected")
                    if k in mount.volume
                ),
                {},
            )
            mode = int(source.get("defaultMode", 0o644))
            for relative, content in self.volume_files(mount).items():
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                path.chmod(mode)


def _object_data(resource: Manifest) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    if resource["kind"] == "Secret":
        for key, value in (resource.get("data") or {}).items():
            data[key] = base64.b64decode(value)
        for key, value in (resource.get("stringData") or {}).items():
            data[key] = value.encode()
    else:
        for key, value in (resource.get("data") or {}).items():
            data[key] = value.encode()
        for key, value in (resource.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value)
    return data


def local(root: Path, path: PurePosixPath) -> Path:
    """Where a container path is under ``root``."""
    return root.joinpath(*path.parts[1:])


def config_text(pod: CoordinatorPod) -> str:
    """The coordinator.toml the container reads, from the volume mounted at its path."""
    mount = pod.mount_of(pod.config_path)
    assert mount is not None, f"nothing is mounted at {pod.config_path}"
    files = pod.volume_files(mount)
    relative = str(pod.config_path.relative_to(mount.path))
    assert relative in files, f"the volume at {mount.path} holds no {relative}"
    return files[relative].decode()


def paths_in(value: object) -> Iterator[tuple[str, PurePosixPath]]:
    """Every absolute path a config holds, with its dotted key."""
    if isinstance(value, dict):
        for key, inner in value.items():
            for name, path in paths_in(inner):
                yield (f"{key}.{name}" if name else str(key)), path
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            for name, path in paths_in(inner):
                yield (f"{i}.{name}" if name else str(i)), path
    elif isinstance(value, str) and value.startswith("/"):
        yield "", PurePosixPath(value)


def unmounted_paths(pod: CoordinatorPod, config: dict[str, Any]) -> list[str]:
    """The config's paths the pod does not provide: a file no mounted volume holds, or the
    round store's directory not on a writable volume. Empty when the pod provides them all."""
    problems = []
    for key, path in paths_in(config):
        mount = pod.mount_of(path)
        if mount is None:
            problems.append(f"{key} = {path}: nothing is mounted there")
        elif key == "store_path":
            if not mount.writable_volume or path.parent != mount.path:
                problems.append(f"{key} = {path}: not on a writable volume")
        elif path != mount.path:
            relative = str(path.relative_to(mount.path))
            if relative not in pod.volume_files(mount):
                problems.append(f"{key} = {path}: the volume at {mount.path} holds no {relative}")
        elif not pod.volume_files(mount):
            problems.append(f"{key} = {path}: the volume mounted there holds nothing")
        elif key == "result_keys_dir":
            held = pod.volume_files(mount)
            for carrier in config.get("carriers", []):
                if "result_public_key" not in carrier and f"{carrier['id']}.pub" not in held:
                    problems.append(f"{key} = {path}: holds no {carrier['id']}.pub")
    return problems


def pod_config(pod: CoordinatorPod) -> dict[str, Any]:
    return tomllib.loads(config_text(pod))
