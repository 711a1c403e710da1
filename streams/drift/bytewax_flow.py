"""The drift flow as a Bytewax dataflow: the only module of it that knows Bytewax.

Predictions and labeled topics -> one DriftMonitor per model -> drift topic,
around the pure :mod:`loopline.streams.drift`. Steps
(ids are stable: recovery state is stored under them)::

    kafka_inputs      one source partition per Kafka partition of the
                      predictions and labeled topics; records are decoded
                      (malformed ones become dead letters); snapshot = offset
    decoded           (model name, DriftInput)
    monitor           one DriftMonitor per model name, pickled into snapshots
    drift_out         drift events to the drift topic, keyed by model name,
                      every delivery checked (a failure stops the flow before
                      its next snapshot; the replay re-emits the same ids)
    dead_letters_out  malformed and refused records, delivery checked

Kafka reading and dead letters are the shared ``streams.common`` pieces;
running it is :mod:`.run`.
"""

from __future__ import annotations

import pickle
import time
from typing import TypeAlias

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from loopline.contracts.errors import DeliveryError
from loopline.contracts.schemas import DeadLetter, DriftEvent, encode
from loopline.kafka.checked_producer import CheckedProducer
from loopline.streams.common.bytewax_dead_letters import DeadLetterSink
from loopline.streams.common.bytewax_kafka_source import KafkaSourcePartition, StreamsSource
from loopline.streams.common.kafka_io import START_POSITIONS
from loopline.streams.common.records import SourceRecord
from loopline.streams.drift.config import DriftFlowConfig
from loopline.streams.drift.inputs import (
    LABELED,
    PREDICTIONS,
    BatchResult,
    DriftInput,
    decode_input,
    monitor_batch,
)
from loopline.streams.drift.metrics import drift_metrics
from loopline.streams.drift.monitor import DriftMonitor

FLOW_ID = "loopline_drift"
_MAX_IDLE_WAIT_S = 0.05

Item: TypeAlias = DriftInput | DeadLetter


# -- source -------------------------------------------------------------------------------
class _InputPartition(KafkaSourcePartition[Item, int]):
    def __init__(self, cfg: DriftFlowConfig, stream: str, partition: int, resume: int | None):
        self._stream = stream
        self._metrics = drift_metrics()
        topic = cfg.topics[stream]
        super().__init__(
            cfg.consumer,
            topic,
            partition,
            resume if resume is not None else START_POSITIONS[cfg.start],
            batch_size=cfg.batch_size,
            lag_gauge=self._metrics.lag.labels(topic, str(partition)),
            drain_idle_s=cfg.drain_idle_s,
            min_wait_s=0.001,
            max_wait_s=_MAX_IDLE_WAIT_S,
        )

    def decode(self, records: list[SourceRecord], now_ms: int) -> list[Item]:
        self._metrics.last_input.labels(self._stream).set(now_ms / 1000)
        return [
            decode_input(
                self._stream,
                r.value,
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                now_ms=now_ms,
            )
            for r in records
        ]

    def snapshot(self) -> int:
        return self.reader.next_offset


class KafkaDriftSource(StreamsSource[Item, int]):
    """Every partition of the predictions and labeled topics, as ``stream:partition``."""

    def __init__(self, cfg: DriftFlowConfig) -> None:
        super().__init__(cfg.consumer, cfg.topics)
        self._cfg = cfg

    def build_stream_part(self, stream: str, partition: int, resume: int | None) -> _InputPartition:
        return _InputPartition(self._cfg, stream, partition, resume)


# -- the monitor step ---------------------------------------------------------------------
class _MonitorLogic(StatefulBatchLogic[DriftInput, BatchResult, bytes]):
    def __init__(self, cfg: DriftFlowConfig, resume: bytes | None) -> None:
        self._cfg = cfg
        self._monitor: DriftMonitor | None = pickle.loads(resume) if resume else None
        if self._monitor is not None and self._monitor.task != cfg.task:
            # Detectors learned on another task's errors mean nothing now: start over.
            self._monitor = None
        self._metrics = drift_metrics()
        self._next_stats = 0.0

    def on_batch(self, values: list[DriftInput]) -> tuple[list[BatchResult], bool]:
        monitor = self._monitor
        if monitor is None:
            monitor = self._monitor = DriftMonitor(
                values[0].model_name, self._cfg.feature_names, self._cfg.drift, self._cfg.task
            )
        result = monitor_batch(monitor, values, int(time.time() * 1000))
        inputs = self._metrics.inputs
        for (stream, outcome), n in result.counts.items():
            inputs.labels(monitor.model_name, stream, outcome).inc(n)
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self._cfg.stats_every_s
            self._publish_stats(monitor)
        return [result], StatefulBatchLogic.RETAIN

    def _publish_stats(self, monitor: DriftMonitor) -> None:
        model = monitor.model_name
        for stat in monitor.stats():
            self._metrics.statistic.labels(model, stat.kind, stat.feature).set(stat.value)
            self._metrics.reference.labels(model, stat.kind, stat.feature).set(stat.reference)

    def snapshot(self) -> bytes:
        # Bytes, not the live object: the monitor keeps changing after the snapshot.
        return pickle.dumps(self._monitor, protocol=pickle.HIGHEST_PROTOCOL)


# -- sinks --------------------------------------------------------------------------------
class _DriftEventPartition(StatelessSinkPartition[tuple[str, DriftEvent]]):
    def __init__(self, cfg: DriftFlowConfig) -> None:
        self._producer = CheckedProducer(
            cfg.producer,
            flush_timeout_s=cfg.delivery_timeout_s,
            hint=f"drift events to {cfg.drift_topic}: check the broker and that the topic exists",
        )
        self._topic = cfg.drift_topic
        self._metrics = drift_metrics()

    def write_batch(self, items: list[tuple[str, DriftEvent]]) -> None:
        try:
            for model, event in items:
                self._producer.send(self._topic, encode(event), model.encode())
            self._producer.flush()
        except DeliveryError:
            # The whole batch is replayed from the last snapshot: none of it counts yet.
            self._metrics.published.labels("failed").inc(len(items))
            raise
        self._metrics.published.labels("delivered").inc(len(items))
        for model, event in items:
            self._metrics.alarms.labels(model, event.kind, event.feature, event.severity).inc()

    def close(self) -> None:
        self._producer.close()


class DriftEventSink(DynamicSink[tuple[str, DriftEvent]]):
    def __init__(self, cfg: DriftFlowConfig) -> None:
        self._cfg = cfg

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DriftEventPartition:
        return _DriftEventPartition(self._cfg)


def _count_malformed(letter: DeadLetter) -> DeadLetter:
    stream = LABELED if letter.source_topic.endswith("labeled") else PREDICTIONS
    drift_metrics().inputs.labels("", stream, "invalid").inc()
    return letter


# -- the flow -----------------------------------------------------------------------------
def build_flow(cfg: DriftFlowConfig) -> Dataflow:
    """The drift dataflow for ``cfg``."""
    flow = Dataflow(FLOW_ID)
    items = op.input("kafka_inputs", flow, KafkaDriftSource(cfg))
    malformed = op.filter_map(
        "malformed", items, lambda x: _count_malformed(x) if isinstance(x, DeadLetter) else None
    )
    decoded = op.filter_map(
        "decoded", items, lambda x: (x.model_name, x) if isinstance(x, DriftInput) else None
    )
    results = op.stateful_batch("monitor", decoded, lambda resume: _MonitorLogic(cfg, resume))
    events = op.flat_map("drift_events", results, lambda kv: [(kv[0], e) for e in kv[1].events])
    refused = op.flat_map("refused", results, lambda kv: kv[1].dead_letters)
    op.output("drift_out", events, DriftEventSink(cfg))
    dead = op.merge("all_dead_letters", malformed, refused)
    op.output("dead_letters_out", dead, DeadLetterSink(cfg.producer, cfg.dead_letter_topic))
    return flow
