"""Everything the drift flow needs, resolved from :class:`Settings` at the edge.

Engine-neutral: the Bytewax adapter (:mod:`.bytewax_flow`) starts from a
:class:`DriftFlowConfig`.

>>> from loopline.contracts.settings import Settings
>>> cfg = DriftFlowConfig.from_settings(Settings())
>>> cfg.topics["predictions"], cfg.drift_topic, cfg.task
('loopline.predictions', 'loopline.drift', 'binary')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from loopline.config.kafka import consumer_config, producer_config
from loopline.contracts.settings import DriftSettings, Settings
from loopline.contracts.tasks import BINARY, check_task
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import project_of
from loopline.streams.common.records import check_start_from
from loopline.streams.drift.inputs import LABELED, PREDICTIONS


@dataclass(frozen=True)
class DriftFlowConfig:
    topics: dict[str, str]  # stream -> topic (PREDICTIONS, LABELED)
    drift_topic: str
    dead_letter_topic: str
    consumer: dict[str, Any]
    producer: dict[str, Any]
    feature_names: tuple[str, ...]
    drift: DriftSettings
    batch_size: int = 1000
    start: str = "beginning"  # where a partition with no recovery state starts
    # Stop once every partition has been at its end this long (tests); None: forever.
    drain_idle_s: float | None = None
    stats_every_s: float = 1.0
    delivery_timeout_s: float = 30.0
    # What labels and scores mean: "binary" or "regression" (residual concept
    # drift, an RMSE ceiling instead of AUC). Passed by the caller, not read from Settings.
    task: str = BINARY

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DriftFlowConfig:
        """From the settings and the repo's model (its features and task)."""
        topics = Topics(settings.kafka.topic_prefix)
        project = project_of(settings)
        overrides.setdefault("task", project.model(settings.project.model).task)
        cfg = cls(
            topics={PREDICTIONS: topics.predictions, LABELED: topics.labeled},
            drift_topic=topics.drift,
            dead_letter_topic=topics.dead_letters,
            consumer=consumer_config(settings.kafka, "drift"),
            producer=producer_config(settings.kafka),
            feature_names=tuple(project.feature_set(settings.project.model).model_features),
            drift=settings.drift,
            batch_size=settings.streams.batch_size,
            start=settings.streams.start_from,
        )
        cfg = replace(cfg, **overrides)
        check_task(cfg.task, "drift")
        check_start_from(cfg.start)
        return cfg
