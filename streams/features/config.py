"""Everything the features flow needs, resolved from :class:`Settings` at the edge.

Engine-neutral: the Bytewax adapter (:mod:`.bytewax_flow`) and the
benchmark's plain-consumer baseline both start from a
:class:`FeatureFlowConfig`.

>>> from loopline.contracts.settings import Settings
>>> cfg = FeatureFlowConfig.from_settings(Settings())
>>> cfg.topic, cfg.dead_letter_topic, cfg.shards
('loopline.events', 'loopline.dead-letters', 64)
>>> [parser.name for _, parser in cfg.sources]
['transactions']
>>> cfg.consumer["fetch.wait.max.ms"]
10
>>> cfg.dedup_window  # streams.dedup_window: event ids remembered per partition
100000
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loopline.config.kafka import consumer_config, producer_config
from loopline.contracts.redis_layout import RedisLayout
from loopline.contracts.settings import RedisSettings, Settings
from loopline.contracts.topics import Topics
from loopline.featurecore.event_schema import EventParser
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.loader import project_of
from loopline.streams.common.records import check_start_from
from loopline.streams.features.aggregation import FeatureWrite

# Called by the Redis sink after each successful write with the writes and the
# wall-clock time (s) they became visible; the benchmark records freshness here.
WrittenHook = Callable[[Sequence[FeatureWrite], float], None]


@dataclass(frozen=True)
class FeatureFlowConfig:
    feature_set: FeatureSet
    # (topic, parser of its events) for each event source the views read
    sources: tuple[tuple[str, EventParser], ...]
    dead_letter_topic: str
    consumer: dict[str, Any]
    producer: dict[str, Any]
    # Where and as whom the sink writes (loopline.config.redis builds its client).
    redis: RedisSettings
    redis_timeout_s: float
    layout: RedisLayout
    ttl_s: int
    shards: int
    allowed_lateness_s: float
    max_future_s: float
    dedup_window: int  # event ids remembered per partition (0: no deduplication)
    batch_size: int
    start: str  # "beginning" | "end": where a partition with no recovery state starts
    evict_after_s: float
    # Stop once every partition has been at its end this long (tests, benchmarks,
    # backfills); None: follow the topic forever.
    drain_idle_s: float | None = None
    on_written: WrittenHook | None = field(default=None, compare=False)

    @property
    def topic(self) -> str:
        """The first (often the only) event topic."""
        return self.sources[0][0]

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> FeatureFlowConfig:
        s = settings.streams
        topics = Topics(settings.kafka.topic_prefix)
        project = project_of(settings)
        # An applied earlier version may be given (a second flow keeping it fresh).
        fs = overrides.pop("feature_set", None) or project.feature_set(settings.project.model)
        keys = {k for v in fs.views for k in v.key_fields}
        scored = project.model(settings.project.model).scores.name
        names = dict.fromkeys(v.source or scored for v in fs.views)
        sources = tuple(
            (topics.named(src.topic), EventParser(src, keys))
            for src in (project.source(n) for n in names)
        )
        cfg = cls(
            feature_set=fs,
            sources=sources,
            dead_letter_topic=topics.dead_letters,
            consumer=consumer_config(settings.kafka, "features"),
            producer=producer_config(settings.kafka),
            redis=settings.redis,
            redis_timeout_s=s.redis_write_timeout_s,
            layout=RedisLayout(s.redis_key_prefix, cluster=settings.redis.cluster),
            ttl_s=settings.redis.feature_ttl_s,
            shards=s.shards,
            allowed_lateness_s=s.allowed_lateness_s,
            max_future_s=s.max_future_s,
            dedup_window=s.dedup_window,
            batch_size=s.batch_size,
            start=s.start_from,
            evict_after_s=float(settings.redis.feature_ttl_s),
        )
        cfg = replace(cfg, **overrides) if overrides else cfg
        check_start_from(cfg.start)
        return cfg
