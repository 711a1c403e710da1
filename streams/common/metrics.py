"""What every flow's Prometheus metrics share: one set per registry, declared by contract.

Names, help and labels come from ``contracts.metric_names`` (the alert rules
query them). Each flow's ``metrics.py`` lists its metrics and creates them
once per process: worker threads share one instance, which the default
registry (where Bytewax registers its own) serves on one HTTP endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from loopline.contracts.metric_names import Metric

MetricsT = TypeVar("MetricsT")


class OncePerRegistry(Generic[MetricsT]):
    """``create(registry)`` run on first use for each registry, then the same result."""

    def __init__(self, create: Callable[[CollectorRegistry], MetricsT]) -> None:
        self._create = create
        self._lock = threading.Lock()
        self._instances: dict[int, MetricsT] = {}

    def get(self, registry: CollectorRegistry = REGISTRY) -> MetricsT:
        with self._lock:
            found = self._instances.get(id(registry))
            if found is None:
                found = self._instances[id(registry)] = self._create(registry)
            return found


def counter(m: Metric, registry: CollectorRegistry) -> Counter:
    return Counter(m.name, m.help, list(m.labels), registry=registry)


def gauge(m: Metric, registry: CollectorRegistry) -> Gauge:
    return Gauge(m.name, m.help, list(m.labels), registry=registry)


def histogram(m: Metric, buckets: tuple[float, ...], registry: CollectorRegistry) -> Histogram:
    return Histogram(m.name, m.help, list(m.labels), buckets=buckets, registry=registry)
