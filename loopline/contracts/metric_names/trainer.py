"""The trainer's, the retrain policy's and the rollout watcher's metrics."""

from __future__ import annotations

from loopline.contracts.metric_names.metric import declare

# -- trainer (trainer/telemetry.py) ---------------------------------------------------
TRAINER_RETRAIN_EVENTS = declare(
    "loopline_trainer_retrain_events",
    "counter",
    ("outcome",),
    "Retrain events handled, by outcome (published, rejected, duplicate, failed, deferred)",
    "trainer",
)
TRAINER_LAST_TRAINING_SECONDS = declare(
    "loopline_trainer_last_training_seconds",
    "gauge",
    (),
    "Duration of the last training",
    "trainer",
)
TRAINER_LAST_HOLDOUT_AUC = declare(
    "loopline_trainer_last_holdout_auc",
    "gauge",
    (),
    "Holdout AUC of the last trained challenger",
    "trainer",
)
TRAINER_LAST_HOLDOUT_RMSE = declare(
    "loopline_trainer_last_holdout_rmse",
    "gauge",
    (),
    "Holdout RMSE of the last trained challenger (regression models only)",
    "trainer",
)
TRAINER_LAST_HOLDOUT_MAE = declare(
    "loopline_trainer_last_holdout_mae",
    "gauge",
    (),
    "Holdout MAE of the last trained challenger (regression models only)",
    "trainer",
)
TRAINER_CHAMPION_VERSION = declare(
    "loopline_trainer_champion_version",
    "gauge",
    (),
    "Version the last accepted training made champion",
    "trainer",
)

# -- retrain policy (trainer/policy/service.py) ----------------------------------
POLICY_DRIFT_EVENTS = declare(
    "loopline_policy_drift_events",
    "counter",
    ("decision",),
    "Drift events read by the retrain policy, by decision (triggered, pending, below, "
    "ignored, duplicate, invalid)",
    "policy",
)
POLICY_RETRAIN_EVENTS = declare(
    "loopline_policy_retrain_events",
    "counter",
    ("trigger", "result"),
    "Retrain events the policy emitted, by trigger and delivery result",
    "policy",
)
POLICY_HELD = declare(
    "loopline_policy_held",
    "counter",
    ("reason",),
    "Triggers held back: rows (too few new labeled rows), interval, daily_cap, expired",
    "policy",
)
POLICY_PENDING = declare(
    "loopline_policy_pending",
    "gauge",
    (),
    "1 while a drift trigger waits (for rows, the interval or the daily cap)",
    "policy",
)
POLICY_LAST_RETRAIN_TIMESTAMP = declare(
    "loopline_policy_last_retrain_timestamp_seconds",
    "gauge",
    (),
    "When the policy last emitted a retrain event (Unix seconds)",
    "policy",
)

# -- rollout watcher (trainer/rollout/watch_metrics.py) ---------------------------------
ROLLOUT_ARM_LABELS = declare(
    "loopline_rollout_arm_labels",
    "gauge",
    ("model", "arm"),
    "Labeled examples counted for each arm of the running plan",
    "trainer",
)
ROLLOUT_ARM_AUC = declare(
    "loopline_rollout_arm_auc",
    "gauge",
    ("model", "arm"),
    "ROC AUC of each arm of the running plan on its labeled examples (NaN: one class so far)",
    "trainer",
)
ROLLOUT_ARM_LOG_LOSS = declare(
    "loopline_rollout_arm_log_loss",
    "gauge",
    ("model", "arm"),
    "Log loss of each arm of the running plan on its labeled examples",
    "trainer",
)
ROLLOUT_ARM_RMSE = declare(
    "loopline_rollout_arm_rmse",
    "gauge",
    ("model", "arm"),
    "Root mean squared error of each arm of the running plan (regression models only)",
    "trainer",
)
ROLLOUT_ARM_MAE = declare(
    "loopline_rollout_arm_mae",
    "gauge",
    ("model", "arm"),
    "Mean absolute error of each arm of the running plan (regression models only)",
    "trainer",
)
ROLLOUT_DECISIONS = declare(
    "loopline_rollout_decisions",
    "counter",
    ("model", "action"),
    "Rollout plans the watcher ended: promote or abort",
    "trainer",
)
ROLLOUT_RUNNING = declare(
    "loopline_rollout_running",
    "gauge",
    ("model",),
    "1 while a rollout plan of the model runs",
    "trainer",
)
