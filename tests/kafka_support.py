"""Kafka for integration tests: records on topics, read back, the broker for a child process.

Every record produced is acknowledged or the test fails right there, so a
later assertion never chases a message that was never delivered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from loopline.config.kafka import consumer_config, producer_config
from loopline.contracts.settings import Settings

# (topic, key, value)
Record = tuple[str, bytes | None, bytes]
READ_DEADLINE_S = 60.0


def produce_records(
    settings: Settings,
    records: Iterable[Record],
    *,
    partition: int | None = None,
    timestamp_ms: int | None = None,
    rate: float = 0.0,
) -> None:
    """Every record acknowledged, in order; ``rate`` (records/s) paces them like live traffic.

    ``partition`` pins them all to one partition (a consumer then sees the
    order produced); ``timestamp_ms`` replaces the Kafka timestamp (now).
    """
    producer = Producer(producer_config(settings.kafka))
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    pinned: dict[str, Any] = {}
    if partition is not None:
        pinned["partition"] = partition
    if timestamp_ms is not None:
        pinned["timestamp"] = timestamp_ms
    started = time.monotonic()
    for n, (topic, key, value) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery, **pinned)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        producer.poll(0)
        if rate and n % 200 == 0:
            ahead = started + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    assert producer.flush(60) == 0 and not failures, failures[:3]


def produce(
    settings: Settings,
    topic: str,
    values: Iterable[bytes],
    *,
    key: bytes | None = None,
    partition: int | None = None,
) -> None:
    """``values`` on ``topic``, all under ``key``, every one acknowledged."""
    produce_records(settings, ((topic, key, v) for v in values), partition=partition)


def read_to_end(settings: Settings, topic: str) -> list[Message]:
    """Every committed message of ``topic`` right now (each partition read to its end)."""
    consumer = Consumer(
        consumer_config(
            settings.kafka, f"reader-{time.monotonic_ns()}", **{"enable.partition.eof": True}
        )
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[Message] = []
    open_partitions = set(partitions)
    deadline = time.monotonic() + READ_DEADLINE_S
    try:
        while open_partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                open_partitions.discard(msg.partition())
    finally:
        consumer.close()
    assert not open_partitions, f"{topic}: partitions {open_partitions} not read to the end"
    return out


def read_expected(
    settings: Settings,
    topic: str,
    expect: int,
    *,
    wait_s: float = READ_DEADLINE_S,
    settle_s: float = 1.0,
) -> list[Message]:
    """Messages of ``topic`` from its beginning, waiting until ``expect`` arrived.

    Then ``settle_s`` more, so one message too many (a duplicate) shows up too.
    """
    consumer = Consumer(consumer_config(settings.kafka, f"reader-{time.monotonic_ns()}"))
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + wait_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
        settled = time.monotonic() + settle_s
        while time.monotonic() < settled:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def kafka_env(settings: Settings) -> dict[str, str]:
    """The environment that points a child process at the test's broker, topics and groups."""
    return {
        "LOOPLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LOOPLINE_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "LOOPLINE_KAFKA__CONSUMER_GROUP_PREFIX": settings.kafka.consumer_group_prefix,
    }
