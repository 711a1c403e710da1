"""The shared (fsspec) registry on a filesystem: many writers, readers never see half a version."""

from __future__ import annotations

import threading
from pathlib import Path

import model_factory
import pytest
from fraud_repo import FRAUD_FEATURES as FS
from prometheus_client import CollectorRegistry

from loopline.contracts.errors import ConfigError, ModelNotFoundError
from loopline.contracts.settings import RegistrySettings
from loopline.registry.backend import RegistryBackend, open_registry
from loopline.registry.manifest import ManifestFields, sha256_hex
from loopline.registry.object_store import ObjectStore
from loopline.registry.shared import SharedRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model_manager import ModelManager
from loopline.serving.model_slot import ModelSlot

FIELDS = ManifestFields("fraud", "f" * 64, ["a"])


def host(root: Path) -> SharedRegistry:
    """The registry as one host opens it (each host has its own store client)."""
    reg = open_registry(RegistrySettings(backend="fsspec", uri=root.as_uri()))
    assert isinstance(reg, SharedRegistry) and isinstance(reg, RegistryBackend)
    return reg


def run_all(*targets) -> None:
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_publishers_get_distinct_whole_versions(tmp_path: Path) -> None:
    published: list[tuple[str, bytes]] = []

    def publisher(i: int) -> None:
        reg = host(tmp_path)
        for j in range(3):
            data = f"model {i}.{j}".encode()
            published.append((reg.publish("fraud", data, FIELDS).manifest.version, data))

    run_all(*(lambda i=i: publisher(i) for i in range(4)))
    numbers = sorted(int(v) for v, _ in published)
    assert numbers == list(range(1, 13))
    reader = host(tmp_path)
    for version, data in published:
        mv = reader.get("fraud", version)
        assert mv.read_verified() == data and mv.manifest.sha256 == sha256_hex(data)
    assert reader.models() == ["fraud"]


def test_a_half_written_version_is_invisible_and_skipped(tmp_path: Path) -> None:
    reg = host(tmp_path)
    reg.publish("fraud", b"one", FIELDS)
    # A publisher that died after claiming v2 (model written, manifest not yet).
    assert reg.store.create("fraud/versions/2/model.onnx", b"half")
    assert [v.manifest.version for v in reg.versions("fraud")] == ["1"]
    with pytest.raises(ModelNotFoundError):
        reg.set_alias("fraud", "champion", "2")
    assert reg.publish("fraud", b"three", FIELDS).manifest.version == "3"


def test_alias_moves_from_many_hosts_lose_nothing(tmp_path: Path) -> None:
    for _ in range(12):
        host(tmp_path).publish("fraud", b"x", FIELDS)

    def mover(versions: range) -> None:
        reg = host(tmp_path)
        for v in versions:
            reg.set_alias("fraud", "champion", str(v))

    run_all(*(lambda i=i: mover(range(i * 3 + 1, i * 3 + 4)) for i in range(4)))
    # Twelve moves to twelve versions: a move lost to a concurrent writer would be missing.
    history = host(tmp_path).alias_history("fraud", "champion")
    assert sorted(history, key=int) == [str(v) for v in range(1, 13)]
    assert history[-1] == host(tmp_path).aliases("fraud")["champion"]


def test_a_rollout_ends_once_whoever_decides(tmp_path: Path) -> None:
    reg = host(tmp_path)
    for data in (b"one", b"two"):
        reg.publish("fraud", data, FIELDS)
    reg.set_alias("fraud", "champion", "1")
    reg.start_rollout(
        RolloutPlan.start("fraud", candidate="2", champion="1", mode="shadow", plan_id="p")
    )
    assert reg.aliases("fraud") == {"champion": "1", "candidate": "2"}
    ends: list[object] = []
    run_all(
        *(
            lambda s=s: ends.append(host(tmp_path).finish_rollout("fraud", "p", s, "x"))
            for s in ("promoted", "aborted", "promoted")
        )
    )
    winners = [e for e in ends if e is not None]
    assert len(winners) == 1
    assert reg.rollout("fraud") == winners[0]
    assert len(reg.rollout_history("fraud")) == 2


def test_serving_follows_the_shared_alias(tmp_path: Path) -> None:
    reg = host(tmp_path)
    # The same cached model twice: two versions, no extra training.
    first = model_factory.publish(reg)
    second = model_factory.publish(reg, alias=None)
    metrics = ServingMetrics(CollectorRegistry())
    slot = ModelSlot()
    manager = ModelManager(
        registry=host(tmp_path),
        model_name=FS.name,
        alias="champion",
        feature_set=FS,
        slot=slot,
        metrics=metrics,
        golden_tolerance=1e-4,
    )
    assert manager.sync().result == "loaded"
    assert slot.models()[0].version == first.manifest.version
    assert manager.sync().result == "current"
    reg.set_alias("fraud", "champion", second.manifest.version)
    assert manager.sync().result == "loaded"
    assert slot.models()[0].version == second.manifest.version
    reg.rollback("fraud")
    assert manager.sync().result == "rolled_back"


@pytest.mark.parametrize(
    ("settings", "needs"),
    [
        ({"backend": "fsspec"}, "needs registry.uri"),
        ({"backend": "mlflow"}, "needs registry.mlflow_tracking_uri"),
        ({"backend": "git"}, "use one of"),
    ],
)
def test_registry_settings_say_what_is_missing(settings: dict[str, str], needs: str) -> None:
    with pytest.raises(ConfigError, match=needs):
        RegistrySettings(**settings)


def test_a_store_without_conditional_writes_is_refused() -> None:
    with pytest.raises(ConfigError, match="s3:// and file://"):
        ObjectStore.open("memory://registry")
