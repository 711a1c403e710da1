"""The dataflows' metrics: features, drift and labels flows."""

from __future__ import annotations

from loopline.contracts.metric_names.metric import declare

# -- streams: features flow (streams/metrics.py) --------------------------------------
FEATURES_RECORDS = declare(
    "loopline_features_records",
    "counter",
    (),
    "Kafka records read from the events topic",
    "streams",
)
FEATURES_EVENTS = declare(
    "loopline_features_events",
    "counter",
    (),
    "Events accepted and aggregated",
    "streams",
)
FEATURES_DEAD_LETTERS = declare(
    "loopline_features_dead_letters",
    "counter",
    ("reason",),
    "Records sent to the dead-letter topic, by reason",
    "streams",
)
FEATURES_LATE_EVENTS = declare(
    "loopline_features_late_events",
    "counter",
    (),
    "Events older than the allowed lateness",
    "streams",
)
FEATURES_DUPLICATES = declare(
    "loopline_features_duplicates",
    "counter",
    (),
    "Events skipped: their id was among the partition's last streams.dedup_window accepted ones",
    "streams",
)
FEATURES_REDIS_WRITE_SECONDS = declare(
    "loopline_features_redis_write_seconds",
    "histogram",
    (),
    "Duration of one batched write-if-newer call to Redis",
    "streams",
)
FEATURES_REDIS_KEYS = declare(
    "loopline_features_redis_keys",
    "counter",
    ("outcome",),
    "Feature values sent to Redis, by outcome (written, stale)",
    "streams",
)
FEATURES_FRESHNESS_SECONDS = declare(
    "loopline_features_freshness_seconds",
    "histogram",
    (),
    "Event time to value written in Redis (oldest event of each write)",
    "streams",
)
FEATURES_CONSUMER_LAG = declare(
    "loopline_features_consumer_lag",
    "gauge",
    ("partition",),
    "Records behind the end of each events partition",
    "streams",
)
FEATURES_REFRESHES = declare(
    "loopline_features_refreshes",
    "counter",
    (),
    "Values rewritten because a window tile expired",
    "streams",
)
FEATURES_EVICTIONS = declare(
    "loopline_features_evictions",
    "counter",
    (),
    "Idle entities dropped from state",
    "streams",
)

# -- streams: drift flow (streams/drift, wired by the drift dataflow) -----------------
DRIFT_ALARMS = declare(
    "loopline_drift_alarms",
    "counter",
    ("model", "kind", "feature", "severity"),
    "Confirmed drift alarms published to the drift topic",
    "streams",
)
DRIFT_STATISTIC = declare(
    "loopline_drift_statistic",
    "gauge",
    ("model", "kind", "feature"),
    "A monitored channel's present value: outside-band rate (data, prediction), error "
    "rate (concept), rolling AUC or precision (performance)",
    "streams",
)
DRIFT_REFERENCE = declare(
    "loopline_drift_reference",
    "gauge",
    ("model", "kind", "feature"),
    "The value a channel is compared with: expected outside-band rate, or the floor",
    "streams",
)
DRIFT_INPUTS = declare(
    "loopline_drift_inputs",
    "counter",
    ("model", "stream", "outcome"),
    "Predictions and labeled examples seen by the drift flow: monitored, skipped, invalid",
    "streams",
)
DRIFT_EVENTS_PUBLISHED = declare(
    "loopline_drift_events_published",
    "counter",
    ("result",),
    "Drift events sent to the drift topic: delivered, failed",
    "streams",
)
DRIFT_CONSUMER_LAG = declare(
    "loopline_drift_consumer_lag",
    "gauge",
    ("topic", "partition"),
    "Records behind the end of each predictions / labeled partition",
    "streams",
)
DRIFT_LAST_INPUT_TIMESTAMP = declare(
    "loopline_drift_last_input_timestamp_seconds",
    "gauge",
    ("stream",),
    "Wall-clock time the drift flow last processed an input of this stream",
    "streams",
)

# -- streams: labels flow (streams/labels, wired by the labels dataflow) -------------
LABELS_RECORDS = declare(
    "loopline_labels_records",
    "counter",
    ("stream", "result"),
    "Predictions and outcomes read by the labels flow, by what became of them: accepted, "
    "duplicate, late (outcome after its timeout), unmatched (outcome expired), evicted "
    "(state bound), timeout_dropped, malformed, invalid",
    "streams",
)
LABELS_EXAMPLES = declare(
    "loopline_labels_examples",
    "counter",
    ("resolution",),
    "Labeled examples committed to the offline store and the labeled topic, by resolution "
    "(outcome, timeout)",
    "streams",
)
LABELS_PENDING = declare(
    "loopline_labels_pending",
    "gauge",
    ("side",),
    "Buffered join state: predictions waiting for an outcome, outcomes waiting for a prediction",
    "streams",
)
LABELS_JOIN_LATENCY_SECONDS = declare(
    "loopline_labels_join_latency_seconds",
    "histogram",
    (),
    "Wall-clock time from the join resolving an example to its commit in both outputs",
    "streams",
)
LABELS_WATERMARK = declare(
    "loopline_labels_watermark_seconds",
    "gauge",
    (),
    "The maturity window's clock: event-time watermark (or wall clock), Unix seconds",
    "streams",
)
LABELS_REPLAYED = declare(
    "loopline_labels_replayed",
    "counter",
    (),
    "Examples re-emitted after a restart that were already committed (not written again)",
    "streams",
)
LABELS_CONSUMER_LAG = declare(
    "loopline_labels_consumer_lag",
    "gauge",
    ("topic", "partition"),
    "Records behind the end of each predictions / outcomes partition",
    "streams",
)
