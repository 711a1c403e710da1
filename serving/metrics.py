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

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


class ServingMetrics:
    """The server's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        stage = Histogram(
            "loopline_serving_stage_seconds",
            "Time per request stage: feature_fetch (store round trip), inference "
            "(assembly + model run), total (handler entry to response)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.feature_fetch = stage.labels("feature_fetch")
        self.inference = stage.labels("inference")
        self.total = stage.labels("total")
        self.requests = Counter(
            "loopline_serving_requests",
            "RPCs answered, by method and gRPC status code",
            ["method", "code"],
            registry=registry,
        )
        self.degraded = Counter(
            "loopline_serving_degraded_answers",
            "Predictions answered with features not fresh from the store, by status",
            ["status"],
            registry=registry,
        )
        self.store_errors = Counter(
            "loopline_serving_store_errors",
            "Feature store round trips that failed (down, timeout, error, backoff, deadline)",
            ["reason"],
            registry=registry,
        )
        self.model_info = Gauge(
            "loopline_serving_model_info",
            "1 for the model version being served",
            ["model", "version", "fingerprint"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter(
            "loopline_serving_model_swaps",
            "Model changes by result: loaded, rolled_back, refused (fingerprint), "
            "integrity (sha256), failed (load or golden check)",
            ["result"],
            registry=registry,
        )
        self.load_seconds = Histogram(
            "loopline_serving_model_load_seconds",
            "Time to verify, load, warm and golden-check a model version",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.predictions_logged = Counter(
            "loopline_serving_prediction_log",
            "Prediction log messages by outcome: delivered, failed (Kafka refused or "
            "timed out), dropped (queue full, never sent)",
            ["result"],
            registry=registry,
        )
        # -- rollout arms (names in loopline.contracts.metric_names) --------
        self.arm_calls = Counter(
            "loopline_serving_arm_calls",
            "Model runs per rollout arm, path (answer | shadow) and result (ok | error)",
            ["arm", "path", "result"],
            registry=registry,
        )
        self.arm_model_seconds = Histogram(
            "loopline_serving_arm_model_seconds",
            "Model run wall time per arm (one row), while a rollout plan runs",
            ["arm"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.arm_score = Histogram(
            "loopline_serving_arm_score",
            "Score distribution per arm",
            ["arm"],
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.shadow = Counter(
            "loopline_serving_shadow",
            "Shadow scorings: scored, skipped (queue full or the plan ended first), error",
            ["result"],
            registry=registry,
        )
        self.rollout_info = Gauge(
            "loopline_serving_rollout_info",
            "1 for the rollout plan this server runs",
            ["model", "plan_id", "mode", "candidate", "champion"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.rollout_decisions = Counter(
            "loopline_serving_rollout_decisions",
            "Rollout plans this server ended by policy (abort: error or latency regression, "
            "or a candidate that cannot load)",
            ["action"],
            registry=registry,
        )
        # Present at 0 from the start, so `increase()` sees the first abort.
        self.rollout_decisions.labels("abort")
        self._ok: dict[str, Counter] = {}

    def request(self, method: str, code: str) -> None:
        self.requests.labels(method, code).inc()
