"""The settings object: every configurable value of Loopline, frozen.

Declarations only: :mod:`loopline.config.loader` builds it (defaults, a feature
repo, a settings file, ``LOOPLINE_<SECTION>__<KEY>`` variables) at the edge.
The sections live in :mod:`loopline.contracts.settings_sections` (connections,
stack, serving) and :mod:`loopline.contracts.settings_loop` (the loop's services).

>>> Settings().redis.url
'redis://127.0.0.1:16379/0'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loopline.contracts.settings_loop import (
    DriftSettings,
    LabelsSettings,
    PolicySettings,
    RolloutSettings,
    StreamsSettings,
    TrainerSettings,
)
from loopline.contracts.settings_sections import (
    KafkaSettings,
    ProjectSettings,
    RedisSettings,
    RegistrySettings,
    ServingSettings,
    StackSettings,
    TopicSettings,
)

# The sections are importable from here, where the settings are built.
__all__ = [
    "ENV_PREFIX",
    "DriftSettings",
    "KafkaSettings",
    "LabelsSettings",
    "PolicySettings",
    "ProjectSettings",
    "RedisSettings",
    "RegistrySettings",
    "RolloutSettings",
    "ServingSettings",
    "Settings",
    "StackSettings",
    "StreamsSettings",
    "TopicSettings",
    "TrainerSettings",
]  # fmt: skip

ENV_PREFIX = "LOOPLINE_"


@dataclass(frozen=True)
class Settings:
    """Everything configurable in Loopline, frozen."""

    project: ProjectSettings = field(default_factory=ProjectSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    streams: StreamsSettings = field(default_factory=StreamsSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    labels: LabelsSettings = field(default_factory=LabelsSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
