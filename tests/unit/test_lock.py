"""deploy/requirements.lock still satisfies pyproject.toml, and both images install from it.

The lock (written by scripts/lock.sh) pins every runtime dependency, with hashes, for the images;
pyproject.toml keeps minimum versions for library users. Each of pyproject's dependencies must
be pinned in the lock at a version its specifier allows, and so must what its extras add
(``psycopg[binary]`` → ``psycopg-binary``, read from the installed distribution's metadata).
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "deploy" / "requirements.lock"
DOCKER = ROOT / "deploy" / "docker"
#: The images' interpreter and platform, for which the lock is compiled.
IMAGE_ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


def parse_lock(text: str) -> dict[str, tuple[Version, int]]:
    """Each pinned distribution's version and how many hashes the lock gives for it.

    Raises ValueError on a requirement line that is not ``name==version`` (pip's hash-checking
    mode would refuse it too) or a distribution pinned twice.
    """
    pins: dict[str, tuple[Version, int]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            if current is None:
                raise ValueError(f"a hash before any requirement: {line}")
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"not an exact pin: {line}")
        current = canonicalize_name(match["name"])
        if current in pins:
            raise ValueError(f"pinned twice: {current}")
        pins[current] = (Version(match["version"]), 0)
        if "--hash=" in line:
            pins[current] = (pins[current][0], line.count("--hash="))
    return pins


def runtime_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(spec) for spec in pyproject["project"]["dependencies"]]


def extra_requirements(requirement: Requirement) -> list[Requirement]:
    """What the requirement's extras add, from the installed distribution's metadata."""
    if not requirement.extras:
        return []
    added = []
    for spec in importlib.metadata.requires(requirement.name) or []:
        dependency = Requirement(spec)
        marker = dependency.marker
        if marker is None or marker.evaluate({**IMAGE_ENV, "extra": ""}):
            continue  # not conditional on an extra
        if any(marker.evaluate({**IMAGE_ENV, "extra": extra}) for extra in requirement.extras):
            added.append(dependency)
    return added


def unsatisfied(requirements: list[Requirement], pins: dict[str, tuple[Version, int]]) -> list[str]:
    """The requirements (for the images' Python and platform) the pins do not meet."""
    problems = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate(IMAGE_ENV):
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(pinned[0], prereleases=True):
            problems.append(f"{requirement}: the lock pins {pinned[0]}")
    return problems


def test_the_lock_pins_every_runtime_dependency_within_pyproject() -> None:
    pins = parse_lock(LOCK.read_text(encoding="utf-8"))
    requirements = runtime_requirements()
    assert len(requirements) >= 10
    assert unsatisfied(requirements, pins) == []


def test_the_lock_pins_what_the_extras_add() -> None:
    pins = parse_lock(LOCK.read_text(encoding="utf-8"))
    with_extras = [r for r in runtime_requirements() if r.extras]
    added = [dep for r in with_extras for dep in extra_requirements(r)]
    assert {canonicalize_name(d.name) for d in added} >= {"psycopg-binary"}
    # Names only: the installed version's metadata may pin its companion to itself, not the lock.
    missing = [str(d) for d in added if canonicalize_name(d.name) not in pins]
    assert missing == []


def test_every_pin_carries_hashes() -> None:
    pins = parse_lock(LOCK.read_text(encoding="utf-8"))
    assert [name for name, (_, hashes) in pins.items() if hashes == 0] == []


def test_the_check_catches_a_stale_lock() -> None:
    pins = parse_lock(LOCK.read_text(encoding="utf-8"))
    grpcio = pins["grpcio"]
    too_old = {**pins, "grpcio": (Version("1.60.0"), grpcio[1])}
    wanted = next(r for r in runtime_requirements() if r.name == "grpcio")
    assert str(wanted.specifier) == ">=1.81.1"
    assert unsatisfied(runtime_requirements(), too_old) == [f"{wanted}: the lock pins 1.60.0"]
    dropped = {name: pin for name, pin in pins.items() if name != "duckdb"}
    assert [p for p in unsatisfied(runtime_requirements(), dropped) if "duckdb" in p] == [
        f"{next(r for r in runtime_requirements() if r.name == 'duckdb')}: not in the lock"
    ]
    windows_only = Requirement('pywin32>=300; sys_platform == "win32"')
    assert unsatisfied([windows_only], pins) == []


@pytest.mark.parametrize(
    "line",
    ["grpcio>=1.85.1 \\", "grpcio \\", "-e .", "git+https://example.org/x.git"],
)
def test_anything_but_an_exact_pin_is_rejected(line: str) -> None:
    with pytest.raises(ValueError, match="not an exact pin"):
        parse_lock(f"{line}\n    --hash=sha256:{'0' * 64}\n")


@pytest.mark.parametrize("dockerfile", ["coordinator.Dockerfile", "carrier-node.Dockerfile"])
def test_the_images_install_exactly_the_lock(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text(encoding="utf-8")
    # One logical line per instruction.
    instructions = re.sub(r"\\\n\s*", " ", text)
    download = re.search(r"pip download ([^\n&]*)", instructions)
    assert download is not None
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(download[1].split())
    assert "-r requirements.lock" in download[1]
    installs = re.findall(r"pip install ([^\n&]*)", instructions)
    assert len(installs) == 2
    locked, project = (set(i.split()) for i in installs)
    assert {"--no-index", "--require-hashes", "--no-deps", "/wheels/requirements.lock"} <= locked
    assert {"--no-index", "--no-deps"} <= project
    assert "COPY deploy/requirements.lock ./" in text
    ignore = (DOCKER / f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "!deploy/requirements.lock" in ignore
    # A `# syntax=` line would fetch the Dockerfile frontend from Docker Hub on every build.
    assert not re.search(r"^#\s*syntax=", text, flags=re.M)
