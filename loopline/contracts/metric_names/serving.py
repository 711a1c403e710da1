"""The serving process's metrics (collected in ``serving/metrics.py``)."""

from __future__ import annotations

from loopline.contracts.metric_names.metric import declare

# -- serving (serving/metrics.py) -----------------------------------------------------
SERVING_STAGE_SECONDS = declare(
    "loopline_serving_stage_seconds",
    "histogram",
    ("stage",),
    "Time per request stage: feature_fetch, inference, total",
    "serving",
)
SERVING_IN_FLIGHT = declare(
    "loopline_serving_in_flight",
    "gauge",
    (),
    "Scoring calls (Predict, PredictBatch, ModelInfer) in a handler now, summed over the "
    "server's processes: the serving autoscaler's load signal",
    "serving",
)
SERVING_REQUESTS = declare(
    "loopline_serving_requests",
    "counter",
    ("method", "code"),
    "RPCs answered, by method and gRPC status code name (OK, INVALID_ARGUMENT, ...)",
    "serving",
)
SERVING_DEGRADED_ANSWERS = declare(
    "loopline_serving_degraded_answers",
    "counter",
    ("status",),
    "Predictions answered with features not fresh from the store, by status",
    "serving",
)
SERVING_STORE_ERRORS = declare(
    "loopline_serving_store_errors",
    "counter",
    ("reason",),
    "Feature store round trips that failed",
    "serving",
)
SERVING_MODEL_INFO = declare(
    "loopline_serving_model_info",
    "gauge",
    ("model", "version", "fingerprint"),
    "1 for the model version being served",
    "serving",
)
SERVING_MODEL_SWAPS = declare(
    "loopline_serving_model_swaps",
    "counter",
    ("result",),
    "Model changes by result: loaded, rolled_back, refused, integrity, failed",
    "serving",
)
SERVING_MODEL_LOAD_SECONDS = declare(
    "loopline_serving_model_load_seconds",
    "histogram",
    (),
    "Time to verify, load, warm and golden-check a model version",
    "serving",
)
SERVING_PREDICTION_LOG = declare(
    "loopline_serving_prediction_log",
    "counter",
    ("result",),
    "Prediction log messages by outcome: delivered, failed, dropped",
    "serving",
)

SERVING_ARM_CALLS = declare(
    "loopline_serving_arm_calls",
    "counter",
    ("arm", "path", "result"),
    "Model runs per rollout arm (champion, candidate), path (answer: the arm answered; "
    "shadow: scored off the response path) and result (ok, error: the run failed or gave "
    "a non-finite score; a failed canary answer falls back to the champion)",
    "serving",
)
SERVING_ARM_MODEL_SECONDS = declare(
    "loopline_serving_arm_model_seconds",
    "histogram",
    ("arm",),
    "Model run time per arm (one row), what the rollout policy compares",
    "serving",
)
SERVING_ARM_SCORE = declare(
    "loopline_serving_arm_score",
    "histogram",
    ("arm",),
    "Score distribution per arm",
    "serving",
)
SERVING_SHADOW = declare(
    "loopline_serving_shadow",
    "counter",
    ("result",),
    "Shadow scorings: scored, skipped (queue full or the plan ended first), error",
    "serving",
)
SERVING_ROLLOUT_INFO = declare(
    "loopline_serving_rollout_info",
    "gauge",
    ("model", "plan_id", "mode", "candidate", "champion"),
    "1 for the rollout plan this server runs",
    "serving",
)
SERVING_ROLLOUT_DECISIONS = declare(
    "loopline_serving_rollout_decisions",
    "counter",
    ("action",),
    "Rollout plans this server ended by policy (abort on an error or latency regression)",
    "serving",
)
SERVING_AUTH_REFUSALS = declare(
    "loopline_serving_auth_refusals",
    "counter",
    ("method", "code"),
    "Calls refused by token authentication, by RPC (unknown: not in the role table) and "
    "code (UNAUTHENTICATED: no or unknown token; PERMISSION_DENIED: a token without the role)",
    "serving",
)
SERVING_MODEL_REFUSALS = declare(
    "loopline_serving_model_refusals",
    "counter",
    ("reason",),
    "Model versions refused, by reason: unsigned, bad_signature (registry.signing_key_file "
    "set), manifest (no usable Loopline manifest: registered by hand), fingerprint (built "
    "for another feature set), integrity (sha256), invalid (unloadable, wrong inputs or "
    "outputs, golden rows); the current model keeps serving",
    "serving",
)
