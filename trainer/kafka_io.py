"""The trainer's Kafka edges: reading a topic's history, offsets by time, announcing models."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from loopline.config.kafka import consumer_config, producer_config
from loopline.contracts.errors import StackError
from loopline.contracts.schemas import DeadLetter, ModelUpdate, encode
from loopline.contracts.settings import KafkaSettings
from loopline.kafka.checked_producer import CheckedProducer
from loopline.registry.directory import model_update

# Re-exported: the trainer's modules import it from here.
__all__ = [
    "KafkaAnnouncer",
    "dead_letter",
    "delivering_producer",
    "end_offset",
    "model_update",
    "offsets_at",
    "raise_if_fatal",
    "read_history",
    "topic_partitions",
]

METADATA_TIMEOUT_S = 15.0


def topic_partitions(consumer: Consumer, topic: str) -> list[int]:
    """The partitions of ``topic``; :class:`StackError` when it is not available."""
    meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None:
        raise StackError(f"topic {topic!r} is not available: {tmeta.error if tmeta else 'missing'}")
    return sorted(tmeta.partitions)


def end_offset(consumer: Consumer, topic: str, partition: int) -> int:
    """The high watermark: the offset the next record of ``partition`` gets."""
    tp = TopicPartition(topic, partition)
    return int(consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)[1])


def offsets_at(
    consumer: Consumer, topic: str, partitions: list[int], since_ms: int
) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after ``since_ms`` (-1: none)."""
    wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
    found = consumer.offsets_for_times(wanted, timeout=METADATA_TIMEOUT_S)
    return {tp.partition: tp.offset for tp in found}


def raise_if_fatal(err: KafkaError, what: str) -> None:
    """Raise for errors a consumer cannot recover from; the caller logs the rest."""
    if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise StackError(f"{what}: {err}")


def dead_letter(msg: Message, topic: str, error: str, time_ms: int) -> DeadLetter:
    """The dead-letter record for a malformed message read from ``topic``."""
    return DeadLetter.of(
        source_topic=msg.topic() or topic,
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        reason="malformed",
        error=error,
        value=msg.value(),
        key=msg.key(),
        time_ms=time_ms,
    )


def read_history(kafka: KafkaSettings, topic: str, timeout_s: float = 120.0) -> Iterator[bytes]:
    """Every value in ``topic`` from the beginning up to its end when the read starts.

    Uses manual assignment (no group membership, nothing committed), so
    reading history never disturbs a consumer group.
    """
    consumer = Consumer(
        consumer_config(
            kafka, f"trainer-history-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
    )
    try:
        try:
            partitions = topic_partitions(consumer, topic)
        except KafkaException as e:
            raise StackError(
                f"cannot read {topic!r} from Kafka at {kafka.bootstrap_servers}: {e} "
                "(is the stack up? `loopline up`)"
            ) from e
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=METADATA_TIMEOUT_S
            )
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise StackError(
                    f"reading {topic!r} timed out; {len(ends)} partition(s) unfinished"
                )
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            part, offset = msg.partition() or 0, msg.offset() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    ends.pop(part, None)
                    continue
                raise StackError(f"reading {topic!r}: {err}")
            end = ends.get(part)
            if end is None:
                continue  # partition already read up to its end at start
            value = msg.value()
            if offset < end and value is not None:
                yield value
            if offset >= end - 1:
                ends.pop(part, None)
    finally:
        consumer.close()


def delivering_producer(kafka: KafkaSettings, timeout_s: float = 30.0) -> CheckedProducer:
    """A producer whose ``send_and_wait`` returns once the broker acknowledged the message."""
    config = producer_config(kafka, **{"message.timeout.ms": int(timeout_s * 1000)})
    return CheckedProducer(config, flush_timeout_s=timeout_s + 5)


class KafkaAnnouncer:
    """Announces model versions on the model-updates topic, keyed by model name.

    Each call waits for the broker's acknowledgement: a version that was not
    announced raises :class:`DeliveryError` instead of vanishing.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> None:
        self.topic = topic
        self._producer = delivering_producer(kafka, timeout_s)

    def announce(self, update: ModelUpdate) -> None:
        self._producer.send_and_wait(self.topic, encode(update), update.model_name)

    def close(self) -> None:
        self._producer.close()
