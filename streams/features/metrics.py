"""Prometheus metrics of the features flow.

Created once per process (:mod:`loopline.telemetry.prometheus`). Freshness
is observed per write, so it gets a lock-free per-thread histogram here.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from loopline.contracts import metric_names as names
from loopline.contracts.metric_names import Metric
from loopline.telemetry.prometheus import OncePerRegistry, counter, gauge, histogram

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


class LocalHistogram:
    """One thread's share of a :class:`ThreadHistograms`: observing takes no lock.

    ``prometheus_client``'s ``Histogram.observe`` takes two locks and walks the
    buckets in Python (~1-2 us, 10x this); freshness is observed per write.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class ThreadHistograms(Collector):
    """A histogram whose worker threads each observe into their own part."""

    def __init__(self, metric: Metric, buckets: tuple[float, ...], registry: CollectorRegistry):
        self._metric = metric
        self._bounds = sorted(buckets)
        self._parts: list[LocalHistogram] = []
        self._lock = threading.Lock()
        registry.register(self)

    def part(self) -> LocalHistogram:
        local = LocalHistogram(self._bounds)
        with self._lock:
            self._parts.append(local)
        return local

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            parts = list(self._parts)
        counts = [sum(p.counts[i] for p in parts) for i in range(len(self._bounds) + 1)]
        cumulative = list(itertools.accumulate(counts))
        buckets = [(floatToGoString(b), c) for b, c in zip(self._bounds, cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        family = HistogramMetricFamily(
            self._metric.name,
            self._metric.help,
            buckets=buckets,
            sum_value=sum(p.sum for p in parts),
        )
        return [family]


@dataclass(frozen=True)
class FeatureMetrics:
    records: Counter
    events: Counter
    dead_letters: Counter
    late_events: Counter
    duplicates: Counter
    redis_write_seconds: Histogram
    redis_keys: Counter
    freshness_seconds: ThreadHistograms
    consumer_lag: Gauge
    refreshes: Counter
    evictions: Counter


def _create(registry: CollectorRegistry) -> FeatureMetrics:
    return FeatureMetrics(
        records=counter(names.FEATURES_RECORDS, registry),
        events=counter(names.FEATURES_EVENTS, registry),
        dead_letters=counter(names.FEATURES_DEAD_LETTERS, registry),
        late_events=counter(names.FEATURES_LATE_EVENTS, registry),
        duplicates=counter(names.FEATURES_DUPLICATES, registry),
        redis_write_seconds=histogram(
            names.FEATURES_REDIS_WRITE_SECONDS, _LATENCY_BUCKETS_S, registry
        ),
        redis_keys=counter(names.FEATURES_REDIS_KEYS, registry),
        freshness_seconds=ThreadHistograms(
            names.FEATURES_FRESHNESS_SECONDS, _LATENCY_BUCKETS_S, registry
        ),
        consumer_lag=gauge(names.FEATURES_CONSUMER_LAG, registry),
        refreshes=counter(names.FEATURES_REFRESHES, registry),
        evictions=counter(names.FEATURES_EVICTIONS, registry),
    )


_instances = OncePerRegistry(_create)


def feature_metrics(registry: CollectorRegistry = REGISTRY) -> FeatureMetrics:
    """The process's metrics (created on first use, shared by worker threads)."""
    return _instances.get(registry)
