"""``loopline backfill``: rebuild the online store from the event topics.

For when Redis lost feature values the features flow will not write again on
its own: a Redis restarted without persistence (or from an old file), a
flushed database, a new Redis. The flow only rewrites an entity when a new
event (or a window expiry) touches it, so an entity lost from Redis stays
missing, and serving answers with defaults, until then.

The backfill reads every event topic of the feature set from the beginning
(or ``since_ms``) up to its end as of the start, through the flow's own pure
steps (:class:`EventDecoder` per partition: parsing, validation, duplicates
by event id, lateness;
:class:`FeatureShard` per shard: windows and refreshes), and writes each
entity's final values once with the flow's write-if-newer rule
(:class:`FeatureWriter`): absolute values, never older than what Redis holds.
So it is safe beside a running flow, and safe to run twice. It prints a
progress line every few seconds and a summary at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from loopline.config.redis import redis_client
from loopline.contracts.errors import StackError
from loopline.contracts.settings import Settings
from loopline.streams.common.kafka_io import PartitionReader, list_partitions
from loopline.streams.features.aggregation import FeatureShard, FeatureWrite
from loopline.streams.features.config import FeatureFlowConfig
from loopline.streams.features.decoding import EventDecoder
from loopline.streams.features.redis_sink import FeatureWriter

PROGRESS_EVERY_S = 5.0
WRITE_CHUNK = 5000
# A read returns when its batch is full or after this: short, so partitions take turns.
READ_WAIT_S = 0.1


@dataclass
class BackfillReport:
    records: int = 0  # read from the topics
    events: int = 0  # accepted (valid and not late)
    skipped: int = 0  # invalid or late: what the flow sent to the dead letters
    duplicates: int = 0  # an event id the partition had accepted recently: not applied
    entities: int = 0  # values sent to Redis
    written: int = 0  # of which Redis took (the others held a newer value)
    expired: int = 0  # entities silent for longer than the TTL (expired: not written)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"backfill: done in {self.seconds:.1f} s: {self.records:,} records read, "
            f"{self.events:,} events applied, {self.skipped:,} skipped (invalid or late), "
            f"{self.duplicates:,} duplicates skipped; "
            f"{self.entities:,} entity values sent, {self.written:,} written, "
            f"{self.entities - self.written:,} left (Redis held newer), "
            f"{self.expired:,} expired (older than redis.feature_ttl_s)"
        )


@dataclass
class _Partition:
    reader: PartitionReader
    decoder: EventDecoder
    end: int  # offset to stop at (the end when the backfill started)


def backfill(
    settings: Settings,
    *,
    since_ms: int | None = None,
    progress: Callable[[str], None] = print,
    **cfg_overrides: object,
) -> BackfillReport:
    """Rebuild the feature values of ``settings``' feature set in Redis (module doc)."""
    cfg = FeatureFlowConfig.from_settings(settings, **cfg_overrides)
    started = time.monotonic()
    report = BackfillReport()
    parts = _open_partitions(cfg, since_ms)
    progress(
        f"backfill: {sum(p.end - max(p.reader.next_offset, 0) for p in parts):,} records at most "
        f"in {len(parts)} partition(s) of {', '.join(t for t, _ in cfg.sources)}"
    )
    shards: dict[int, FeatureShard] = {}
    latest: dict[str, tuple[FeatureShard, FeatureWrite]] = {}
    next_report = time.monotonic() + PROGRESS_EVERY_S
    try:
        while parts:
            for part in list(parts):
                records = [r for r in part.reader.read(READ_WAIT_S) if r.offset < part.end]
                done = part.reader.next_offset >= part.end
                if done or (part.reader.at_end and not records):
                    part.reader.close()
                    parts.remove(part)
                if not records:
                    continue
                batch = part.decoder.decode(records)
                report.records += batch.records
                report.events += batch.accepted
                report.skipped += len(batch.dead_letters)
                report.duplicates += batch.duplicates
                for shard, updates in batch.by_shard.items():
                    state = shards.get(shard)
                    if state is None:
                        state = shards[shard] = FeatureShard(
                            cfg.feature_set, cfg.layout, evict_after_s=cfg.evict_after_s
                        )
                    out = state.apply(updates)
                    report.skipped += len(out.rejected)
                    for w in out.writes:
                        latest[w.key] = (state, w)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_EVERY_S
                progress(
                    f"backfill: {report.records:,} records read, {len(latest):,} entities, "
                    f"{len(parts)} partition(s) to go"
                )
    finally:
        for part in parts:
            part.reader.close()
    _write(cfg, latest, report, progress)
    report.seconds = time.monotonic() - started
    progress(report.summary())
    return report


def _open_partitions(cfg: FeatureFlowConfig, since_ms: int | None) -> list[_Partition]:
    """A reader per partition, from the beginning (or ``since_ms``) to today's end."""
    parts = []
    probe = Consumer({**cfg.consumer, "enable.partition.eof": False})
    try:
        for topic, parser in cfg.sources:
            for p in list_partitions(cfg.consumer, topic):
                tp = TopicPartition(topic, p)
                low, end = probe.get_watermark_offsets(tp, timeout=30)
                start = low if since_ms is None else _offset_at(probe, tp, since_ms, end)
                if start >= end:
                    continue
                reader = PartitionReader(cfg.consumer, topic, p, start, batch_size=cfg.batch_size)
                decoder = EventDecoder(
                    cfg.feature_set,
                    parser,
                    shards=cfg.shards,
                    allowed_lateness_s=cfg.allowed_lateness_s,
                    max_future_s=cfg.max_future_s,
                    dedup_window=cfg.dedup_window,
                )
                parts.append(_Partition(reader, decoder, end))
    except KafkaException as e:
        raise StackError(f"backfill: cannot read the event topics: {e}") from e
    finally:
        probe.close()
    return parts


def _offset_at(consumer: Consumer, tp: TopicPartition, since_ms: int, end: int) -> int:
    found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, since_ms)], 30)
    offset = found[0].offset
    return end if offset < 0 else offset  # -1: no message that recent


def _write(
    cfg: FeatureFlowConfig,
    latest: dict[str, tuple[FeatureShard, FeatureWrite]],
    report: BackfillReport,
    progress: Callable[[str], None],
) -> None:
    # An entity its shard evicted (silent for the TTL in event time) has expired
    # from Redis too, as it would have in the flow: not revived.
    writes = [w for shard, w in latest.values() if shard.state(w.key) is not None]
    report.expired = len(latest) - len(writes)
    report.entities = len(writes)
    writer = FeatureWriter(
        redis_client(
            cfg.redis,
            socket_timeout=cfg.redis_timeout_s,
            socket_connect_timeout=cfg.redis_timeout_s,
        ),
        cfg.ttl_s,
    )
    try:
        for i in range(0, len(writes), WRITE_CHUNK):
            report.written += writer.write(writes[i : i + WRITE_CHUNK]).written
            progress(f"backfill: {min(i + WRITE_CHUNK, len(writes)):,}/{len(writes):,} values sent")
    finally:
        writer.close()
