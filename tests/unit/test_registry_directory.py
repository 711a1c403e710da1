"""The directory registry: versions, integrity, aliases, rollback, atomic publish."""

from __future__ import annotations

import multiprocessing as mp
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loopline.contracts.errors import (
    IntegrityError,
    ModelError,
    ModelNotFoundError,
    RegistryWriteError,
)
from loopline.registry.directory import (
    DirectoryRegistry,
    ManifestFields,
    sha256_hex,
    staging_prefix,
)


def fields(**kw: object) -> ManifestFields:
    base = {"feature_set": "fraud", "fingerprint": "f" * 64, "feature_names": ["a", "b"]}
    return ManifestFields(**{**base, **kw})  # type: ignore[arg-type]


def test_publish_numbers_versions_and_records_identity(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    v1 = reg.publish("fraud", b"one", fields(metrics={"auc": 0.9}))
    v2 = reg.publish("fraud", b"two", fields(parent_version="1"))
    assert [v.manifest.version for v in reg.versions("fraud")] == ["1", "2"]
    assert v1.manifest.sha256 == sha256_hex(b"one")
    assert v2.manifest.parent_version == "1"
    assert reg.get("fraud", "1").manifest.metrics == {"auc": 0.9}
    assert reg.models() == ["fraud"]
    with pytest.raises(ModelNotFoundError):
        reg.get("fraud", "3")


def test_tampered_model_file_is_refused(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    v = reg.publish("fraud", b"good", fields())
    v.model_path.write_bytes(b"evil")
    with pytest.raises(IntegrityError):
        reg.get("fraud", "1").read_verified()


def test_alias_moves_and_rollback_moves_it_back(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    for i in range(3):
        reg.publish("fraud", f"m{i}".encode(), fields())
    assert reg.resolve("fraud", "champion") is None
    reg.set_alias("fraud", "champion", "1")
    reg.set_alias("fraud", "champion", "2")
    reg.set_alias("fraud", "champion", "3")
    assert reg.alias_history("fraud", "champion") == ["1", "2", "3"]
    assert reg.rollback("fraud") == "2"
    assert reg.resolve("fraud", "champion").manifest.version == "2"  # type: ignore[union-attr]
    assert reg.rollback("fraud") == "1"
    with pytest.raises(ModelNotFoundError):
        reg.rollback("fraud")
    with pytest.raises(ModelNotFoundError):
        reg.set_alias("fraud", "champion", "9")
    assert reg.aliases("fraud") == {"champion": "1"}


def test_update_manifest_changes_annotations_never_identity(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    reg.publish("fraud", b"x", fields())
    updated = reg.update_manifest("fraud", "1", status="rejected", decision="worse")
    assert (updated.manifest.status, updated.manifest.decision) == ("rejected", "worse")
    assert updated.read_verified() == b"x"
    for change in ({"sha256": "0" * 64}, {"fingerprint": "e" * 64}, {"golden_scores": [0.5]}):
        with pytest.raises(ModelError, match="cannot change"):
            reg.update_manifest("fraud", "1", **change)


def test_concurrent_publishers_never_share_a_version(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    got: list[str] = []
    lock = threading.Lock()

    def publish(i: int) -> None:
        for j in range(5):
            v = reg.publish("fraud", f"{i}-{j}".encode(), fields())
            with lock:
                got.append(v.manifest.version)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=int) == [str(i) for i in range(1, 21)]
    for v in reg.versions("fraud"):
        v.read_verified()


def _reader(root: str, ready: Any, stop: Any, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Load every version and the champion over and over; report anything partial."""
    reg = DirectoryRegistry(root)
    loads, problems = 0, []
    ready.release()
    # At least one pass after the writer stops: a slow start on a loaded
    # machine must not leave a reader with nothing read.
    while not stop.is_set() or loads == 0:
        try:
            for v in reg.versions("fraud"):
                data = v.read_verified()
                if len(data) != 1_000_000 or v.manifest.golden_scores != [0.5]:
                    problems.append(f"v{v.manifest.version}: partial ({len(data)} bytes)")
                loads += 1
            champ = reg.resolve("fraud", "champion")
            if champ is not None:
                champ.read_verified()
                loads += 1
        except Exception as e:  # any failure is the finding this test reports
            problems.append(repr(e))
    out.put((loads, problems[:5]))


def test_readers_in_other_processes_never_see_a_partial_version(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    ready, stop = ctx.Semaphore(0), ctx.Event()
    readers = [
        ctx.Process(target=_reader, args=(str(tmp_path), ready, stop, out)) for _ in range(2)
    ]
    for r in readers:
        r.start()
    for _ in readers:
        assert ready.acquire(timeout=60), "a reader process did not start"
    published = 0
    stop_at = time.monotonic() + 3.0
    while time.monotonic() < stop_at:
        # Big enough that a non-atomic write would be caught half-written.
        v = reg.publish("fraud", bytes([published % 256]) * 1_000_000, fields(golden_scores=[0.5]))
        reg.set_alias("fraud", "champion", v.manifest.version)
        published += 1
    stop.set()
    results = [out.get(timeout=60) for _ in readers]
    for r in readers:
        r.join(timeout=30)
    assert published > 5
    assert all(loads > 0 for loads, _ in results)
    assert [p for _, problems in results for p in problems] == []


def _publish_over_a_size_limit(root: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """In a child process whose files may not grow past 4 KiB (a full disk, as the
    kernel reports it to one process: EFBIG), publish a 64 KiB model."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    try:
        DirectoryRegistry(root).publish("fraud", b"x" * 65536, fields())
        out.put(("published", ""))
    except Exception as e:
        out.put((type(e).__name__, str(e)))


def test_a_refused_write_fails_the_publish_cleanly(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    reg.publish("fraud", b"one", fields())
    reg.set_alias("fraud", "champion", "1")
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_publish_over_a_size_limit, args=(str(tmp_path), out))
    child.start()
    kind, message = out.get(timeout=30)
    child.join(10)
    assert kind == "RegistryWriteError"
    assert "could not write a new version of model 'fraud'" in message
    assert "free space" in message and "\n" not in message
    assert [v.manifest.version for v in reg.versions("fraud")] == ["1"]
    assert reg.aliases("fraud") == {"champion": "1"}
    assert sorted(p.name for p in (tmp_path / "fraud" / "versions").iterdir()) == ["1"]


def test_a_write_refused_by_the_file_system_names_the_registry(tmp_path: Path) -> None:
    (tmp_path / "fraud").mkdir()
    (tmp_path / "fraud" / "versions").write_text("not a folder")
    with pytest.raises(RegistryWriteError, match=r"registry .*: could not write a new version"):
        DirectoryRegistry(tmp_path).publish("fraud", b"one", fields())


def test_staging_folders_of_dead_publishers_are_swept(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    reg.publish("fraud", b"one", fields())
    versions = tmp_path / "fraud" / "versions"
    dead = subprocess.Popen(["true"])  # a process that has exited: nobody writes its folder
    dead.wait()
    (versions / f"{staging_prefix(dead.pid)}abc").mkdir()
    (versions / f"{staging_prefix(dead.pid)}abc" / "model.onnx").write_bytes(b"half")
    live = versions / f"{staging_prefix()}def"
    live.mkdir()
    reg.publish("fraud", b"two", fields())
    assert sorted(p.name for p in versions.iterdir()) == sorted(["1", "2", live.name])
