"""The shared checked producer on the real broker: acknowledged or a clear error."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from loopline.config.kafka import consumer_config, producer_config
from loopline.contracts.errors import DeliveryError
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.kafka.checked_producer import CheckedProducer


def _read_all(settings: Settings, topic: str, n: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(consumer_config(settings.kafka, f"check-{uuid.uuid4().hex[:6]}"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[tuple[bytes, bytes]] = []
    try:
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.key(), msg.value()))
            if len(got) >= n:
                break
    finally:
        consumer.close()
    return got


def test_flush_returns_once_every_message_is_on_the_broker(
    isolated_settings: Settings, topics: Topics
) -> None:
    producer = CheckedProducer(producer_config(isolated_settings.kafka))
    for i in range(50):
        producer.send(topics.drift, f"v{i}".encode(), key=f"k{i}")
    producer.flush()
    got = _read_all(isolated_settings, topics.drift, 50)
    assert sorted(v for _, v in got) == sorted(f"v{i}".encode() for i in range(50))
    assert {k for k, _ in got} == {f"k{i}".encode() for i in range(50)}


def test_an_unknown_topic_is_an_error_naming_it_never_a_silent_loss(
    isolated_settings: Settings,
) -> None:
    config = producer_config(
        isolated_settings.kafka, **{"message.timeout.ms": 3000, "allow.auto.create.topics": False}
    )
    producer = CheckedProducer(config, flush_timeout_s=10, hint="create it with loopline up")
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(DeliveryError, match=rf"{missing}.*create it with loopline up"):
        producer.send_and_wait(missing, b"x")
