"""Prometheus collectors from the metric catalogue: one helper per kind, one set per registry.

Names, help and labels come from ``contracts.metric_names`` (the alert rules
and the Grafana panels query them), so no component spells a metric twice.
A dataflow creates its set once per process (:class:`OncePerRegistry`):
worker threads share one instance, which the default registry (where
Bytewax registers its own) serves on one HTTP endpoint.

>>> from loopline.contracts import metric_names as mn
>>> registry = CollectorRegistry()
>>> counter(mn.DRIFT_ALARMS, registry).labels("m", "data", "amount", "warning").inc()
>>> registry.get_sample_value("loopline_drift_alarms_total",
...     {"model": "m", "kind": "data", "feature": "amount", "severity": "warning"})
1.0
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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


def gauge(m: Metric, registry: CollectorRegistry, **options: Any) -> Gauge:
    """``options``: e.g. ``multiprocess_mode`` for a server of several processes."""
    return Gauge(m.name, m.help, list(m.labels), registry=registry, **options)


def histogram(m: Metric, buckets: tuple[float, ...], registry: CollectorRegistry) -> Histogram:
    return Histogram(m.name, m.help, list(m.labels), buckets=buckets, registry=registry)
