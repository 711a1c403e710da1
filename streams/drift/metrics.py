"""Prometheus metrics of the drift flow.

Names, help and labels come from ``contracts.metric_names``. Registered once
per process (worker threads share them); each process serves them on
``drift.metrics_port`` + its process id.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from loopline.contracts import metric_names as mn
from loopline.telemetry.prometheus import OncePerRegistry, counter, gauge


@dataclass(frozen=True)
class DriftMetrics:
    alarms: Counter
    statistic: Gauge
    reference: Gauge
    inputs: Counter
    published: Counter
    lag: Gauge
    last_input: Gauge


def _create(registry: CollectorRegistry) -> DriftMetrics:
    return DriftMetrics(
        alarms=counter(mn.DRIFT_ALARMS, registry),
        statistic=gauge(mn.DRIFT_STATISTIC, registry),
        reference=gauge(mn.DRIFT_REFERENCE, registry),
        inputs=counter(mn.DRIFT_INPUTS, registry),
        published=counter(mn.DRIFT_EVENTS_PUBLISHED, registry),
        lag=gauge(mn.DRIFT_CONSUMER_LAG, registry),
        last_input=gauge(mn.DRIFT_LAST_INPUT_TIMESTAMP, registry),
    )


_instances = OncePerRegistry(_create)


def drift_metrics(registry: CollectorRegistry = REGISTRY) -> DriftMetrics:
    """The process's drift metrics (created on first use, shared by worker threads)."""
    return _instances.get(registry)
