"""Helpers for serving tests: an in-memory feature store and a core on a temp registry."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import model_factory
from loopline.serving.core import InferenceCore, Prediction
from loopline.serving.feature_store import StoreUnavailableError
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model_manager import ModelManager
from loopline.serving.model_slot import ModelSlot
from prometheus_client import CollectorRegistry

from loopline.contracts.fraud import FRAUD_FEATURES
from loopline.contracts.redis_layout import RedisLayout, pack
from loopline.contracts.registry import DirectoryRegistry
from loopline.contracts.settings import ServingSettings

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


def make_core(root: Path, publish: bool = True, **serving: Any) -> CoreKit:
    """A core over a MemoryStore and a DirectoryRegistry at ``root`` (model v1 loaded)."""
    registry = DirectoryRegistry(root)
    if publish:
        model_factory.publish(registry)
    settings = replace(ServingSettings(), **serving)
    metrics = ServingMetrics(CollectorRegistry())
    slot = ModelSlot()
    store, sink = MemoryStore(), ListSink()
    core = InferenceCore(
        settings=settings,
        feature_set=FRAUD_FEATURES,
        key_prefix=KEY_PREFIX,
        store=store,
        slot=slot,
        metrics=metrics,
        sink=sink,
    )
    manager = ModelManager(
        registry=registry,
        model_name=settings.model_name,
        alias=settings.alias,
        feature_set=FRAUD_FEATURES,
        slot=slot,
        metrics=metrics,
        golden_tolerance=settings.golden_tolerance,
    )
    manager.sync()
    return CoreKit(core, store, sink, manager, registry, metrics)


def card_values(seed: float = 1.0) -> list[float]:
    view = FRAUD_FEATURES.view("card")
    values = [seed + i for i in range(len(view.aggregations))]
    values[-1] = time.time() - 30  # last_event_time
    return values


def merchant_values(seed: float = 2.0) -> list[float]:
    view = FRAUD_FEATURES.view("merchant")
    return [seed + i for i in range(len(view.aggregations))]
