"""The features flow as a Bytewax dataflow: the only module that knows Bytewax.

Steps (ids are stable: recovery state is stored under them)::

    kafka_events        one Kafka partition per source partition; each poll is
                        parsed, validated, deduplicated and lateness-gated by
                        that partition's EventDecoder (its stream time and
                        recent event ids are snapshotted with the offset, so
                        the verdicts survive restarts)
    route_to_shards     (shard, updates) per shard touched by the poll
    aggregate           FeatureShard per shard key: entity states, event clock,
                        expiry refreshes; emits the absolute values to write
    redis_out           batched write-if-newer into Redis, TTL, metrics
    rejected            updates the feature engine refused, as dead letters
    dead_letters_out    every dead letter, delivery checked

Swapping the engine means rewriting this module (and the runner); the pure
steps (decoding, aggregation, redis_sink, dead_letters, kafka_io) stay.
"""

from __future__ import annotations

import json
import time
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from loopline.config.redis import cluster_client, redis_client
from loopline.contracts.schemas import DeadLetter
from loopline.streams.common.bytewax_dead_letters import DeadLetterSink
from loopline.streams.common.bytewax_kafka_source import KafkaSourcePartition
from loopline.streams.common.kafka_io import START_POSITIONS, list_partitions
from loopline.streams.common.records import SourceRecord
from loopline.streams.features.aggregation import FeatureShard, ShardOutput
from loopline.streams.features.config import FeatureFlowConfig
from loopline.streams.features.decoding import (
    REASON_INVALID,
    REASON_LATE,
    DecodedBatch,
    EventDecoder,
    IdsSnapshot,
)
from loopline.streams.features.metrics import FeatureMetrics, feature_metrics
from loopline.streams.features.redis_sink import FeatureWriter

FLOW_ID = "loopline_features"
# Idle polling backs off from 0.5 ms to this: bounds the latency an event
# arriving on a quiet partition can pay, and the CPU an idle flow burns.
_MAX_IDLE_WAIT_S = 0.005

# Source partition state: (next offset, partition stream time in ms, the ids
# of its last accepted events, oldest first). Snapshots written before
# deduplication hold only the first two: they resume with an empty id window.
_PartitionState = tuple[int, int, IdsSnapshot] | tuple[int, int]


def _resume_point(resume: _PartitionState | None, start: int) -> tuple[int, int, IdsSnapshot]:
    """(offset, clock, recent ids) to start a partition from; ``start`` without state."""
    if resume is None:
        return start, 0, ()
    offset, clock_ms, *rest = resume
    return offset, clock_ms, rest[0] if rest else ()


class _EventPartition(KafkaSourcePartition[DecodedBatch, _PartitionState]):
    def __init__(
        self, cfg: FeatureFlowConfig, source: int, partition: int, resume: _PartitionState | None
    ):
        offset, clock_ms, recent_ids = _resume_point(resume, START_POSITIONS[cfg.start])
        topic, parser = cfg.sources[source]
        self._metrics = feature_metrics()
        super().__init__(
            cfg.consumer,
            topic,
            partition,
            offset,
            batch_size=cfg.batch_size,
            lag_gauge=self._metrics.consumer_lag.labels(
                str(partition) if len(cfg.sources) == 1 else f"{topic}:{partition}"
            ),
            drain_idle_s=cfg.drain_idle_s,
            min_wait_s=0.0005,
            max_wait_s=_MAX_IDLE_WAIT_S,
        )
        self._decoder = EventDecoder(
            cfg.feature_set,
            parser,
            shards=cfg.shards,
            allowed_lateness_s=cfg.allowed_lateness_s,
            max_future_s=cfg.max_future_s,
            clock_ms=clock_ms,
            dedup_window=cfg.dedup_window,
            recent_ids=recent_ids,
        )

    def decode(self, records: list[SourceRecord], now_ms: int) -> list[DecodedBatch]:
        batch = self._decoder.decode(records)
        self._metrics.records.inc(batch.records)
        self._metrics.events.inc(batch.accepted)
        if batch.duplicates:
            self._metrics.duplicates.inc(batch.duplicates)
        return [batch]

    def snapshot(self) -> _PartitionState:
        decoder = self._decoder
        return (self.reader.next_offset, decoder.clock.max_ms, decoder.recent.snapshot())


class KafkaEventSource(FixedPartitionedSource[DecodedBatch, _PartitionState]):
    """The event topics; each Kafka partition is one recoverable source partition.

    With one topic a partition is named by its number (as it always was);
    with several, ``topic:number``.
    """

    def __init__(self, cfg: FeatureFlowConfig) -> None:
        self._cfg = cfg

    def list_parts(self) -> list[str]:
        sources = self._cfg.sources
        if len(sources) == 1:
            return [str(p) for p in list_partitions(self._cfg.consumer, sources[0][0])]
        return [
            f"{topic}:{p}"
            for topic, _ in sources
            for p in list_partitions(self._cfg.consumer, topic)
        ]

    def build_part(
        self, step_id: str, for_part: str, resume_state: _PartitionState | None
    ) -> _EventPartition:
        topic, _, number = for_part.rpartition(":")
        topics = [t for t, _ in self._cfg.sources]
        source = topics.index(topic) if topic else 0
        return _EventPartition(self._cfg, source, int(number), resume_state)


class _ShardLogic(StatefulBatchLogic[list[Any], ShardOutput, dict[str, Any]]):
    def __init__(self, shard: FeatureShard) -> None:
        self._shard = shard

    def on_batch(self, values: list[list[Any]]) -> tuple[list[ShardOutput], bool]:
        updates = values[0] if len(values) == 1 else [u for v in values for u in v]
        out = self._shard.apply(updates)
        self._shard.prepickle()  # keeps the epoch-end snapshot short
        return [out], StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        return self._shard.snapshot()


class _RedisPartition(StatelessSinkPartition[tuple[str, ShardOutput]]):
    def __init__(self, cfg: FeatureFlowConfig, metrics: FeatureMetrics) -> None:
        # redis.cluster: a RedisCluster client (slot routing, failover), checked at start.
        connect = cluster_client if cfg.redis.cluster else redis_client
        client = connect(
            cfg.redis,
            socket_timeout=cfg.redis_timeout_s,
            socket_connect_timeout=cfg.redis_timeout_s,
        )
        self._writer = FeatureWriter(client, cfg.ttl_s)
        self._metrics = metrics
        self._written = metrics.redis_keys.labels("written")
        self._stale = metrics.redis_keys.labels("stale")
        self._hook = cfg.on_written
        self._freshness = metrics.freshness_seconds.part()

    def write_batch(self, items: list[tuple[str, ShardOutput]]) -> None:
        writes = []
        refreshed = evicted = 0
        for _shard, out in items:
            writes.extend(out.writes)
            refreshed += out.refreshed
            evicted += out.evicted
        if refreshed:
            self._metrics.refreshes.inc(refreshed)
        if evicted:
            self._metrics.evictions.inc(evicted)
        if not writes:
            return
        result = self._writer.write(writes)
        now = time.time()
        self._metrics.redis_write_seconds.observe(result.seconds)
        self._written.inc(result.written)
        if result.stale:
            self._stale.inc(result.stale)
        observe = self._freshness.observe
        now_ms = now * 1000.0
        for w in writes:
            if w.oldest_ms:
                observe(max(now_ms - w.oldest_ms, 0.0) / 1000.0)
        if self._hook is not None:
            self._hook(writes, now)

    def close(self) -> None:
        self._writer.close()


class RedisFeatureSink(DynamicSink[tuple[str, ShardOutput]]):
    def __init__(self, cfg: FeatureFlowConfig) -> None:
        self._cfg = cfg

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self._cfg, feature_metrics())


def _count_dead_letters(items: list[DeadLetter]) -> None:
    metrics = feature_metrics()
    for letter in items:
        metrics.dead_letters.labels(letter.reason).inc()
        if letter.reason == REASON_LATE:
            metrics.late_events.inc()


def _rejected_letters(cfg: FeatureFlowConfig, out: ShardOutput) -> list[DeadLetter]:
    letters = []
    topic_of = {parser.name: topic for topic, parser in cfg.sources}
    views = cfg.feature_set.views
    for (vi, _eid, _t, record, partition, offset), error in out.rejected:
        letters.append(
            DeadLetter.of(
                source_topic=topic_of.get(views[vi].source or "", cfg.topic),
                partition=partition,
                offset=offset,
                reason=REASON_INVALID,
                # The original bytes stayed at the source; this is the parsed record.
                error=f"feature engine refused the event: {error}",
                value=json.dumps(record, default=str).encode(),
                time_ms=int(time.time() * 1000),
            )
        )
    return letters


def build_flow(cfg: FeatureFlowConfig) -> Dataflow:
    """The features dataflow for ``cfg``."""
    fs = cfg.feature_set
    flow = Dataflow(FLOW_ID)
    batches = op.input("kafka_events", flow, KafkaEventSource(cfg))
    routed = op.flat_map(
        "route_to_shards", batches, lambda b: [(str(s), u) for s, u in b.by_shard.items()]
    )
    outputs = op.stateful_batch(
        "aggregate",
        routed,
        lambda resume: _ShardLogic(
            FeatureShard(fs, cfg.layout, evict_after_s=cfg.evict_after_s, snapshot=resume)
        ),
    )
    op.output("redis_out", outputs, RedisFeatureSink(cfg))
    rejected = op.flat_map("rejected", outputs, lambda kv: _rejected_letters(cfg, kv[1]))
    dead = op.flat_map("dead_letters", batches, lambda b: b.dead_letters)
    all_dead = op.merge("all_dead_letters", dead, rejected)
    op.output(
        "dead_letters_out",
        all_dead,
        DeadLetterSink(cfg.producer, cfg.dead_letter_topic, _count_dead_letters),
    )
    return flow
