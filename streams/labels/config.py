"""Everything the labels flow needs, resolved from :class:`Settings` at the edge.

Engine-neutral: the Bytewax adapter (``loopline.streams.labels.bytewax_flow``)
starts from a :class:`LabelsFlowConfig`.

>>> from loopline.contracts.settings import Settings
>>> cfg = LabelsFlowConfig.from_settings(Settings())
>>> cfg.predictions_topic, cfg.outcomes_topic, cfg.labeled_topic
('loopline.predictions', 'loopline.outcomes', 'loopline.labeled')
>>> cfg.policy.maturity_ms, cfg.policy.timeout_label, cfg.time
(86400000, 0, 'event')
>>> cfg.policy.max_predictions  # labels.max_pending_predictions over 16 shards
125000
>>> str(cfg.store_root)
'.loopline/offline'
>>> cfg.task
'binary'

A regression task has no default label: it needs ``labels.timeout_policy = "drop"``.

>>> from dataclasses import replace
>>> drop = replace(Settings(), labels=replace(Settings().labels, timeout_policy="drop"))
>>> LabelsFlowConfig.from_settings(drop, task="regression").policy.timeout_label is None
True
>>> LabelsFlowConfig.from_settings(Settings(), task="regression")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
loopline.contracts.errors.ConfigError: labels: ... set labels.timeout_policy = "drop" ...
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loopline.config.kafka import consumer_config, producer_config
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings
from loopline.contracts.tasks import BINARY, REGRESSION, check_task
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.streams.common.records import check_start_from
from loopline.streams.labels.clock import TIME_MODES
from loopline.streams.labels.inputs import OUTCOME_FIELDS
from loopline.streams.labels.join import TIMEOUT_POLICIES, JoinPolicy


@dataclass(frozen=True)
class LabelsFlowConfig:
    predictions_topic: str
    outcomes_topic: str
    labeled_topic: str
    dead_letter_topic: str
    consumer: dict[str, Any]
    producer: dict[str, Any]
    # The offline store (shared with the trainer: trainer.offline_store).
    store_root: Path
    policy: JoinPolicy
    time: str  # "event" | "processing"
    lateness_ms: int
    idle_after_ms: int
    shards: int
    writers: int
    flush_interval_s: float
    transaction_timeout_s: float
    batch_size: int = 1000
    start: str = "beginning"  # where a partition with no recovery state starts
    # Stop once every partition has been at its end this long (tests, backfills); None: forever.
    drain_idle_s: float | None = None
    report_every_ms: int = 200
    heartbeat_ms: int = 1000
    # What the labels mean: "binary" (0/1, checked on decode) or "regression"
    # (any finite number; no timeout label). Passed by the caller, not read from Settings.
    task: str = BINARY
    # The repo's names for the outcome's event id, label and event time.
    outcome_fields: tuple[str, str, str] = OUTCOME_FIELDS

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LabelsFlowConfig:
        """From the settings and the repo's model (its task, outcome topic and fields)."""
        s = settings.labels
        topics = Topics(settings.kafka.topic_prefix)
        outcomes = model_of(settings).outcomes
        outcomes_topic = topics.named(outcomes.topic)
        overrides.setdefault("task", outcomes.task)
        overrides.setdefault(
            "outcome_fields", (outcomes.event_id, outcomes.label, outcomes.event_time)
        )
        if s.timeout_policy not in TIMEOUT_POLICIES:
            raise ConfigError(
                f"labels.timeout_policy must be one of {sorted(TIMEOUT_POLICIES)}, "
                f"not {s.timeout_policy!r}"
            )
        if s.shards < 1 or s.writers < 1:
            raise ConfigError("labels.shards and labels.writers must be >= 1")
        if s.maturity_s <= 0 or s.flush_interval_s <= 0:
            raise ConfigError("labels.maturity_s and labels.flush_interval_s must be > 0")
        policy = JoinPolicy(
            maturity_ms=int(s.maturity_s * 1000),
            timeout_label=TIMEOUT_POLICIES[s.timeout_policy],
            outcome_retention_ms=int(s.outcome_retention_s * 1000),
            dedup_retention_ms=int(s.dedup_retention_s * 1000),
            max_predictions=max(1, s.max_pending_predictions // s.shards),
            max_outcomes=max(1, s.max_pending_outcomes // s.shards),
            predictions_topic=topics.predictions,
            outcomes_topic=outcomes_topic,
        )
        cfg = cls(
            predictions_topic=topics.predictions,
            outcomes_topic=outcomes_topic,
            labeled_topic=topics.labeled,
            dead_letter_topic=topics.dead_letters,
            consumer=consumer_config(settings.kafka, "labels"),
            producer=producer_config(settings.kafka),
            store_root=settings.trainer.offline_store,
            policy=policy,
            time=s.time,
            lateness_ms=int(s.allowed_lateness_s * 1000),
            idle_after_ms=int(s.idle_after_s * 1000),
            shards=s.shards,
            writers=s.writers,
            flush_interval_s=s.flush_interval_s,
            transaction_timeout_s=s.transaction_timeout_s,
            batch_size=settings.streams.batch_size,
            start=settings.streams.start_from,
        )
        cfg = replace(cfg, **overrides) if overrides else cfg
        if cfg.time not in TIME_MODES:
            raise ConfigError(f"labels.time must be one of {TIME_MODES}, not {cfg.time!r}")
        check_start_from(cfg.start)
        _check_task(cfg, s.timeout_policy)
        return cfg


def _check_task(cfg: LabelsFlowConfig, timeout_policy: str) -> None:
    """Refuse a timeout label for regression: no value is a safe default for a number."""
    check_task(cfg.task, "labels")
    if cfg.task == REGRESSION and cfg.policy.timeout_label is not None:
        raise ConfigError(
            "labels: a regression label has no default value, so a prediction without an "
            f"outcome cannot be labeled {timeout_policy!r}: set labels.timeout_policy = "
            '"drop" (LOOPLINE_LABELS__TIMEOUT_POLICY=drop)'
        )
