"""Reading one Kafka partition from an explicit offset (confluent-kafka).

The dataflow owns its offsets (they live in its recovery snapshots next to the
state they produced), so the consumer is assigned a partition and an offset,
never subscribed through a group and never committing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
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
from loopline.kafka.errors import unreachable
from loopline.streams.common.records import SourceRecord

# Errors after which reading this partition cannot go on.
_FATAL = {
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.OFFSET_OUT_OF_RANGE,
}

START_POSITIONS = {"beginning": OFFSET_BEGINNING, "end": OFFSET_END}

# How long a flow starting up waits for an unreachable broker (a broker restart
# takes 5-60 s on a small machine), and how often it asks again.
BROKER_WAIT_S = 120.0
RETRY_S = 0.5
_CONNECTION_KEYS = ("bootstrap.servers", "security.", "ssl.", "sasl.")


def list_partitions(
    config: dict[str, Any], topic: str, timeout_s: float = BROKER_WAIT_S
) -> list[int]:
    """The partition ids of ``topic``; an error when it does not exist.

    A broker that does not answer (down, restarting) is retried until
    ``timeout_s``: a flow started while its broker restarts waits for it
    instead of dying at once.
    """
    # The admin connection needs the consumer's address and security, nothing else.
    admin = AdminClient({k: v for k, v in config.items() if k.startswith(_CONNECTION_KEYS)})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            meta = admin.list_topics(topic, timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException as e:
            if unreachable(e) and time.monotonic() < deadline:
                time.sleep(RETRY_S)
                continue
            raise StackError(
                f"cannot list partitions of {topic} within {timeout_s:.0f} s: {e}; "
                "check that the broker (kafka.bootstrap_servers) is up"
            ) from e
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            why = tmeta.error if tmeta is not None else "no metadata"
            # A restarted broker may answer before it has loaded every partition.
            loading = (
                tmeta is not None
                and tmeta.error is not None
                and tmeta.error.code() == (KafkaError.LEADER_NOT_AVAILABLE)
            )
            if loading and time.monotonic() < deadline:
                time.sleep(RETRY_S)
                continue
            raise StackError(f"topic {topic} is not available: {why}")
        return sorted(tmeta.partitions)


# What one reader's consumer may fetch ahead of the flow. librdkafka's defaults
# (100,000 messages, 64 MiB per consumer) let each partition's reader buffer
# 64 MiB while the flow works through a backlog: RSS grew by ~230 MiB with 4
# partitions (benchmarks/chaos.py --scenario backlog). A few batches ahead keep
# the flow fed; the rest waits on the broker, where it is durable anyway.
PREFETCH_KBYTES = 8192
PREFETCH_BATCHES = 10


def bounded_prefetch(config: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """``config`` with the consumer's read-ahead bounded (explicit settings win).

    >>> conf = bounded_prefetch({"bootstrap.servers": "b:9092"}, batch_size=1000)
    >>> conf["queued.min.messages"], conf["queued.max.messages.kbytes"]
    (10000, 8192)
    >>> bounded_prefetch({"queued.max.messages.kbytes": 65536}, 1000)["queued.max.messages.kbytes"]
    65536
    """
    conf = dict(config)
    conf.setdefault("queued.min.messages", max(1, batch_size) * PREFETCH_BATCHES)
    conf.setdefault("queued.max.messages.kbytes", PREFETCH_KBYTES)
    return conf


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
        conf = bounded_prefetch(config, batch_size)
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


class PartitionPacing:
    """Lag reporting, idle back-off and drain detection every partition source shares.

    A source calls :meth:`after_read` after each read, asks :meth:`drained`
    whether a draining run (``drain_idle_s``) may stop, and hands
    :meth:`next_awake` to the engine so an idle partition is not spun on.
    """

    def __init__(
        self,
        reader: PartitionReader,
        lag_gauge: Any,
        *,
        drain_idle_s: float | None,
        min_wait_s: float,
        max_wait_s: float,
        lag_every_s: float = 1.0,
    ) -> None:
        self.reader = reader
        self.lag_gauge = lag_gauge
        self.drain_idle_s = drain_idle_s
        self.min_wait_s = min_wait_s
        self.max_wait_s = max_wait_s
        self.lag_every_s = lag_every_s
        self.idle_wait_s = 0.0
        self._idle_since: float | None = None
        self._next_lag = 0.0

    def after_read(self, got_records: bool, now: float) -> None:
        """Report lag on its period; back off exponentially while nothing arrives."""
        if now >= self._next_lag:
            self._next_lag = now + self.lag_every_s
            lag = self.reader.lag()
            if lag is not None:
                self.lag_gauge.set(lag)
        if got_records:
            self.idle_wait_s = 0.0
            self._idle_since = None
        else:
            self.idle_wait_s = min(max(self.idle_wait_s * 2, self.min_wait_s), self.max_wait_s)

    def drained(self, now: float, ready: bool = True) -> bool:
        """True once a draining source has sat at the end, ``ready``, for ``drain_idle_s``."""
        if self.drain_idle_s is None or not self.reader.at_end or not ready:
            return False
        if self._idle_since is None:
            self._idle_since = now
            return False
        return now - self._idle_since >= self.drain_idle_s

    def next_awake(self) -> datetime | None:
        if not self.idle_wait_s:
            return None
        return datetime.now(UTC) + timedelta(seconds=self.idle_wait_s)
