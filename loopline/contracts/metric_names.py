"""Every Prometheus metric Loopline exports, named in one place.

Components create their collectors with :attr:`Metric.name`; the alert rules
and the example Prometheus configuration under ``deploy/prometheus/`` query
:attr:`Metric.series` (``prometheus_client`` exposes a counter ``x`` as
``x_total`` and a histogram as ``x_bucket``, ``x_sum`` and ``x_count``). A
test checks that every series the rules use is declared here.

Scrape ports (``Settings``): serving ``serving.metrics_port`` (9464), the
features flow ``streams.metrics_port`` (9470) plus the process id, the trainer
``trainer.metrics_port`` (9466), the retrain policy loop
``policy.metrics_port`` (9467), the drift flow ``drift.metrics_port`` (9468),
the labels flow ``labels.metrics_port`` (9469), the rollout watcher
``rollout.metrics_port`` (9465).

>>> DRIFT_ALARMS.series, DRIFT_ALARMS.labels
('loopline_drift_alarms_total', ('model', 'kind', 'feature', 'severity'))
>>> SERVING_STAGE_SECONDS.series
'loopline_serving_stage_seconds_bucket'
>>> by_series()["loopline_features_consumer_lag"].component
'streams'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One exported metric: its client-side name, type, labels and owner."""

    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    labels: tuple[str, ...]
    help: str
    component: str  # "serving" | "streams" | "trainer" | "policy"

    @property
    def series(self) -> str:
        """The name a PromQL query uses (``_bucket`` for a histogram's quantiles)."""
        if self.kind == "counter":
            return self.name + "_total"
        if self.kind == "histogram":
            return self.name + "_bucket"
        return self.name

    def exposed(self) -> tuple[str, ...]:
        """Every series name the client exposes for this metric."""
        if self.kind == "counter":
            return (self.name + "_total", self.name + "_created")
        if self.kind == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        return (self.name,)


def _m(name: str, kind: str, labels: tuple[str, ...], help: str, component: str) -> Metric:
    return Metric(name, kind, labels, help, component)


# -- serving (serving/metrics.py) -----------------------------------------------------
SERVING_STAGE_SECONDS = _m(
    "loopline_serving_stage_seconds",
    "histogram",
    ("stage",),
    "Time per request stage: feature_fetch, inference, total",
    "serving",
)
SERVING_REQUESTS = _m(
    "loopline_serving_requests",
    "counter",
    ("method", "code"),
    "RPCs answered, by method and gRPC status code name (OK, INVALID_ARGUMENT, ...)",
    "serving",
)
SERVING_DEGRADED_ANSWERS = _m(
    "loopline_serving_degraded_answers",
    "counter",
    ("status",),
    "Predictions answered with features not fresh from the store, by status",
    "serving",
)
SERVING_STORE_ERRORS = _m(
    "loopline_serving_store_errors",
    "counter",
    ("reason",),
    "Feature store round trips that failed",
    "serving",
)
SERVING_MODEL_INFO = _m(
    "loopline_serving_model_info",
    "gauge",
    ("model", "version", "fingerprint"),
    "1 for the model version being served",
    "serving",
)
SERVING_MODEL_SWAPS = _m(
    "loopline_serving_model_swaps",
    "counter",
    ("result",),
    "Model changes by result: loaded, rolled_back, refused, integrity, failed",
    "serving",
)
SERVING_MODEL_LOAD_SECONDS = _m(
    "loopline_serving_model_load_seconds",
    "histogram",
    (),
    "Time to verify, load, warm and golden-check a model version",
    "serving",
)
SERVING_PREDICTION_LOG = _m(
    "loopline_serving_prediction_log",
    "counter",
    ("result",),
    "Prediction log messages by outcome: delivered, failed, dropped",
    "serving",
)

SERVING_ARM_CALLS = _m(
    "loopline_serving_arm_calls",
    "counter",
    ("arm", "path", "result"),
    "Model runs per rollout arm (champion, candidate), path (answer: the arm answered; "
    "shadow: scored off the response path) and result (ok, error: the run failed or gave "
    "a non-finite score; a failed canary answer falls back to the champion)",
    "serving",
)
SERVING_ARM_MODEL_SECONDS = _m(
    "loopline_serving_arm_model_seconds",
    "histogram",
    ("arm",),
    "Model run time per arm (one row), what the rollout policy compares",
    "serving",
)
SERVING_ARM_SCORE = _m(
    "loopline_serving_arm_score",
    "histogram",
    ("arm",),
    "Score distribution per arm",
    "serving",
)
SERVING_SHADOW = _m(
    "loopline_serving_shadow",
    "counter",
    ("result",),
    "Shadow scorings: scored, skipped (queue full or the plan ended first), error",
    "serving",
)
SERVING_ROLLOUT_INFO = _m(
    "loopline_serving_rollout_info",
    "gauge",
    ("model", "plan_id", "mode", "candidate", "champion"),
    "1 for the rollout plan this server runs",
    "serving",
)
SERVING_ROLLOUT_DECISIONS = _m(
    "loopline_serving_rollout_decisions",
    "counter",
    ("action",),
    "Rollout plans this server ended by policy (abort on an error or latency regression)",
    "serving",
)

# -- streams: features flow (streams/metrics.py) --------------------------------------
FEATURES_RECORDS = _m(
    "loopline_features_records",
    "counter",
    (),
    "Kafka records read from the events topic",
    "streams",
)
FEATURES_EVENTS = _m(
    "loopline_features_events",
    "counter",
    (),
    "Events accepted and aggregated",
    "streams",
)
FEATURES_DEAD_LETTERS = _m(
    "loopline_features_dead_letters",
    "counter",
    ("reason",),
    "Records sent to the dead-letter topic, by reason",
    "streams",
)
FEATURES_LATE_EVENTS = _m(
    "loopline_features_late_events",
    "counter",
    (),
    "Events older than the allowed lateness",
    "streams",
)
FEATURES_REDIS_WRITE_SECONDS = _m(
    "loopline_features_redis_write_seconds",
    "histogram",
    (),
    "Duration of one batched write-if-newer call to Redis",
    "streams",
)
FEATURES_REDIS_KEYS = _m(
    "loopline_features_redis_keys",
    "counter",
    ("outcome",),
    "Feature values sent to Redis, by outcome (written, stale)",
    "streams",
)
FEATURES_FRESHNESS_SECONDS = _m(
    "loopline_features_freshness_seconds",
    "histogram",
    (),
    "Event time to value written in Redis (oldest event of each write)",
    "streams",
)
FEATURES_CONSUMER_LAG = _m(
    "loopline_features_consumer_lag",
    "gauge",
    ("partition",),
    "Records behind the end of each events partition",
    "streams",
)
FEATURES_REFRESHES = _m(
    "loopline_features_refreshes",
    "counter",
    (),
    "Values rewritten because a window tile expired",
    "streams",
)
FEATURES_EVICTIONS = _m(
    "loopline_features_evictions",
    "counter",
    (),
    "Idle entities dropped from state",
    "streams",
)

# -- streams: drift flow (streams/drift, wired by the drift dataflow) -----------------
DRIFT_ALARMS = _m(
    "loopline_drift_alarms",
    "counter",
    ("model", "kind", "feature", "severity"),
    "Confirmed drift alarms published to the drift topic",
    "streams",
)
DRIFT_STATISTIC = _m(
    "loopline_drift_statistic",
    "gauge",
    ("model", "kind", "feature"),
    "A monitored channel's present value: outside-band rate (data, prediction), error "
    "rate (concept), rolling AUC or precision (performance)",
    "streams",
)
DRIFT_REFERENCE = _m(
    "loopline_drift_reference",
    "gauge",
    ("model", "kind", "feature"),
    "The value a channel is compared with: expected outside-band rate, or the floor",
    "streams",
)
DRIFT_INPUTS = _m(
    "loopline_drift_inputs",
    "counter",
    ("model", "stream", "outcome"),
    "Predictions and labeled examples seen by the drift flow: monitored, skipped, invalid",
    "streams",
)
DRIFT_EVENTS_PUBLISHED = _m(
    "loopline_drift_events_published",
    "counter",
    ("result",),
    "Drift events sent to the drift topic: delivered, failed",
    "streams",
)
DRIFT_CONSUMER_LAG = _m(
    "loopline_drift_consumer_lag",
    "gauge",
    ("topic", "partition"),
    "Records behind the end of each predictions / labeled partition",
    "streams",
)
DRIFT_LAST_INPUT_TIMESTAMP = _m(
    "loopline_drift_last_input_timestamp_seconds",
    "gauge",
    ("stream",),
    "Wall-clock time the drift flow last processed an input of this stream",
    "streams",
)

# -- streams: labels flow (streams/labels, wired by the labels dataflow) -------------
LABELS_RECORDS = _m(
    "loopline_labels_records",
    "counter",
    ("stream", "result"),
    "Predictions and outcomes read by the labels flow, by what became of them: accepted, "
    "duplicate, late (outcome after its timeout), unmatched (outcome expired), evicted "
    "(state bound), timeout_dropped, malformed, invalid",
    "streams",
)
LABELS_EXAMPLES = _m(
    "loopline_labels_examples",
    "counter",
    ("resolution",),
    "Labeled examples committed to the offline store and the labeled topic, by resolution "
    "(outcome, timeout)",
    "streams",
)
LABELS_PENDING = _m(
    "loopline_labels_pending",
    "gauge",
    ("side",),
    "Buffered join state: predictions waiting for an outcome, outcomes waiting for a prediction",
    "streams",
)
LABELS_JOIN_LATENCY_SECONDS = _m(
    "loopline_labels_join_latency_seconds",
    "histogram",
    (),
    "Wall-clock time from the join resolving an example to its commit in both outputs",
    "streams",
)
LABELS_WATERMARK = _m(
    "loopline_labels_watermark_seconds",
    "gauge",
    (),
    "The maturity window's clock: event-time watermark (or wall clock), Unix seconds",
    "streams",
)
LABELS_REPLAYED = _m(
    "loopline_labels_replayed",
    "counter",
    (),
    "Examples re-emitted after a restart that were already committed (not written again)",
    "streams",
)
LABELS_CONSUMER_LAG = _m(
    "loopline_labels_consumer_lag",
    "gauge",
    ("topic", "partition"),
    "Records behind the end of each predictions / outcomes partition",
    "streams",
)

# -- trainer (trainer/telemetry.py) ---------------------------------------------------
TRAINER_RETRAIN_EVENTS = _m(
    "loopline_trainer_retrain_events",
    "counter",
    ("outcome",),
    "Retrain events handled, by outcome (published, rejected, duplicate, failed)",
    "trainer",
)
TRAINER_LAST_TRAINING_SECONDS = _m(
    "loopline_trainer_last_training_seconds",
    "gauge",
    (),
    "Duration of the last training",
    "trainer",
)
TRAINER_LAST_HOLDOUT_AUC = _m(
    "loopline_trainer_last_holdout_auc",
    "gauge",
    (),
    "Holdout AUC of the last trained challenger",
    "trainer",
)
TRAINER_CHAMPION_VERSION = _m(
    "loopline_trainer_champion_version",
    "gauge",
    (),
    "Version the last accepted training made champion",
    "trainer",
)

# -- retrain policy (trainer/policy/service.py) ----------------------------------
POLICY_DRIFT_EVENTS = _m(
    "loopline_policy_drift_events",
    "counter",
    ("decision",),
    "Drift events read by the retrain policy, by decision (triggered, pending, below, "
    "ignored, duplicate, invalid)",
    "policy",
)
POLICY_RETRAIN_EVENTS = _m(
    "loopline_policy_retrain_events",
    "counter",
    ("trigger", "result"),
    "Retrain events the policy emitted, by trigger and delivery result",
    "policy",
)
POLICY_HELD = _m(
    "loopline_policy_held",
    "counter",
    ("reason",),
    "Triggers held back: rows (too few new labeled rows), interval, daily_cap, expired",
    "policy",
)
POLICY_PENDING = _m(
    "loopline_policy_pending",
    "gauge",
    (),
    "1 while a drift trigger waits (for rows, the interval or the daily cap)",
    "policy",
)
POLICY_LAST_RETRAIN_TIMESTAMP = _m(
    "loopline_policy_last_retrain_timestamp_seconds",
    "gauge",
    (),
    "When the policy last emitted a retrain event (Unix seconds)",
    "policy",
)

# -- rollout watcher (trainer/rollout/watch_loop.py) ---------------------------------
ROLLOUT_ARM_LABELS = _m(
    "loopline_rollout_arm_labels",
    "gauge",
    ("model", "arm"),
    "Labeled examples counted for each arm of the running plan",
    "trainer",
)
ROLLOUT_ARM_AUC = _m(
    "loopline_rollout_arm_auc",
    "gauge",
    ("model", "arm"),
    "ROC AUC of each arm of the running plan on its labeled examples (NaN: one class so far)",
    "trainer",
)
ROLLOUT_ARM_LOG_LOSS = _m(
    "loopline_rollout_arm_log_loss",
    "gauge",
    ("model", "arm"),
    "Log loss of each arm of the running plan on its labeled examples",
    "trainer",
)
ROLLOUT_ARM_RMSE = _m(
    "loopline_rollout_arm_rmse",
    "gauge",
    ("model", "arm"),
    "Root mean squared error of each arm of the running plan (regression models only)",
    "trainer",
)
ROLLOUT_ARM_MAE = _m(
    "loopline_rollout_arm_mae",
    "gauge",
    ("model", "arm"),
    "Mean absolute error of each arm of the running plan (regression models only)",
    "trainer",
)
ROLLOUT_DECISIONS = _m(
    "loopline_rollout_decisions",
    "counter",
    ("model", "action"),
    "Rollout plans the watcher ended: promote or abort",
    "trainer",
)
ROLLOUT_RUNNING = _m(
    "loopline_rollout_running",
    "gauge",
    ("model",),
    "1 while a rollout plan of the model runs",
    "trainer",
)

ALL: tuple[Metric, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Metric))


def by_series() -> dict[str, Metric]:
    """Every exposed series name -> its metric."""
    return {series: m for m in ALL for series in m.exposed()}
