"""The features flow's integration tests: a transaction stream, the flow as a process,
and the exact values it must leave in Redis (the offline replay, ``final_values``)."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition
from flow_process import FlowProcess
from fraud_repo import FRAUD_FEATURES
from kafka_support import kafka_env, produce_records, read_to_end
from prometheus_client.parser import text_string_to_metric_families

from loopline.contracts.redis_layout import RedisLayout, pack
from loopline.contracts.schemas import DeadLetter, decode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurecore.entity_state import final_values
from loopline.featurecore.features import FeatureSet

BASE_MS = 1_700_000_000_000
# Every test's events span less than the shortest tile expiry (9 min): no
# refresh moves a value past its last event, so final_values is the exact truth.
SPAN_MS = 5 * 60_000

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class FeaturesRun:
    """What a features flow test works with (the ``features_run`` fixture): the test's
    settings and topics, the shared Redis, the test's key prefix and a temp dir."""

    settings: Settings
    topics: Topics
    redis: redis.Redis
    key_prefix: str
    tmp_path: Path


def events(n: int, seed: int, part: tuple[int, int] = (0, 1)) -> list[dict[str, Any]]:
    """``n`` events in the ``part[0]``-th of ``part[1]`` consecutive slices of the span."""
    rng = random.Random(seed)
    width = SPAN_MS // 2 // part[1]
    out = [
        {
            "event_id": f"e{seed}-{i}",
            "card_id": f"c{rng.randrange(1500)}",
            "merchant_id": f"m{rng.randrange(120)}",
            "amount": round(rng.lognormvariate(3.3, 0.9), 2),
            "event_time": BASE_MS + part[0] * width + rng.randrange(width),
        }
        for i in range(n)
    ]
    # Roughly increasing, out of order by far less than the allowed lateness (60 s).
    out.sort(key=lambda e: e["event_time"] + rng.randrange(20_000))
    return out


def event_record(topic: str, doc: Any) -> tuple[str, bytes, bytes]:
    """An event dict as JSON keyed by card, or a raw ``(key, bytes)`` pair as it is."""
    if isinstance(doc, tuple):
        return (topic, *doc)
    return topic, doc["card_id"].encode(), json.dumps(doc).encode()


def produce_events(
    settings: Settings, topic: str, docs: list[Any], rate: float | None = None
) -> None:
    """Event dicts as JSON keyed by card, or raw ``(key, bytes)`` pairs as they are."""
    produce_records(settings, (event_record(topic, doc) for doc in docs), rate=rate or 0.0)


def features_flow(
    settings: Settings,
    key_prefix: str,
    log: Any,
    *args: str,
    metrics_port: int = 0,
    start_from: str = "beginning",
    extra_env: dict[str, str] | None = None,
) -> FlowProcess:
    """``python -m loopline.streams run features ...`` writing under ``key_prefix``."""
    env = {
        **kafka_env(settings),
        "LOOPLINE_REDIS__HOST": settings.redis.host,
        "LOOPLINE_REDIS__PORT": str(settings.redis.port),
        "LOOPLINE_STREAMS__REDIS_KEY_PREFIX": key_prefix,
        "LOOPLINE_STREAMS__FEATURES_SNAPSHOT_INTERVAL_S": "1",
        "LOOPLINE_STREAMS__SHARDS": "16",
        "LOOPLINE_STREAMS__START_FROM": start_from,
        # Never the repository's .loopline/recovery, even without --recovery-dir.
        "LOOPLINE_STREAMS__RECOVERY_DIR": str(log.parent / "recovery-default"),
        **(extra_env or {}),
    }
    if metrics_port:
        env["LOOPLINE_STREAMS__METRICS_PORT"] = str(metrics_port)
    else:
        args = (*args, "--no-metrics")
    return FlowProcess("features", env, log, *args)


def flow_metrics(port: int) -> Samples:
    """The flow's samples; empty while its endpoint is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except urllib.error.URLError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def end_offsets(settings: Settings, topic: str) -> list[TopicPartition]:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "unused"})
    ends = [
        TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
        for p in range(settings.topics.partitions)
    ]
    c.close()
    return ends


def stored(client: redis.Redis, key_prefix: str) -> dict[bytes, bytes]:
    """Every feature key under ``key_prefix`` with its packed value."""
    keys = list(client.scan_iter(match=f"{key_prefix}:f:*", count=1000))
    return dict(zip(keys, client.mget(keys), strict=True)) if keys else {}


def expected_store(
    events: list[dict[str, Any]],
    key_prefix: str,
    fs: FeatureSet = FRAUD_FEATURES,
    *,
    cluster: bool = False,
) -> dict[bytes, bytes]:
    """What the flow must write: the offline replay's values, packed under their keys
    (hash-tagged with ``cluster``)."""
    layout = RedisLayout(key_prefix, cluster=cluster)
    return {
        layout.feature_key(fs, entity, eid).encode(): pack(at, values)
        for (entity, eid), (at, values) in final_values(fs, events).items()
    }


def dead_letters(settings: Settings, topic: str) -> list[DeadLetter]:
    return [decode(DeadLetter, m.value() or b"") for m in read_to_end(settings, topic)]
