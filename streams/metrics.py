"""Prometheus metrics of the features flow.

Names, help and labels come from ``contracts.metric_names`` (the alert rules
query them). Registered once per process on the default registry (Bytewax registers its own
there too), so one HTTP endpoint serves both; :func:`feature_metrics` returns
the same instance to every worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from loopline.contracts import metric_names as names
from loopline.contracts.metric_names import Metric

# Milliseconds matter here: the freshness target is 100 ms p99 (stretch 25 ms).
_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    120.0,
)


@dataclass(frozen=True)
class FeatureMetrics:
    records: Counter
    events: Counter
    dead_letters: Counter
    late_events: Counter
    redis_write_seconds: Histogram
    redis_keys: Counter
    freshness_seconds: Histogram
    consumer_lag: Gauge
    refreshes: Counter
    evictions: Counter


_lock = threading.Lock()
_instances: dict[int, FeatureMetrics] = {}


def feature_metrics(registry: CollectorRegistry = REGISTRY) -> FeatureMetrics:
    """The process's metrics (created on first use)."""
    with _lock:
        found = _instances.get(id(registry))
        if found is None:
            found = _instances[id(registry)] = _create(registry)
        return found


def _create(registry: CollectorRegistry) -> FeatureMetrics:
    def counter(m: Metric) -> Counter:
        return Counter(m.name, m.help, m.labels, registry=registry)

    def histogram(m: Metric) -> Histogram:
        return Histogram(m.name, m.help, m.labels, buckets=_LATENCY_BUCKETS_S, registry=registry)

    return FeatureMetrics(
        records=counter(names.FEATURES_RECORDS),
        events=counter(names.FEATURES_EVENTS),
        dead_letters=counter(names.FEATURES_DEAD_LETTERS),
        late_events=counter(names.FEATURES_LATE_EVENTS),
        redis_write_seconds=histogram(names.FEATURES_REDIS_WRITE_SECONDS),
        redis_keys=counter(names.FEATURES_REDIS_KEYS),
        freshness_seconds=histogram(names.FEATURES_FRESHNESS_SECONDS),
        consumer_lag=Gauge(
            names.FEATURES_CONSUMER_LAG.name,
            names.FEATURES_CONSUMER_LAG.help,
            names.FEATURES_CONSUMER_LAG.labels,
            registry=registry,
        ),
        refreshes=counter(names.FEATURES_REFRESHES),
        evictions=counter(names.FEATURES_EVICTIONS),
    )
