"""Reading one Kafka partition from an explicit offset (confluent-kafka).

The dataflow owns its offsets (they live in its recovery snapshots next to the
state they produced), so the consumer is assigned a partition and an offset,
never subscribed through a group and never committing.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from loopline.contracts.errors import StackError
from loopline.streams.decoding import SourceRecord

# Errors after which reading this partition cannot go on.
_FATAL = {
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.OFFSET_OUT_OF_RANGE,
}

START_POSITIONS = {"beginning": OFFSET_BEGINNING, "end": OFFSET_END}


def list_partitions(config: dict[str, Any], topic: str, timeout_s: float = 30.0) -> list[int]:
    """The partition ids of ``topic``; an error when it does not exist."""
    admin = AdminClient({"bootstrap.servers": config["bootstrap.servers"]})
    try:
        meta = admin.list_topics(topic, timeout=timeout_s)
    except KafkaException as e:
        raise StackError(f"cannot list partitions of {topic}: {e}") from e
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None or not tmeta.partitions:
        why = tmeta.error if tmeta is not None else "no metadata"
        raise StackError(f"topic {topic} is not available: {why}")
    return sorted(tmeta.partitions)


class PartitionReader:
    """Batches of :class:`SourceRecord` from one partition, tracking the next offset."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        partition: int,
        start_offset: int,
        *,
        batch_size: int = 1000,
    ) -> None:
        conf = dict(config)
        # EOF markers tell a draining reader when it has caught up.
        conf["enable.partition.eof"] = True
        self._consumer = Consumer(conf)
        if start_offset == OFFSET_END:
            # Resolved now: a snapshot taken before the first message must not
            # say "the end" (on resume that would skip what arrived meanwhile).
            try:
                _low, start_offset = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=30
                )
            except KafkaException as e:
                raise StackError(f"cannot find the end of {topic}[{partition}]: {e}") from e
        self._consumer.assign([TopicPartition(topic, partition, start_offset)])
        self.topic = topic
        self.partition = partition
        # Next offset to read; negative (a logical start) until the first message.
        self.next_offset = start_offset
        self.batch_size = batch_size
        self.at_end = False
        self._tp = TopicPartition(topic, partition)

    def read(self, timeout_s: float = 0.0) -> list[SourceRecord]:
        """Up to ``batch_size`` records; ``[]`` when none arrived within ``timeout_s``."""
        msgs = self._consumer.consume(self.batch_size, timeout_s)
        out: list[SourceRecord] = []
        append = out.append
        topic, partition = self.topic, self.partition
        at_end = self.at_end
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                    continue
                if err.code() in _FATAL or err.fatal():
                    raise StackError(f"reading {topic}[{partition}]: {err}")
                # Transient (broker restart, network): librdkafka retries itself.
                continue
            ts = msg.timestamp()[1]
            append(SourceRecord(topic, partition, msg.offset(), msg.key(), msg.value(), ts))
            at_end = False
        self.at_end = at_end
        if out:
            self.next_offset = out[-1].offset + 1
        return out

    def lag(self) -> int | None:
        """Messages behind the partition's end, from cached fetch metadata (no network)."""
        if self.next_offset < 0:
            return None
        try:
            _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except (KafkaException, RuntimeError):  # no metadata yet: unknown, not an error
            return None
        if high < 0:
            return None
        return max(high - self.next_offset, 0)

    def close(self) -> None:
        self._consumer.close()
