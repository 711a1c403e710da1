"""Prometheus metrics of the labels flow.

Names, help and labels come from ``contracts.metric_names``. Registered once
per process (worker threads share them); each process serves them on
``labels.metrics_port`` + its process id.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from loopline.contracts import metric_names as mn
from loopline.telemetry.prometheus import OncePerRegistry, counter, gauge, histogram

# A flush happens once per labels.flush_interval_s: latencies are seconds, not milliseconds.
_LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class LabelMetrics:
    records: Counter
    examples: Counter
    pending: Gauge
    join_latency: Histogram
    watermark: Gauge
    replayed: Counter
    lag: Gauge
    _shards: dict[str, tuple[int, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_pending(self, shard: str, predictions: int, outcomes: int) -> None:
        """One shard's buffered state; the gauges show the sum over this process's shards."""
        with self._lock:
            self._shards[shard] = (predictions, outcomes)
            self.pending.labels("predictions").set(sum(p for p, _ in self._shards.values()))
            self.pending.labels("outcomes").set(sum(o for _, o in self._shards.values()))


def _create(registry: CollectorRegistry) -> LabelMetrics:
    return LabelMetrics(
        records=counter(mn.LABELS_RECORDS, registry),
        examples=counter(mn.LABELS_EXAMPLES, registry),
        pending=gauge(mn.LABELS_PENDING, registry),
        join_latency=histogram(mn.LABELS_JOIN_LATENCY_SECONDS, _LATENCY_BUCKETS_S, registry),
        watermark=gauge(mn.LABELS_WATERMARK, registry),
        replayed=counter(mn.LABELS_REPLAYED, registry),
        lag=gauge(mn.LABELS_CONSUMER_LAG, registry),
    )


_instances = OncePerRegistry(_create)


def label_metrics(registry: CollectorRegistry = REGISTRY) -> LabelMetrics:
    """The process's metrics (created on first use, shared by worker threads)."""
    return _instances.get(registry)
