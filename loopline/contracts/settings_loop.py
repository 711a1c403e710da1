"""Settings sections for the loop's services: the dataflows, trainer, retrain policy, rollout.

One frozen dataclass each, every field documented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loopline.contracts.errors import ConfigError

# What serving logs for a feature that was not fresh (absent from the log: fresh).
FEATURE_STATUSES = ("missing", "stale", "defaulted")
# A remembered event id costs ~120-135 bytes (measured; README): 10M ids, ~1.3 GB per partition.
MAX_DEDUP_WINDOW = 10_000_000


@dataclass(frozen=True)
class StreamsSettings:
    """The Bytewax dataflows (features, labeled log, drift)."""

    workers: int = 1
    # Events older than the watermark minus this go to the dead-letter topic.
    allowed_lateness_s: float = 60.0
    redis_key_prefix: str = "ll"
    recovery_dir: Path = Path(".loopline/recovery")
    snapshot_interval_s: float = 5.0
    # Process i of a multi-process flow on one host serves metrics on this port + i
    # (one process per host or pod: this port itself).
    metrics_port: int = 9470
    # Features flow. Entities are spread over this many shards (the unit of
    # state and of work distribution); fixed, so results never depend on the
    # worker count. Changing it needs a fresh recovery directory.
    shards: int = 64
    # Bytewax recovery partitions created in an empty recovery_dir.
    recovery_partitions: int = 4
    # Events dated further ahead of the wall clock are dead-lettered ("invalid"):
    # one bogus future time would otherwise make its partition's later events late.
    max_future_s: float = 86400.0
    # Max records per Kafka poll per partition.
    batch_size: int = 1000
    # Where a partition without recovery state starts: "beginning" or "end".
    start_from: str = "beginning"
    redis_write_timeout_s: float = 5.0
    # The features flow's snapshot interval (0: snapshot_interval_s). Each
    # snapshot stalls the flow ~0.1 s (its state is rewritten to the recovery
    # store); every 30 s that stays out of the freshness p99. A crash replays
    # at most this much of the topic.
    features_snapshot_interval_s: float = 30.0
    # Features flow: per partition, the ids of its last this-many accepted
    # events are kept (and snapshotted); an event whose id is among them is a
    # duplicate (a producer re-sent it), skipped and counted, not aggregated.
    # A copy arriving more than this many events after its original, or on
    # another partition, is counted again. 0 turns deduplication off.
    dedup_window: int = 100_000

    def __post_init__(self) -> None:
        if type(self.dedup_window) is not int or not 0 <= self.dedup_window <= MAX_DEDUP_WINDOW:
            raise ConfigError(
                f"streams.dedup_window is {self.dedup_window!r}; use 0 (no deduplication) "
                f"to {MAX_DEDUP_WINDOW:_} event ids per partition"
            )


@dataclass(frozen=True)
class TrainerSettings:
    """Training, the offline store and the champion/challenger gate."""

    offline_store: Path = Path(".loopline/offline")
    # A challenger may be at most this much worse (AUC) than the champion.
    gate_auc_margin: float = 0.005
    num_trees: int = 200
    num_leaves: int = 31
    metrics_port: int = 9466
    # Rolling window of labeled data, ending at the newest labeled hour.
    window_hours: float = 14 * 24.0
    # Time-ordered split: oldest rows train, then validation (early stopping),
    # newest rows are the holdout (gate, parity, golden rows).
    validation_fraction: float = 0.15
    holdout_fraction: float = 0.15
    learning_rate: float = 0.05
    early_stopping_rounds: int = 30
    min_data_in_leaf: int = 20
    num_threads: int = 0  # 0: LightGBM's default (all cores)
    seed: int = 7
    min_rows: int = 200
    min_positives: int = 10
    # Labeled rows served with a feature of these statuses are not trained on
    # (comma-separated: missing, stale, defaulted; "" keeps every row). Defaulted
    # values are not the entity's: the online store could not answer.
    exclude_feature_status: str = "defaulted"

    def __post_init__(self) -> None:
        self.excluded_feature_statuses  # noqa: B018 - validates the setting now, not at training

    @property
    def excluded_feature_statuses(self) -> tuple[str, ...]:
        """``exclude_feature_status`` as a tuple of known statuses."""
        text = self.exclude_feature_status
        statuses = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        unknown = sorted(set(statuses) - set(FEATURE_STATUSES))
        if unknown:
            raise ConfigError(
                f"trainer.exclude_feature_status: unknown status {unknown}; use any of "
                f'{", ".join(FEATURE_STATUSES)} (comma-separated), or "" to keep every row'
            )
        return statuses

    parity_tolerance: float = 1e-5
    # A challenger may be at most this much worse than the champion (lower is better).
    gate_log_loss_margin: float = 0.01
    gate_brier_margin: float = 0.002
    # Regression models: a challenger's RMSE / MAE may exceed the champion's by
    # this fraction of the champion's value (relative: the target has no fixed
    # scale; 0.01 = 1 % worse allowed).
    gate_rmse_margin: float = 0.01
    gate_mae_margin: float = 0.01
    golden_rows: int = 8
    # Processed retrain-event ids (idempotency) live here.
    state_dir: Path = Path(".loopline/trainer")
    # `run trainer` also requests a training this often (0: only on retrain events).
    schedule_s: float = 0.0
    announce_timeout_s: float = 30.0


@dataclass(frozen=True)
class DriftSettings:
    """Drift detection (``streams/drift``) and its alarm hygiene.

    The defaults are what ``benchmarks/drift_detection.py`` measures.
    """

    # ADWIN on every monitored rate; clock 8 checks for a cut every 8 samples.
    adwin_delta: float = 0.002
    adwin_clock: int = 8
    # Alarm hygiene, in samples of the monitored stream.
    warmup: int = 500
    debounce: int = 64
    cooldown: int = 1000
    # Confirmation: a new level must last min_persist samples, and its later half
    # keep persist_ratio of the earlier half's shift, confirm_z standard errors
    # from the old level, within confirm_window samples of the raw detection.
    min_persist: int = 64
    persist_ratio: float = 0.5
    confirm_z: float = 2.5
    confirm_window: int = 256
    # Smallest shift worth an alarm and severity bounds, in Cohen's h.
    min_effect: float = 0.05
    warning_effect: float = 0.2
    critical_effect: float = 0.5
    # Data and prediction drift: a reference band per input feature and for the score.
    reference_size: int = 2000
    band_low_quantile: float = 0.1
    band_high_quantile: float = 0.9
    data_min_persist: int = 256
    # Feed the feature detectors every n-th prediction (1: every one).
    data_sample_every: int = 1
    # Concept drift on per-example error: "binary" (wrong at alert_threshold)
    # or "absolute" (|label - score|). A regression model always uses "absolute"
    # (the task, passed by the caller, chooses it; see streams/drift/regression.py).
    error_mode: str = "binary"
    alert_threshold: float = 0.5
    # Performance floors on labeled data (0 disables a floor). AUC and precision
    # are for binary models only.
    performance_window: int = 2000
    auc_floor: float = 0.80
    precision_floor: float = 0.0
    # Regression models: a ceiling on the rolling RMSE, in the target's unit (0: none).
    rmse_ceiling: float = 0.0
    performance_every: int = 100
    performance_persist: int = 3
    performance_min_positives: int = 20
    performance_cooldown: int = 2000
    # Only this arm's predictions are monitored (shadow arms repeat the same features).
    arm: str = "champion"
    # Detector families (a repo's Model(drift=Drift(...)) sets them): concept drift
    # on the error, prediction drift on the score, data drift on these features
    # (comma-separated model feature names; "" watches every feature).
    watch_error: bool = True
    watch_prediction: bool = True
    watch_features: str = ""
    # The drift dataflow's Prometheus endpoint (0: none).
    metrics_port: int = 9468


@dataclass(frozen=True)
class PolicySettings:
    """The retrain policy (``trainer/retrain_policy.py``): drift events -> retrain events."""

    # Drift events at or above this severity trigger a retrain on their own ...
    min_severity: str = "critical"
    # ... or this many warnings on distinct (kind, feature) within quorum_window_s.
    warning_quorum: int = 2
    quorum_window_s: float = 3600.0
    # Comma-separated drift kinds that may trigger a retrain.
    trigger_kinds: str = "concept,performance,data,prediction"
    # Labeled rows that must have arrived since the trigger (or the last retrain).
    min_new_rows: int = 1000
    min_interval_s: float = 3600.0
    max_per_day: int = 6
    # A scheduled retrain this often (0: none); it also needs min_new_rows.
    schedule_s: float = 86400.0
    # A trigger still short of rows after this long is dropped.
    pending_timeout_s: float = 86400.0
    # How often the policy loop re-checks pending triggers and the schedule.
    tick_s: float = 5.0
    # The policy loop's Prometheus endpoint (0: none).
    metrics_port: int = 9467


@dataclass(frozen=True)
class RolloutSettings:
    """Safe rollout of new versions (shadow, canary) and its automatic policy.

    Serving aborts a running plan on an error-rate or latency regression of
    the candidate (it sees the calls); ``loopline run rollout`` promotes or
    aborts it from the labeled log (per-arm AUC and log loss; RMSE and MAE for
    a regression model).
    """

    # How the retrain path publishes a version that passed the gate: "champion"
    # (all traffic at once), "shadow" or "canary" (a rollout plan against the champion).
    publish_mode: str = "champion"
    # Canary: share of entities the candidate answers. Shadow: share of requests
    # it also scores off the response path.
    canary_share: float = 0.1
    shadow_share: float = 1.0
    # Promotion from labels: this many labeled examples per arm first, then the
    # candidate may be at most this much worse (AUC lower, log loss higher).
    min_labels: int = 1000
    auc_margin: float = 0.01
    log_loss_margin: float = 0.02
    # Regression models (task passed by the caller): the candidate's RMSE and MAE
    # may exceed the champion's by this fraction of the champion's value (relative:
    # a regression target has no fixed scale; 0.02 = 2 % worse allowed).
    rmse_margin: float = 0.02
    mae_margin: float = 0.02
    # Abort from calls: both arms need min_calls first; then the candidate's error
    # rate may exceed the champion's by error_margin, and its model-run time
    # quantile may exceed latency_ratio times the champion's (and by at least
    # latency_min_delta_ms, so microsecond jitter never aborts a plan). Run
    # times are CPU time on the scoring thread: the model's own cost, the same
    # on a request thread and on the shadow thread whatever the load.
    min_calls: int = 200
    error_margin: float = 0.01
    latency_ratio: float = 1.5
    latency_quantile: float = 0.9
    latency_min_delta_ms: float = 0.25
    # Serving may abort a plan by itself (False: it only reports per-arm metrics).
    auto_abort: bool = True
    # Serving and `run rollout` look at the evidence this often.
    decide_every_s: float = 2.0
    # Shadow scores waiting for the candidate; beyond it they are skipped and counted.
    shadow_queue_size: int = 10_000
    # `loopline run rollout`'s Prometheus endpoint (0: none).
    metrics_port: int = 9465

    def __post_init__(self) -> None:
        if self.publish_mode not in ("champion", "shadow", "canary"):
            raise ConfigError(
                f"rollout.publish_mode must be champion, shadow or canary, "
                f"not {self.publish_mode!r}"
            )
        for name in ("canary_share", "shadow_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"rollout.{name} must be within [0, 1]")


@dataclass(frozen=True)
class LabelsSettings:
    """The labeled-log dataflow (``streams/labels``): predictions + outcomes -> labeled examples.

    Examples go to the offline store at ``trainer.offline_store`` (the trainer
    reads the same directory) and to the labeled topic.
    """

    # A prediction whose outcome has not arrived this long after its event time
    # is resolved by timeout_policy (fraud: no chargeback within the window).
    maturity_s: float = 24 * 3600.0
    # On timeout: "negative" (label 0), "positive" (label 1) or "drop" (no example).
    timeout_policy: str = "negative"
    # Clock of the maturity window: "event" (watermark of the input streams'
    # event times) or "processing" (wall clock when the flow read each record).
    time: str = "event"
    # The watermark trails the slowest input by this much: an outcome at most
    # this late (vs its partition's newest record) still beats its timeout.
    allowed_lateness_s: float = 60.0
    # An input partition at its end and silent this long (wall clock) stops
    # holding the watermark back (idle partitions must not stall the clock).
    idle_after_s: float = 1.0
    # Outcomes wait this long (window time) for their predictions, then expire (counted).
    outcome_retention_s: float = 3600.0
    # Resolved request ids (duplicate prediction logs) and timed-out event ids
    # (late outcomes) are remembered this long.
    dedup_retention_s: float = 600.0
    # Bounds on buffered state for the whole flow; beyond them the oldest entry
    # goes to the dead-letter topic ("evicted") with its original bytes.
    max_pending_predictions: int = 2_000_000
    max_pending_outcomes: int = 1_000_000
    # Join keys are spread over this many shards (fixed: changing it needs a
    # fresh recovery directory, as does changing writers).
    shards: int = 16
    # Parallel output writers (one Kafka transactional producer each).
    writers: int = 1
    # One recovery snapshot, one Kafka transaction and one Parquet file per
    # writer and touched hour this often: the labeled topic's latency and the
    # offline store's file size.
    flush_interval_s: float = 10.0
    transaction_timeout_s: float = 60.0
    # The labels flow's Prometheus endpoint (0: none).
    metrics_port: int = 9469
