"""The drift dataflow: predictions and labeled topics -> DriftMonitor per model -> drift topic.

A thin Bytewax adapter around the pure :mod:`loopline.streams.drift`. Steps
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

Kafka reading, dead letters and recovery directories reuse the features
flow's adapters (``kafka_io``, ``dead_letters``, ``features.run``).

Run it with ``loopline run drift`` or Bytewax's runner::

    python -m bytewax.run "loopline.streams.drift.bytewax_flow:flow_from_env()"
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from loopline.config.kafka import consumer_config, producer_config
from loopline.config.loader import load_settings
from loopline.contracts import metric_names as mn
from loopline.contracts.errors import ConfigError, DeliveryError
from loopline.contracts.schemas import DeadLetter, DriftEvent, encode
from loopline.contracts.settings import DriftSettings, Settings
from loopline.contracts.tasks import BINARY, check_task
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import project_of
from loopline.streams.common.bytewax_dead_letters import DeadLetterSink
from loopline.streams.common.kafka_io import (
    START_POSITIONS,
    PartitionPacing,
    PartitionReader,
    list_partitions,
)
from loopline.streams.drift.inputs import (
    LABELED,
    PREDICTIONS,
    BatchResult,
    DriftInput,
    decode_input,
    monitor_batch,
)
from loopline.streams.drift.monitor import DriftMonitor
from loopline.streams.features.run import RunOptions, ensure_recovery_dir

FLOW_ID = "loopline_drift"
RECOVERY_SUBDIR = "drift"
_MAX_IDLE_WAIT_S = 0.05


@dataclass(frozen=True)
class DriftFlowConfig:
    """Everything the drift flow needs, resolved from :class:`Settings` at the edge."""

    topics: dict[str, str]  # stream -> topic (PREDICTIONS, LABELED)
    drift_topic: str
    dead_letter_topic: str
    consumer: dict[str, Any]
    producer: dict[str, Any]
    feature_names: tuple[str, ...]
    drift: DriftSettings
    batch_size: int = 1000
    start: str = "beginning"
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
        return cfg


# -- metrics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftMetrics:
    alarms: Counter
    statistic: Gauge
    reference: Gauge
    inputs: Counter
    published: Counter
    lag: Gauge
    last_input: Gauge


_lock = threading.Lock()
_metrics: dict[int, DriftMetrics] = {}


def drift_metrics(registry: CollectorRegistry = REGISTRY) -> DriftMetrics:
    """The process's drift metrics (created on first use, shared by worker threads)."""
    with _lock:
        found = _metrics.get(id(registry))
        if found is None:

            def counter(m: mn.Metric) -> Counter:
                return Counter(m.name, m.help, list(m.labels), registry=registry)

            def gauge(m: mn.Metric) -> Gauge:
                return Gauge(m.name, m.help, list(m.labels), registry=registry)

            found = _metrics[id(registry)] = DriftMetrics(
                alarms=counter(mn.DRIFT_ALARMS),
                statistic=gauge(mn.DRIFT_STATISTIC),
                reference=gauge(mn.DRIFT_REFERENCE),
                inputs=counter(mn.DRIFT_INPUTS),
                published=counter(mn.DRIFT_EVENTS_PUBLISHED),
                lag=gauge(mn.DRIFT_CONSUMER_LAG),
                last_input=gauge(mn.DRIFT_LAST_INPUT_TIMESTAMP),
            )
        return found


# -- source -------------------------------------------------------------------------------
Item = DriftInput | DeadLetter


class _InputPartition(StatefulSourcePartition[Item, int]):
    def __init__(self, cfg: DriftFlowConfig, stream: str, partition: int, resume: int | None):
        self._stream = stream
        self._topic = cfg.topics[stream]
        offset = resume if resume is not None else START_POSITIONS[cfg.start]
        self._reader = PartitionReader(
            cfg.consumer, self._topic, partition, offset, batch_size=cfg.batch_size
        )
        self._metrics = drift_metrics()
        self._pacing = PartitionPacing(
            self._reader,
            self._metrics.lag.labels(self._topic, str(partition)),
            drain_idle_s=cfg.drain_idle_s,
            min_wait_s=0.001,
            max_wait_s=_MAX_IDLE_WAIT_S,
        )

    def next_batch(self) -> list[Item]:
        records = self._reader.read()
        now = time.monotonic()
        self._pacing.after_read(bool(records), now)
        if not records:
            if self._pacing.drained(now):
                raise StopIteration
            return []
        now_ms = int(time.time() * 1000)
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

    def next_awake(self) -> datetime | None:
        return self._pacing.next_awake()

    def snapshot(self) -> int:
        return self._reader.next_offset

    def close(self) -> None:
        self._reader.close()


class KafkaDriftSource(FixedPartitionedSource[Item, int]):
    """Every partition of the predictions and labeled topics, as ``stream:partition``."""

    def __init__(self, cfg: DriftFlowConfig) -> None:
        self._cfg = cfg

    def list_parts(self) -> list[str]:
        return [
            f"{stream}:{p}"
            for stream, topic in self._cfg.topics.items()
            for p in list_partitions(self._cfg.consumer, topic)
        ]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _InputPartition:
        stream, _, partition = for_part.partition(":")
        return _InputPartition(self._cfg, stream, int(partition), resume_state)


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
        self._producer = Producer(cfg.producer)
        self._topic = cfg.drift_topic
        self._timeout_s = cfg.delivery_timeout_s
        self._failures: list[str] = []
        self._metrics = drift_metrics()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def write_batch(self, items: list[tuple[str, DriftEvent]]) -> None:
        for model, event in items:
            self._producer.produce(
                self._topic, key=model.encode(), value=encode(event), on_delivery=self._on_delivery
            )
        remaining = self._producer.flush(self._timeout_s)
        failures, self._failures = self._failures, []
        if remaining or failures:
            self._metrics.published.labels("failed").inc(len(failures) + remaining)
            raise DeliveryError(
                f"{len(failures)} drift event(s) failed and {remaining} unacknowledged after "
                f"{self._timeout_s} s to {self._topic}: {'; '.join(failures[:3])}"
            )
        self._metrics.published.labels("delivered").inc(len(items))
        for model, event in items:
            self._metrics.alarms.labels(model, event.kind, event.feature, event.severity).inc()

    def close(self) -> None:
        self._producer.flush(self._timeout_s)


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


def recovery_dir(settings: Settings) -> Path:
    """This flow's recovery partitions (the features flow uses a sibling directory)."""
    return settings.streams.recovery_dir / RECOVERY_SUBDIR


def run_drift(settings: Settings, options: RunOptions | None = None, **overrides: Any) -> None:
    """Run the drift flow in this process until it ends (drain) or is stopped."""
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    options = options or RunOptions()
    if options.workers < 1:
        raise ConfigError("workers must be >= 1")
    if (options.process_id is None) != (not options.addresses):
        raise ConfigError("--process-id and --addresses go together (one address per process)")
    cfg = DriftFlowConfig.from_settings(settings, drain_idle_s=options.drain_idle_s, **overrides)
    if cfg.start not in START_POSITIONS:
        raise ConfigError(f"streams.start_from must be 'beginning' or 'end', not {cfg.start!r}")
    recovery = None
    if options.recovery:
        path = ensure_recovery_dir(
            options.recovery_path or recovery_dir(settings), settings.streams.recovery_partitions
        )
        recovery = RecoveryConfig(str(path), timedelta(0))
    if options.metrics and settings.drift.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.drift.metrics_port + (options.process_id or 0))
    cli_main(
        build_flow(cfg),
        workers_per_process=options.workers,
        process_id=options.process_id,
        addresses=list(options.addresses) if options.addresses else None,
        epoch_interval=timedelta(seconds=settings.streams.snapshot_interval_s),
        recovery_config=recovery,
    )


def flow_from_env() -> Dataflow:
    """The flow built from the environment's settings, for ``python -m bytewax.run``."""
    settings = load_settings(os.environ.get("LOOPLINE_CONFIG"))
    return build_flow(DriftFlowConfig.from_settings(settings))
