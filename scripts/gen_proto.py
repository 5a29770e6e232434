"""Generate the Python code of fedgaze's wire contracts from ``proto/**/*.proto``.

The generated modules live beside their ``.proto`` files (``proto/fedgaze/v1/`` is installed as
the package ``fedgaze.v1``) and are committed; ``tests/test_proto.py`` regenerates them into a
temporary folder and fails if the committed copies differ, so they cannot drift from the
contracts. grpcio-tools is pinned in ``constraints.txt`` because its version is written into
the generated code.

    python scripts/gen_proto.py            # regenerate in place
    python scripts/gen_proto.py --out DIR  # generate into DIR (what the test does)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto"


def proto_files() -> list[Path]:
    """Every contract, relative to ``proto/``, in a stable order."""
    return sorted(p.relative_to(PROTO) for p in PROTO.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc (messages, type stubs, gRPC stubs) into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [str(p) for p in proto_files()]
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {files}")
    return sorted(p.relative_to(out) for p in out.rglob("*_pb2*.py*"))


def main() -> int:
    """Generate into ``--out`` (default: in place, beside the contracts)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROTO)
    args = parser.parse_args()
    for path in generate(args.out):
        print(args.out / path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
