"""The committed gRPC stubs are exactly what `python -m loopline.protogen` makes."""

from __future__ import annotations

import shutil
from pathlib import Path

from loopline.protogen import PROTO_FILES, generate

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    proto_root = tmp_path / "proto"
    for rel in PROTO_FILES:
        (proto_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "proto" / rel, proto_root / rel)
    generate(proto_root, proto_root)
    stale = []
    for rel in PROTO_FILES:
        stem = rel.removesuffix(".proto")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            fresh = (proto_root / (stem + suffix)).read_text()
            committed = ROOT / "proto" / (stem + suffix)
            if not committed.exists() or committed.read_text() != fresh:
                stale.append(stem + suffix)
    assert not stale, (
        f"stale stubs {stale}: run `python -m loopline.protogen` and commit the result"
    )
