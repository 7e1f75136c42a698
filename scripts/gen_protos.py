"""Regenerate the committed wire code from protos/ (the one way it is produced).

Pinned generator versions live in pyproject's ``dev`` extra (grpcio-tools, mypy-protobuf).
``--check`` regenerates into a temporary directory and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE_DIR = Path("fedoversight") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> list[Path]:
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE_DIR).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code drifted")
    options = parser.parse_args()
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
