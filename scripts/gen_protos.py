"""Regenerate the committed wire code from protos/ (the one way it is produced).

The generator runs in an environment of its own, made by ``uv`` from the exact versions pinned
in :data:`GENERATOR` (cached by uv after the first run): grpcio-tools carries the protoc that
writes the code, and the protobuf gencode version stamped in every ``*_pb2.py`` is that protoc's.

Why not the project's own environment: the code must load under protobuf 6 (what Flower, the
``flower`` extra, requires) as well as protobuf 7 (what the project's environment has). By
protobuf's cross-version runtime guarantee a runtime accepts gencode of its own major version
(not newer than itself) and of the major version just before it; so code from a protoc of the
6.x line is accepted by runtimes 6.x (from that minor on) and 7.x, while code from a 7.x protoc
is refused by every 6.x runtime. The grpcio-tools releases that carry a 6.x protoc require
protobuf < 7 themselves, so they cannot be installed beside the project's protobuf 7: hence
the separate environment. The runtime minimums in pyproject (``protobuf``, ``grpcio``,
``grpcio-health-checking``, ``grpcio-reflection``) match what this code checks for.

``--check`` regenerates into a temporary directory and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE_DIR = Path("fedoversight") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

#: The generator's environment, exactly. grpcio-tools 1.81.1 carries protoc 6.33.5 (the
#: gencode then needs protobuf >= 6.33.5, any 6.x or 7.x after it) and writes gRPC code that
#: needs grpcio >= 1.81.1; mypy-protobuf writes the ``.pyi`` stubs. protobuf and grpcio are
#: the generator's own runtime (the plugin runs on them), pinned so nothing drifts.
GENERATOR = (
    "grpcio-tools==1.81.1",
    "grpcio==1.81.1",
    "protobuf==6.33.5",
    "mypy-protobuf==5.1.0",
)


def _uv() -> list[str]:
    """How to call uv: the package (the ``dev`` extra has it) or a ``uv`` on the PATH."""
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    found = shutil.which("uv")
    if found is None:
        raise SystemExit("uv is needed to run the generator: pip install uv (the dev extra has it)")
    return [found]


def generate(out: Path) -> list[Path]:
    """Run the pinned generator (in its own environment) writing into ``out``."""
    command = [
        *_uv(),
        "run",
        "--isolated",
        "--no-project",
        "--quiet",
        "--python",
        sys.executable,
        *(arg for pin in GENERATOR for arg in ("--with", pin)),
        "python",
        str(Path(__file__).resolve()),
        "--generate-into",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit("the generator failed (see above)")
    return sorted(p for p in (out / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def _protoc(out: Path) -> int:
    """Inside the generator's environment: protoc with the gRPC and mypy plugins."""
    import grpc_tools
    from grpc_tools import protoc

    bin_dir = Path(sys.executable).parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE_DIR).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        # This environment's plugins, whatever else is on the PATH.
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    return 0 if protoc.main(args) == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code drifted")
    parser.add_argument("--generate-into", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.generate_into is not None:
        return _protoc(options.generate_into)
    target = ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        if options.check:
            committed = sorted(p for p in target.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
            names = [p.name for p in produced]
            drift = [n for n in names if not (target / n).exists()]
            drift += [p.name for p in committed if p.name not in names]
            drift += [
                p.name
                for p in produced
                if (target / p.name).exists() and not filecmp.cmp(p, target / p.name, shallow=False)
            ]
            if drift:
                print("generated wire code drifted from protos/: " + ", ".join(sorted(drift)))
                print("run: python scripts/gen_protos.py")
                return 1
            print(f"wire code up to date ({len(names)} files)")
            return 0
        for path in produced:
            shutil.copyfile(path, target / path.name)
        print(f"wrote {len(produced)} files to {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
