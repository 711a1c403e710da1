"""`loopline drift tail`: drift events as they arrive, one readable line each.

>>> from loopline.contracts.schemas import DriftEvent
>>> event = DriftEvent(
...     id="de-2d03bb16d5d01dfffe37fe4b", time_ms=1_700_000_123_000, kind="concept",
...     detector="adwin(binary)", feature="error", statistic_before=0.1012,
...     statistic_after=0.3121, window_before=4820, window_after=180, model_version="3",
...     severity="critical", evidence={"effect_h": 0.52})
>>> print(format_event(event))  # doctest: +NORMALIZE_WHITESPACE
2023-11-14 22:15:23Z  CRITICAL  concept      error      0.101 -> 0.312  model 3
    adwin(binary) h=0.52 windows 4820/180  de-2d03bb16d5d01dfffe37fe4b
>>> perf = DriftEvent("de-9", 1_700_000_200_000, "performance", "rolling-auc", "auc", 0.95,
...                   0.77, 2000, 2000, "3", "critical", {"floor": 0.8})
>>> print(format_event(perf))  # doctest: +NORMALIZE_WHITESPACE
2023-11-14 22:16:40Z  CRITICAL  performance  auc  0.950 -> 0.770  model 3
    rolling-auc floor 0.8 window 2000  de-9
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import TextIO

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from loopline.config.kafka import consumer_config
from loopline.contracts.errors import ConfigError, SchemaError, StackError
from loopline.contracts.schemas import DriftEvent, decode
from loopline.contracts.settings import KafkaSettings

SEVERITIES = ("info", "warning", "critical")
METADATA_TIMEOUT_S = 10.0
HEADER = (
    "time (UTC)            severity  kind         feature                   before -> after  "
    "model    detector / evidence  id"
)


def format_event(event: DriftEvent) -> str:
    """One line for a person on call: when, how bad, what moved, from what to what."""
    when = dt.datetime.fromtimestamp(event.time_ms / 1000, tz=dt.UTC)
    stamp = when.strftime("%Y-%m-%d %H:%M:%SZ")
    evidence = event.evidence
    if event.kind == "performance":
        detail = f"{event.detector}"
        if "floor" in evidence:
            detail += f" floor {evidence['floor']:g}"
        detail += f" window {event.window_after}"
    else:
        detail = event.detector
        if isinstance(evidence.get("effect_h"), int | float):
            detail += f" h={evidence['effect_h']:.2f}"
        detail += f" windows {event.window_before}/{event.window_after}"
    return (
        f"{stamp}  {event.severity.upper():8}  {event.kind:11}  {event.feature:24}  "
        f"{event.statistic_before:6.3f} -> {event.statistic_after:.3f}  "
        f"model {event.model_version}  {detail}  {event.id}"
    )


def tail(
    kafka: KafkaSettings,
    topic: str,
    out: TextIO,
    *,
    err: TextIO | None = None,
    from_beginning: bool = False,
    since_ms: int | None = None,
    min_severity: str = "info",
    max_events: int | None = None,
    timeout_s: float | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Print drift events of ``topic`` until stopped; returns how many were printed.

    Starts at the end (new events only), at the beginning, or at ``since_ms``.
    Reads without a consumer group: tailing never moves anyone's offsets.
    Malformed messages are reported on ``err`` and skipped.
    """
    if min_severity not in SEVERITIES:
        raise ConfigError(f"min_severity must be one of {SEVERITIES}, not {min_severity!r}")
    floor = SEVERITIES.index(min_severity)
    consumer = Consumer(consumer_config(kafka, "drift-tail", **{"enable.auto.commit": False}))
    printed = 0
    until = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        consumer.assign(_start_positions(consumer, topic, from_beginning, since_ms))
        if on_ready is not None:
            on_ready()
        while stop is None or not stop.is_set():
            if until is not None and time.monotonic() > until:
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise StackError(f"reading {topic}: {error}")
                continue
            try:
                event = decode(DriftEvent, msg.value() or b"")
            except SchemaError as e:
                if err is not None:
                    print(f"(skipped a malformed drift event at offset {msg.offset()}: {e})",
                          file=err, flush=True)  # fmt: skip
                continue
            rank = SEVERITIES.index(event.severity) if event.severity in SEVERITIES else 0
            if rank < floor:
                continue
            print(format_event(event), file=out, flush=True)
            printed += 1
            if max_events is not None and printed >= max_events:
                break
    finally:
        consumer.close()
    return printed


def _start_positions(
    consumer: Consumer, topic: str, from_beginning: bool, since_ms: int | None
) -> list[TopicPartition]:
    try:
        meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
    except KafkaException as e:
        raise StackError(f"cannot reach Kafka to tail {topic}: {e} (is the stack up?)") from e
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None or not tmeta.partitions:
        raise StackError(f"topic {topic} is not available (run `loopline up`)")
    partitions = sorted(tmeta.partitions)
    if from_beginning:
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if since_ms is not None:
        wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
        found = consumer.offsets_for_times(wanted, timeout=METADATA_TIMEOUT_S)
        out = []
        for tp in found:
            if tp.offset >= 0:
                out.append(tp)
                continue
            # Nothing that recent: start at the end.
            _, high = consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)
            out.append(TopicPartition(topic, tp.partition, high))
        return out
    # The end as of now, resolved here so nothing produced after this call is missed.
    out = []
    for p in partitions:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=METADATA_TIMEOUT_S
        )
        out.append(TopicPartition(topic, p, high))
    return out
