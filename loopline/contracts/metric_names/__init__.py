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

from loopline.contracts.metric_names import serving, streams, trainer
from loopline.contracts.metric_names.metric import Metric
from loopline.contracts.metric_names.serving import (
    SERVING_ARM_CALLS,
    SERVING_ARM_MODEL_SECONDS,
    SERVING_ARM_SCORE,
    SERVING_AUTH_REFUSALS,
    SERVING_DEGRADED_ANSWERS,
    SERVING_IN_FLIGHT,
    SERVING_MODEL_INFO,
    SERVING_MODEL_LOAD_SECONDS,
    SERVING_MODEL_REFUSALS,
    SERVING_MODEL_SWAPS,
    SERVING_PREDICTION_LOG,
    SERVING_REQUESTS,
    SERVING_ROLLOUT_DECISIONS,
    SERVING_ROLLOUT_INFO,
    SERVING_SHADOW,
    SERVING_STAGE_SECONDS,
    SERVING_STORE_ERRORS,
)
from loopline.contracts.metric_names.streams import (
    DRIFT_ALARMS,
    DRIFT_CONSUMER_LAG,
    DRIFT_EVENTS_PUBLISHED,
    DRIFT_INPUTS,
    DRIFT_LAST_INPUT_TIMESTAMP,
    DRIFT_REFERENCE,
    DRIFT_STATISTIC,
    FEATURES_CONSUMER_LAG,
    FEATURES_DEAD_LETTERS,
    FEATURES_DUPLICATES,
    FEATURES_EVENTS,
    FEATURES_EVICTIONS,
    FEATURES_FRESHNESS_SECONDS,
    FEATURES_LATE_EVENTS,
    FEATURES_RECORDS,
    FEATURES_REDIS_KEYS,
    FEATURES_REDIS_WRITE_SECONDS,
    FEATURES_REFRESHES,
    LABELS_CONSUMER_LAG,
    LABELS_EXAMPLES,
    LABELS_JOIN_LATENCY_SECONDS,
    LABELS_PENDING,
    LABELS_RECORDS,
    LABELS_REPLAYED,
    LABELS_WATERMARK,
)
from loopline.contracts.metric_names.trainer import (
    POLICY_DRIFT_EVENTS,
    POLICY_HELD,
    POLICY_LAST_RETRAIN_TIMESTAMP,
    POLICY_PENDING,
    POLICY_RETRAIN_EVENTS,
    ROLLOUT_ARM_AUC,
    ROLLOUT_ARM_LABELS,
    ROLLOUT_ARM_LOG_LOSS,
    ROLLOUT_ARM_MAE,
    ROLLOUT_ARM_RMSE,
    ROLLOUT_DECISIONS,
    ROLLOUT_RUNNING,
    TRAINER_CHAMPION_VERSION,
    TRAINER_LAST_HOLDOUT_AUC,
    TRAINER_LAST_HOLDOUT_MAE,
    TRAINER_LAST_HOLDOUT_RMSE,
    TRAINER_LAST_TRAINING_SECONDS,
    TRAINER_RETRAIN_EVENTS,
)

ALL: tuple[Metric, ...] = tuple(
    m
    for module in (serving, streams, trainer)
    for m in vars(module).values()
    if isinstance(m, Metric)
)


def by_series() -> dict[str, Metric]:
    """Every exposed series name -> its metric."""
    return {series: m for m in ALL for series in m.exposed()}


__all__ = [
    "ALL",
    "DRIFT_ALARMS",
    "DRIFT_CONSUMER_LAG",
    "DRIFT_EVENTS_PUBLISHED",
    "DRIFT_INPUTS",
    "DRIFT_LAST_INPUT_TIMESTAMP",
    "DRIFT_REFERENCE",
    "DRIFT_STATISTIC",
    "FEATURES_CONSUMER_LAG",
    "FEATURES_DEAD_LETTERS",
    "FEATURES_DUPLICATES",
    "FEATURES_EVENTS",
    "FEATURES_EVICTIONS",
    "FEATURES_FRESHNESS_SECONDS",
    "FEATURES_LATE_EVENTS",
    "FEATURES_RECORDS",
    "FEATURES_REDIS_KEYS",
    "FEATURES_REDIS_WRITE_SECONDS",
    "FEATURES_REFRESHES",
    "LABELS_CONSUMER_LAG",
    "LABELS_EXAMPLES",
    "LABELS_JOIN_LATENCY_SECONDS",
    "LABELS_PENDING",
    "LABELS_RECORDS",
    "LABELS_REPLAYED",
    "LABELS_WATERMARK",
    "POLICY_DRIFT_EVENTS",
    "POLICY_HELD",
    "POLICY_LAST_RETRAIN_TIMESTAMP",
    "POLICY_PENDING",
    "POLICY_RETRAIN_EVENTS",
    "ROLLOUT_ARM_AUC",
    "ROLLOUT_ARM_LABELS",
    "ROLLOUT_ARM_LOG_LOSS",
    "ROLLOUT_ARM_MAE",
    "ROLLOUT_ARM_RMSE",
    "ROLLOUT_DECISIONS",
    "ROLLOUT_RUNNING",
    "SERVING_ARM_CALLS",
    "SERVING_ARM_MODEL_SECONDS",
    "SERVING_ARM_SCORE",
    "SERVING_AUTH_REFUSALS",
    "SERVING_DEGRADED_ANSWERS",
    "SERVING_IN_FLIGHT",
    "SERVING_MODEL_INFO",
    "SERVING_MODEL_LOAD_SECONDS",
    "SERVING_MODEL_REFUSALS",
    "SERVING_MODEL_SWAPS",
    "SERVING_PREDICTION_LOG",
    "SERVING_REQUESTS",
    "SERVING_ROLLOUT_DECISIONS",
    "SERVING_ROLLOUT_INFO",
    "SERVING_SHADOW",
    "SERVING_STAGE_SECONDS",
    "SERVING_STORE_ERRORS",
    "TRAINER_CHAMPION_VERSION",
    "TRAINER_LAST_HOLDOUT_AUC",
    "TRAINER_LAST_HOLDOUT_MAE",
    "TRAINER_LAST_HOLDOUT_RMSE",
    "TRAINER_LAST_TRAINING_SECONDS",
    "TRAINER_RETRAIN_EVENTS",
    "Metric",
    "by_series",
]
