"""Helpers for serving tests: an in-memory feature store and a core on a temp registry."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import model_factory
from confluent_kafka import Producer
from fraud_repo import FRAUD_FEATURES
from kafka_support import read_expected
from prometheus_client import CollectorRegistry
from serving_requests import oip_entity_request, outputs_by_name

from loopline.config.kafka import producer_config
from loopline.contracts.redis_layout import WRITE_IF_NEWER, RedisLayout, pack
from loopline.contracts.schemas import ModelUpdate, encode
from loopline.contracts.settings import RolloutSettings, ServingSettings, Settings
from loopline.contracts.topics import Topics
from loopline.registry.directory import DirectoryRegistry, ModelVersion
from loopline.serving.core import InferenceCore
from loopline.serving.feature_store import StoreUnavailableError
from loopline.serving.grpc_server import InferenceServer
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model_manager import ModelManager
from loopline.serving.model_slot import ModelSlot
from loopline.serving.oip_api import OipHandlers
from loopline.serving.requests import Prediction
from loopline.serving.rollout import RolloutFollower

KEY_PREFIX = "ut"
LAYOUT = RedisLayout(KEY_PREFIX)


class MemoryStore:
    """A FeatureStore over a dict; ``fail`` makes every call raise like a dead Redis."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.fail: str | None = None
        self.calls: list[tuple[list[bytes], float]] = []

    def put(self, entity: str, entity_id: str, values: Sequence[float], valid_at: float) -> None:
        key = LAYOUT.feature_key(FRAUD_FEATURES, entity, entity_id).encode()
        self.data[key] = pack(valid_at, tuple(values))

    def mget(self, keys: Sequence[bytes], timeout_s: float) -> list[bytes | None]:
        self.calls.append((list(keys), timeout_s))
        if self.fail:
            raise StoreUnavailableError(f"store {self.fail}", self.fail)
        return [self.data.get(k) for k in keys]


@dataclass
class ListSink:
    """A PredictionSink keeping what it was given."""

    logged: list[tuple[Prediction, int, str, list[str]]] = field(default_factory=list)

    def log(self, prediction: Prediction, event_time_ms: int, event_id: str, names: Any) -> None:
        self.logged.append((prediction, event_time_ms, event_id, list(names)))


@dataclass
class CoreKit:
    core: InferenceCore
    store: MemoryStore
    sink: ListSink
    manager: ModelManager
    registry: DirectoryRegistry
    metrics: ServingMetrics
    rollout: RolloutFollower | None = None


def make_core(
    root: Path, publish: bool = True, rollout: RolloutSettings | None = None, **serving: Any
) -> CoreKit:
    """A core over a MemoryStore and a DirectoryRegistry at ``root`` (model v1 loaded).

    With ``rollout`` settings the core follows the registry's rollout plan
    (call ``kit.rollout.sync()`` after changing it; nothing is announced).
    """
    registry = DirectoryRegistry(root)
    if publish:
        model_factory.publish(registry)
    settings = replace(ServingSettings(), **serving)
    metrics = ServingMetrics(CollectorRegistry())
    slot = ModelSlot()
    store, sink = MemoryStore(), ListSink()
    follower = (
        RolloutFollower(
            registry=registry,
            model_name=FRAUD_FEATURES.name,
            feature_set=FRAUD_FEATURES,
            metrics=metrics,
            settings=rollout,
            golden_tolerance=settings.golden_tolerance,
        )
        if rollout is not None
        else None
    )
    core = InferenceCore(
        settings=settings,
        feature_set=FRAUD_FEATURES,
        key_prefix=KEY_PREFIX,
        store=store,
        slot=slot,
        metrics=metrics,
        sink=sink,
        rollout=follower,
    )
    manager = ModelManager(
        registry=registry,
        model_name=FRAUD_FEATURES.name,
        alias=settings.alias,
        feature_set=FRAUD_FEATURES,
        slot=slot,
        metrics=metrics,
        golden_tolerance=settings.golden_tolerance,
        adopt=follower.adoptable if follower is not None else None,
    )
    manager.sync()
    if follower is not None:
        follower.sync()
    return CoreKit(core, store, sink, manager, registry, metrics, follower)


def infer_by_entities(
    core: InferenceCore, cards: list[bytes], merchants: list[bytes], amounts: list[float]
) -> dict[str, tuple[Any, bytes]]:
    """The outputs, by name, of an OIP ModelInfer naming these entities (no sockets)."""
    request = oip_entity_request(cards, merchants, amounts)
    return outputs_by_name(OipHandlers(core, 1 << 20).model_infer(request, None))


def card_values(seed: float = 1.0) -> list[float]:
    view = FRAUD_FEATURES.view("card")
    values = [seed + i for i in range(len(view.aggregations))]
    values[-1] = time.time() - 30  # last_event_time
    return values


def merchant_values(seed: float = 2.0) -> list[float]:
    view = FRAUD_FEATURES.view("merchant")
    return [seed + i for i in range(len(view.aggregations))]


# -- integration helpers (real Redis, Kafka, gRPC) ---------------------------------


def serving_settings(base: Settings, registry: Path, key_prefix: str, **serving: Any) -> Settings:
    """``base`` (isolated_settings) with a private registry, key prefix and serving fields."""
    defaults: dict[str, Any] = {
        "port": 0,
        "metrics_port": -1,
        "registry_poll_s": 0.5,
        # Generous: a loaded 2-core machine stalls now and then, and a store
        # timeout would turn an expected "ok" into "defaulted".
        "feature_timeout_ms": 1000.0,
        "default_deadline_ms": 2000.0,
    }
    return replace(
        base,
        registry=replace(base.registry, path=registry),
        streams=replace(base.streams, redis_key_prefix=key_prefix),
        serving=replace(base.serving, **{**defaults, **serving}),
    )


@contextlib.contextmanager
def running_server(settings: Settings, **kw: Any) -> Iterator[InferenceServer]:
    server = InferenceServer(settings, **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace_s=2.0)


def write_features(
    client: Any,
    key_prefix: str,
    entity: str,
    entity_id: str,
    *,
    values: Sequence[float],
    t: float,
    cluster: bool = False,
) -> None:
    """Write one entity's packed values exactly as the streams flow does."""
    key = RedisLayout(key_prefix, cluster=cluster).feature_key(FRAUD_FEATURES, entity, entity_id)
    client.eval(WRITE_IF_NEWER, 1, key, pack(t, tuple(values)), 3600)


def announce(
    settings: Settings,
    version: ModelVersion,
    action: str = "publish",
    producer: Producer | None = None,
) -> None:
    """Put a ModelUpdate on the model-updates topic, as the trainer does."""
    m = version.manifest
    update = ModelUpdate(
        model_name=m.model_name,
        version=m.version,
        alias="champion",
        sha256=m.sha256,
        uri=str(version.model_path),
        fingerprint=m.fingerprint,
        time_ms=int(time.time() * 1000),
        action=action,
    )
    producer = producer or Producer(producer_config(settings.kafka))
    producer.produce(
        Topics(settings.kafka.topic_prefix).model_updates,
        encode(update),
        key=m.model_name.encode(),
    )
    assert producer.flush(30) == 0


def consume(settings: Settings, topic: str, expected: int, timeout_s: float = 30.0) -> list[bytes]:
    """Values on ``topic`` from its beginning until ``expected`` arrived or time is up."""
    messages = read_expected(settings, topic, expected, wait_s=timeout_s, settle_s=0.0)
    return [m.value() for m in messages]


class Blackhole:
    """A TCP server that accepts connections and never answers: a stalled Redis."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def stalled_store(
    base: Settings, registry: Path, key_prefix: str, **serving: Any
) -> Iterator[Settings]:
    """Serving settings whose Redis is a Blackhole: every store call waits out its timeout."""
    hole = Blackhole()
    try:
        stalled = replace(base, redis=replace(base.redis, port=hole.port))
        yield serving_settings(stalled, registry, key_prefix, store_retry_ms=0.0, **serving)
    finally:
        hole.close()


def fresh_features(redis_client: Any, redis_prefix: str) -> str:
    """Card c1 and merchant m1 written now under the test's key prefix; returns the prefix."""
    key_prefix = redis_prefix.rstrip(":")
    now = time.time()
    write_features(redis_client, key_prefix, "card", "c1", values=card_values(), t=now)
    write_features(redis_client, key_prefix, "merchant", "m1", values=merchant_values(), t=now)
    return key_prefix


def fresh_serving_settings(
    base: Settings, redis_client: Any, redis_prefix: str, registry: Path, **serving: Any
) -> Settings:
    """serving_settings over ``registry`` with fresh features for c1 and m1 in the shared Redis."""
    return serving_settings(base, registry, fresh_features(redis_client, redis_prefix), **serving)


def run_client_script(script: str, *argv: str) -> dict[str, Any]:
    """Run a client program (e.g. tritonclient, which must not share this process's
    gRPC) with ``argv``; returns the JSON object its last output line prints."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
