"""Generate the Python stubs of the crossrec API from proto/crossrec/v1/*.proto.

``proto/`` holds the contract only. The stubs (``*_pb2.py``, ``*_pb2_grpc.py`` and their ``.pyi``
type stubs from mypy-protobuf) are generated into the ``crossrec/v1/`` package at the repository
root, committed, and import as ``crossrec.v1``. Run after editing a .proto:

    .venv/bin/python proto/generate.py          # rewrite the committed stubs
    .venv/bin/python proto/generate.py --check  # exit 1 when the committed stubs are stale

Needs the ``dev`` extra (grpcio-tools and mypy-protobuf at the pinned versions).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
#: The .proto files (their folder is the proto package path, crossrec/v1).
PACKAGE = PROTO_ROOT / "crossrec" / "v1"
#: The generated Python package they become.
STUBS = PROTO_ROOT.parent / "crossrec" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    # The mypy-protobuf plugins are console scripts installed next to this interpreter.
    path = Path(sys.executable).parent / name
    found = path if path.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return str(found)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every .proto of the package; return the files written under ``out_dir``."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE.glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(
        p for p in (out_dir / "crossrec" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )


def stale_files() -> list[str]:
    """Names of committed stubs that differ from a fresh generation (or are missing or extra)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        committed = {p.name: p for p in STUBS.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        names = sorted(set(fresh) | set(committed))
        return [
            n
            for n in names
            if n not in fresh
            or n not in committed
            or not filecmp.cmp(fresh[n], committed[n], shallow=False)
        ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="only report stale stubs; exit 1 if any"
    )
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated stubs (run proto/generate.py): " + ", ".join(stale))
            return 1
        print("generated stubs are up to date")
        return 0
    for old in STUBS.iterdir():
        if old.name.endswith(GENERATED_SUFFIXES):
            old.unlink()
    for path in generate(STUBS.parent.parent):
        print(f"wrote {path.relative_to(PROTO_ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
