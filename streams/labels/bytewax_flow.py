"""The labels flow as a Bytewax dataflow: the only module of it that knows Bytewax.

Steps (ids are stable: recovery state is stored under them)::

    kafka_inputs      one source partition per Kafka partition of the
                      predictions and outcomes topics; records are decoded
                      (malformed / invalid ones become dead letters) and each
                      partition reports its progress; snapshot = (offset,
                      newest window time)
    watermark         one WatermarkClock (single key) over every partition's
                      report; each advance is broadcast to every join shard
    join              one JoinShard per shard key (join key hash): buffered
                      predictions and outcomes, pickled into snapshots
    labeled_out       LabeledWriter per writer partition: each snapshot
                      (epoch, labels.flush_interval_s) flushes one Kafka
                      transaction + one Parquet file per touched hour, named
                      after the flush number kept in the writer's state
    dead_letters_out  malformed, invalid and evicted records, delivery checked

Swapping the engine means rewriting this module (and the runner); the pure
steps (``streams/labels``) and the Kafka reader stay.
"""

from __future__ import annotations

import pickle
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeAlias

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import (
    FixedPartitionedSink,
    StatefulSinkPartition,
)

from loopline.contracts.schemas import DeadLetter
from loopline.streams.common.bytewax_dead_letters import DeadLetterSink
from loopline.streams.common.bytewax_kafka_source import KafkaSourcePartition, StreamsSource
from loopline.streams.common.kafka_io import START_POSITIONS, list_partitions
from loopline.streams.common.records import SourceRecord
from loopline.streams.labels.clock import PROCESSING_TIME, PartitionProgress, WatermarkClock
from loopline.streams.labels.config import LabelsFlowConfig
from loopline.streams.labels.inputs import (
    ClockReport,
    OutcomeIn,
    PredictionIn,
    Tick,
    decode_outcome,
    decode_prediction,
    shard_key,
    writer_key,
)
from loopline.streams.labels.join import OUTCOMES, PREDICTIONS, JoinInput, JoinOutput, JoinShard
from loopline.streams.labels.metrics import label_metrics
from loopline.streams.labels.output import FlushResult, LabeledWriter, Resolved

FLOW_ID = "loopline_labels"
_MAX_IDLE_WAIT_S = 0.05

SourceItem: TypeAlias = PredictionIn | OutcomeIn | ClockReport | DeadLetter
# Source partition state: (next offset, newest window time read).
_PartitionState = tuple[int, int]


# -- source -------------------------------------------------------------------------------
class _InputPartition(KafkaSourcePartition[SourceItem, _PartitionState]):
    def __init__(
        self, cfg: LabelsFlowConfig, stream: str, partition: int, resume: _PartitionState | None
    ) -> None:
        topic = cfg.predictions_topic if stream == PREDICTIONS else cfg.outcomes_topic
        offset, max_ms = resume if resume is not None else (START_POSITIONS[cfg.start], 0)
        self._metrics = label_metrics()
        super().__init__(
            cfg.consumer,
            topic,
            partition,
            offset,
            batch_size=cfg.batch_size,
            lag_gauge=self._metrics.lag.labels(topic, str(partition)),
            drain_idle_s=cfg.drain_idle_s,
            min_wait_s=0.001,
            max_wait_s=_MAX_IDLE_WAIT_S,
        )
        self._stream = stream
        self._decode = (
            decode_prediction
            if stream == PREDICTIONS
            else partial(decode_outcome, task=cfg.task, fields=cfg.outcome_fields)
        )
        self._processing = cfg.time == PROCESSING_TIME
        self._progress = PartitionProgress(
            f"{topic}:{partition}",
            idle_after_ms=cfg.idle_after_ms,
            report_every_ms=cfg.report_every_ms,
            heartbeat_ms=cfg.heartbeat_ms,
            processing_time=self._processing,
            max_ms=max_ms,
        )

    def decode(self, records: list[SourceRecord], now_ms: int) -> list[SourceItem]:
        items: list[SourceItem] = []
        t_override = now_ms if self._processing else None
        observe = self._progress.observe
        for rec in records:
            item = self._decode(rec, t_override)
            if isinstance(item, DeadLetter):
                self._metrics.records.labels(self._stream, item.reason).inc()
                observe(0, now_ms)
            else:
                observe(item.t_ms, now_ms)
            items.append(item)
        return items

    def progress(self, now_ms: int) -> tuple[list[SourceItem], bool]:
        # A drain waits until the clock knows this partition is done (else it would hold it).
        report = self._progress.poll(self.reader.at_end, now_ms)
        if report is None:
            return [], self._progress.caught_up_reported
        return [report], report.caught_up

    def snapshot(self) -> _PartitionState:
        return (self.reader.next_offset, self._progress.max_ms)


class KafkaLabelsSource(StreamsSource[SourceItem, _PartitionState]):
    """Every partition of the predictions and outcomes topics, as ``stream:partition``."""

    def __init__(self, cfg: LabelsFlowConfig) -> None:
        topics = {PREDICTIONS: cfg.predictions_topic, OUTCOMES: cfg.outcomes_topic}
        super().__init__(cfg.consumer, topics)
        self._cfg = cfg

    def build_stream_part(
        self, stream: str, partition: int, resume: _PartitionState | None
    ) -> _InputPartition:
        return _InputPartition(self._cfg, stream, partition, resume)


# -- watermark ----------------------------------------------------------------------------
class _ClockLogic(StatefulBatchLogic[ClockReport, Tick, bytes]):
    def __init__(self, cfg: LabelsFlowConfig, sources: list[str], resume: bytes | None) -> None:
        clock: WatermarkClock = (
            pickle.loads(resume) if resume else WatermarkClock(sources, cfg.lateness_ms)
        )
        # Partitions added since the snapshot must report before the clock moves on.
        clock.sources = tuple(sorted(sources))
        self._clock = clock
        self._metrics = label_metrics()

    def on_batch(self, values: list[ClockReport]) -> tuple[list[Tick], bool]:
        advanced = None
        for report in values:
            wm = self._clock.update(report)
            if wm is not None:
                advanced = wm
        if advanced is None:
            return [], StatefulBatchLogic.RETAIN
        self._metrics.watermark.set(advanced / 1000.0)
        return [Tick(advanced)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self._clock, protocol=pickle.HIGHEST_PROTOCOL)


# -- join ---------------------------------------------------------------------------------
# A shard's snapshot: (JoinShard bytes, a watermark safe to apply but not applied yet).
_JoinState: TypeAlias = tuple[bytes, int | None]


class _JoinLogic(StatefulBatchLogic[JoinInput, tuple[JoinOutput, float], _JoinState]):
    """One join shard. A tick waits for the end of the epoch it arrived in.

    Across workers a tick can overtake the records it stands for: the records
    go straight to this shard, the partition's report goes through the clock
    on another worker. Both are in the same epoch, and Bytewax calls
    ``snapshot`` once the epoch is closed, when all of its records are here:
    only then is the tick applied (on the next call, or ``on_notify``).
    """

    def __init__(self, cfg: LabelsFlowConfig, resume: _JoinState | bytes | None) -> None:
        # Snapshots of earlier versions are the shard's bytes alone.
        shard, safe = resume if isinstance(resume, tuple) else (resume, None)
        self._shard = JoinShard(cfg.policy, shard)
        self._held: int | None = None  # newest tick of the open epoch
        self._safe: int | None = safe  # newest tick of a closed epoch, not applied yet
        self._poll = timedelta(seconds=min(cfg.flush_interval_s, 0.1))
        self._metrics = label_metrics()
        self._name = str(id(self))

    def on_batch(self, values: list[JoinInput]) -> tuple[list[tuple[JoinOutput, float]], bool]:
        data: list[JoinInput] = []
        for value in values:
            if isinstance(value, Tick):
                self._held = max(self._held or value.watermark_ms, value.watermark_ms)
            else:
                data.append(value)
        return self._process(data)

    def on_notify(self) -> tuple[list[tuple[JoinOutput, float]], bool]:
        return self._process([])

    def on_eof(self) -> tuple[list[tuple[JoinOutput, float]], bool]:
        # No record can come after the end of input: every tick is safe.
        self._promote()
        return self._process([])

    def notify_at(self) -> datetime | None:
        if self._held is None and self._safe is None:
            return None
        return datetime.now(UTC) + self._poll

    def snapshot(self) -> _JoinState:
        self._promote()  # the epoch is closed
        return (self._shard.snapshot(), self._safe)

    def _promote(self) -> None:
        if self._held is not None:
            self._safe = max(self._safe or self._held, self._held)
            self._held = None

    def _process(self, data: list[JoinInput]) -> tuple[list[tuple[JoinOutput, float]], bool]:
        if self._safe is not None:
            data.append(Tick(self._safe))
            self._safe = None
        out = self._shard.process(data)
        records = self._metrics.records
        for (stream, result), n in out.counts.items():
            records.labels(stream, result).inc(n)
        shard = self._shard
        self._metrics.set_pending(self._name, shard.pending_predictions, shard.pending_outcomes)
        if not out.examples and not out.dead_letters:
            return [], StatefulBatchLogic.RETAIN
        return [(out, time.time())], StatefulBatchLogic.RETAIN


# -- sinks --------------------------------------------------------------------------------
class _LabeledPartition(StatefulSinkPartition[Resolved, Any]):
    def __init__(self, cfg: LabelsFlowConfig, part: str, resume: Any) -> None:
        self._writer = LabeledWriter(cfg, part, resume)
        self._metrics = label_metrics()
        found = self._writer.reconciled
        if found.suppressed or found.repaired:
            # Once per restart after a crash: worth a line in the service log.
            print(
                f"labels writer {part}: resuming at flush {found.next_seq}; "
                f"{found.suppressed} example(s) committed after the last snapshot will not be "
                f"written again; {len(found.repaired)} file(s) rebuilt from {cfg.labeled_topic}",
                file=sys.stderr,
                flush=True,
            )

    def write_batch(self, values: list[Resolved]) -> None:
        replayed = self._writer.add(values)
        if replayed:
            self._metrics.replayed.inc(replayed)

    def snapshot(self) -> Any:
        # The epoch is over: commit its examples before its state is stored.
        self._observe(self._writer.flush())
        return self._writer.state()

    def close(self) -> None:
        self._observe(self._writer.flush())

    def _observe(self, result: FlushResult | None) -> None:
        if result is None:
            return
        examples, latency = self._metrics.examples, self._metrics.join_latency
        for example, resolved_at in result.examples:
            examples.labels(example.resolution).inc()
            latency.observe(max(result.committed_at - resolved_at, 0.0))


class LabeledSink(FixedPartitionedSink[Resolved, Any]):
    """``labels.writers`` output partitions; every worker can write any of them."""

    def __init__(self, cfg: LabelsFlowConfig) -> None:
        self._cfg = cfg

    def list_parts(self) -> list[str]:
        return [f"{i:03d}" for i in range(self._cfg.writers)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _LabeledPartition:
        return _LabeledPartition(self._cfg, for_part, resume_state)


# -- the flow -----------------------------------------------------------------------------
def build_flow(cfg: LabelsFlowConfig) -> Dataflow:
    """The labels dataflow for ``cfg`` (lists the input partitions: needs the broker)."""
    sources = [
        f"{topic}:{p}"
        for topic in (cfg.predictions_topic, cfg.outcomes_topic)
        for p in list_partitions(cfg.consumer, topic)
    ]
    shard_keys = [str(i) for i in range(cfg.shards)]
    shards, writers = cfg.shards, cfg.writers

    def route(x: SourceItem) -> tuple[str, JoinInput] | None:
        if isinstance(x, PredictionIn):
            return shard_key(x.join_key, shards), x
        if isinstance(x, OutcomeIn):
            return shard_key(x.event_id, shards), x
        return None

    def to_writers(kv: tuple[str, tuple[JoinOutput, float]]) -> list[tuple[str, Resolved]]:
        out, resolved_at = kv[1]
        return [(writer_key(e.request_id, writers), (e, resolved_at)) for e in out.examples]

    flow = Dataflow(FLOW_ID)
    items = op.input("kafka_inputs", flow, KafkaLabelsSource(cfg))
    malformed: Stream[DeadLetter] = op.filter_map(
        "malformed", items, lambda x: x if isinstance(x, DeadLetter) else None
    )
    reports = op.filter_map(
        "clock_reports", items, lambda x: ("clock", x) if isinstance(x, ClockReport) else None
    )
    keyed = op.filter_map("keyed_inputs", items, route)
    ticks = op.stateful_batch("watermark", reports, lambda r: _ClockLogic(cfg, sources, r))
    broadcast = op.flat_map("broadcast_ticks", ticks, lambda kv: [(k, kv[1]) for k in shard_keys])
    joined = op.stateful_batch(
        "join", op.merge("join_inputs", keyed, broadcast), lambda r: _JoinLogic(cfg, r)
    )
    op.output("labeled_out", op.flat_map("examples", joined, to_writers), LabeledSink(cfg))
    evicted = op.flat_map("evicted", joined, lambda kv: kv[1][0].dead_letters)
    op.output(
        "dead_letters_out",
        op.merge("all_dead_letters", malformed, evicted),
        DeadLetterSink(cfg.producer, cfg.dead_letter_topic),
    )
    return flow
