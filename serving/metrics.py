"""Prometheus metrics of the inference server.

Each server process records into its own :class:`ServingMetrics`. With
several processes the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before they
start, so every process writes its samples to shared files and one
``/metrics`` endpoint (the supervisor's) aggregates them.

>>> from prometheus_client import CollectorRegistry
>>> m = ServingMetrics(CollectorRegistry())
>>> m.total.observe(0.0002)
>>> m.registry.get_sample_value("loopline_serving_stage_seconds_count", {"stage": "total"})
1.0
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from loopline.contracts import metric_names as names
from loopline.contracts.metric_names import Metric
from loopline.contracts.metric_names.serving import SERVING_MODEL_REFUSALS
from loopline.telemetry.prometheus import counter, gauge, histogram

# Fine steps where the targets are (0.3 ms p50, 0.5 ms p99): the benchmark
# reads server-side percentiles from these buckets.
LATENCY_BUCKETS = (
    *(i * 25e-6 for i in range(1, 21)),  # 25 us .. 0.5 ms
    0.0006,
    0.0007,
    0.0008,
    0.0009,
    0.001,
    0.00125,
    0.0015,
    0.002,
    0.0025,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SCORE_BUCKETS = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    0.95,
    0.98,
    0.99,
    1.0,
)


def _gauge(m: Metric, registry: CollectorRegistry) -> Gauge:
    # livemax: with several processes, the highest among live ones (an exited one drops out).
    return gauge(m, registry, multiprocess_mode="livemax")


class ServingMetrics:
    """The server's metrics (declared in ``contracts.metric_names``), in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # feature_fetch: the store round trip; inference: assembly and model run;
        # total: handler entry to response.
        stage = histogram(names.SERVING_STAGE_SECONDS, LATENCY_BUCKETS, registry)
        self.feature_fetch = stage.labels("feature_fetch")
        self.inference = stage.labels("inference")
        self.total = stage.labels("total")
        self.requests = counter(names.SERVING_REQUESTS, registry)
        # livesum: with several processes, the pod's calls in flight (the HPA's metric).
        self.in_flight = gauge(names.SERVING_IN_FLIGHT, registry, multiprocess_mode="livesum")
        self.degraded = counter(names.SERVING_DEGRADED_ANSWERS, registry)
        self.store_errors = counter(names.SERVING_STORE_ERRORS, registry)
        self.model_info = _gauge(names.SERVING_MODEL_INFO, registry)
        self.swaps = counter(names.SERVING_MODEL_SWAPS, registry)
        self.model_refusals = counter(SERVING_MODEL_REFUSALS, registry)
        self.load_seconds = histogram(names.SERVING_MODEL_LOAD_SECONDS, LOAD_BUCKETS, registry)
        self.predictions_logged = counter(names.SERVING_PREDICTION_LOG, registry)
        self.arm_calls = counter(names.SERVING_ARM_CALLS, registry)
        self.arm_model_seconds = histogram(
            names.SERVING_ARM_MODEL_SECONDS, LATENCY_BUCKETS, registry
        )
        self.arm_score = histogram(names.SERVING_ARM_SCORE, SCORE_BUCKETS, registry)
        self.shadow = counter(names.SERVING_SHADOW, registry)
        self.rollout_info = _gauge(names.SERVING_ROLLOUT_INFO, registry)
        self.rollout_decisions = counter(names.SERVING_ROLLOUT_DECISIONS, registry)
        # Present at 0 from the start, so `increase()` sees the first abort.
        self.rollout_decisions.labels("abort")

    def request(self, method: str, code: str) -> None:
        self.requests.labels(method, code).inc()
