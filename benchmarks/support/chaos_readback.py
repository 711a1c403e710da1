"""What a chaos scenario checks once its fault is over: latencies and outages of
the calls, topics read back, and the online store against a clean replay.

* :func:`topic_event_ids` reads a topic back, to tell acked events that never
  arrived (lost) from those that arrived twice.
* Event times are the wall clock, so a run shorter than the shortest tile
  expiry (9 min for the fraud example) leaves exactly what the offline replay
  of the acked events computes (:func:`expected_features`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from loopline.contracts.redis_layout import RedisLayout, pack
from loopline.featurecore.entity_state import final_values
from loopline.featurecore.features import FeatureSet


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    """p50, p99 and max in ms (NaN without calls)."""
    if not latencies_s:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    a = np.asarray(latencies_s) * 1000
    p50, p99 = np.percentile(a, [50, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(a.max()), 2),
    }


def longest_outage_s(timeline: list[tuple[float, bool]]) -> float:
    """The longest stretch from a failed call to the next answered one (0: none failed)."""
    worst = 0.0
    first_failure: float | None = None
    for at, ok in sorted(timeline):
        if not ok and first_failure is None:
            first_failure = at
        elif ok and first_failure is not None:
            worst = max(worst, at - first_failure)
            first_failure = None
    if first_failure is not None and timeline:
        worst = max(worst, max(t for t, _ in timeline) - first_failure)
    return round(worst, 2)


def topic_messages(bootstrap: str, topic: str, *, timeout_s: float = 600.0) -> list[bytes]:
    """Every message value on ``topic`` now (read from the beginning to today's end);
    raises when that takes longer than ``timeout_s``."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "chaos-readback", "enable.auto.commit": False}
    )
    out: list[bytes] = []
    try:
        partitions = list(consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                if msg.error():
                    continue
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
                out.append(msg.value() or b"")
        if len(done) < len(partitions):
            raise RuntimeError(f"reading {topic} back took over {timeout_s:.0f} s")
        return out
    finally:
        consumer.close()


def topic_size(bootstrap: str, topic: str) -> int:
    """Messages on ``topic`` now (the sum of its partitions' end offsets)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-readback"})
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts
        )
    finally:
        consumer.close()


def topic_event_ids(bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> Counter[str]:
    """How often each ``event_id`` is on ``topic`` (payloads that are not events are skipped)."""
    seen: Counter[str] = Counter()
    for value in topic_messages(bootstrap, topic, timeout_s=timeout_s):
        try:
            doc = json.loads(value)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("event_id"), str):
            seen[doc["event_id"]] += 1
    return seen


def expected_features(
    fs: FeatureSet, events: list[dict[str, Any]], key_prefix: str
) -> dict[bytes, bytes]:
    """What a clean run of the features flow leaves in Redis for ``events``: the
    package's offline replay, packed, keyed as ``flow_runs.stored_values`` keys
    what it reads (the online key without ``key_prefix``)."""
    layout = RedisLayout(key_prefix)
    # Stable: events of one entity at the same millisecond keep their send order.
    ordered = sorted(events, key=lambda e: e["event_time"])
    cut = len(key_prefix)
    return {
        layout.feature_key(fs, entity, eid).encode()[cut:]: pack(at, values)
        for (entity, eid), (at, values) in final_values(fs, ordered).items()
    }


def feature_mismatches(expected: dict[bytes, bytes], stored: dict[bytes, bytes]) -> dict[str, int]:
    """Keys missing, extra and with another value in ``stored``."""
    return {
        "missing": sum(k not in stored for k in expected),
        "extra": sum(k not in expected for k in stored),
        "different": sum(k in stored and stored[k] != v for k, v in expected.items()),
    }


def mismatched(comparison: dict[str, int]) -> int:
    """Keys wrong in a :func:`feature_mismatches` result."""
    return comparison["missing"] + comparison["extra"] + comparison["different"]
