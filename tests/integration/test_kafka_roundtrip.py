"""10,000 keyed messages through the real broker and back through a consumer group."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from loopline.config.kafka import consumer_config, producer_config
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics

MESSAGES = 10_000
KEYS = 97  # prime, so keys spread unevenly over partitions like real traffic
CONSUME_DEADLINE_S = 120.0


def _produce(settings: Settings, topic: str) -> None:
    producer = Producer(producer_config(settings.kafka))
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            failures.append(error)

    for i in range(MESSAGES):
        key = f"k{i % KEYS:03d}"
        seq = i // KEYS
        producer.produce(topic, key=key, value=f"{key}:{seq}", on_delivery=on_delivery)
        if i % 1000 == 0:
            producer.poll(0)  # serve delivery callbacks, keep the queue short
    assert producer.flush(60) == 0, "messages still queued after 60 s"
    assert not failures, f"{len(failures)} deliveries failed, first: {failures[0]}"


def _row(msg: Message) -> tuple[int, int, str, str]:
    assert msg.error() is None, msg.error()
    partition, offset, key, value = msg.partition(), msg.offset(), msg.key(), msg.value()
    assert partition is not None and offset is not None and key and value
    return (partition, offset, key.decode(), value.decode())


def test_ten_thousand_keyed_messages_round_trip_in_order(
    stack_settings: Settings, topics: Topics
) -> None:
    topic = topics.events
    _produce(stack_settings, topic)

    group = f"roundtrip-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(consumer_config(stack_settings.kafka, group))
    consumer.subscribe([topic])
    received: list[tuple[int, int, str, str]] = []
    deadline = time.monotonic() + CONSUME_DEADLINE_S
    try:
        while len(received) < MESSAGES and time.monotonic() < deadline:
            received += [_row(m) for m in consumer.consume(num_messages=1000, timeout=1.0)]
        # Give a stray duplicate the chance to show up before judging.
        received += [_row(m) for m in consumer.consume(num_messages=100, timeout=1.0)]
        consumer.commit(asynchronous=False)
        assigned = consumer.assignment()
        committed = consumer.committed(assigned, timeout=30)
    finally:
        consumer.close()

    assert len(received) == MESSAGES, f"got {len(received)} of {MESSAGES} messages"
    values = [value for *_, value in received]
    assert len(set(values)) == MESSAGES, "some message arrived more than once"
    expected = {f"k{i % KEYS:03d}:{i // KEYS}" for i in range(MESSAGES)}
    assert set(values) == expected

    last_offset: dict[int, int] = {}
    next_seq: dict[str, int] = defaultdict(int)
    partition_of: dict[str, int] = {}
    for partition, offset, key, value in received:
        # Offsets increase within each partition, as delivered.
        assert offset > last_offset.get(partition, -1), (partition, offset)
        last_offset[partition] = offset
        # A key lives in one partition and its messages arrive in the order sent.
        assert partition_of.setdefault(key, partition) == partition, key
        seq = int(value.rsplit(":", 1)[1])
        assert seq == next_seq[key], f"{key}: expected seq {next_seq[key]}, got {seq}"
        next_seq[key] += 1
    assert set(last_offset) == set(range(stack_settings.topics.partitions)), (
        "97 keys should land on every partition"
    )

    # The group's committed offsets account for every message.
    assert {tp.partition for tp in assigned} == set(last_offset)
    assert sum(tp.offset for tp in committed) == MESSAGES
    assert all(isinstance(tp, TopicPartition) and tp.error is None for tp in committed)
