"""Generate the Python stubs for ``proto/`` (the one documented command).

Run ``python -m loopline.protogen`` from the repository root after
editing a ``.proto`` file; ``tests/unit/test_proto_stubs.py`` fails when the
committed stubs differ from what this produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_FILES = ("loopline/v1/inference.proto", "loopline/oip/grpc_predict_v2.proto")


def generate(proto_root: Path, out_dir: Path) -> None:
    """Write ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` for every proto file."""
    from grpc_tools import protoc  # a test/dev dependency, imported only here

    for rel in PROTO_FILES:
        args = [
            "protoc",
            f"-I{proto_root}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto_root / rel),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for {rel}")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    proto_root = root / "proto"
    generate(proto_root, proto_root)
    print(f"generated stubs for {len(PROTO_FILES)} proto files under {proto_root}")


if __name__ == "__main__":
    main()
