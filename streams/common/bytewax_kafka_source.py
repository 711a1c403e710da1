"""The Bytewax side of reading Kafka, shared by every flow's source.

:class:`KafkaSourcePartition` owns one partition's reader and pacing (lag,
idle back-off, drain); a flow's subclass only turns records into its items
and says what its snapshot holds. :class:`StreamsSource` names partitions
``stream:number`` across several topics (the labels and drift flows).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from datetime import datetime
from typing import Any, Generic, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from loopline.streams.common.kafka_io import PartitionPacing, PartitionReader, list_partitions
from loopline.streams.common.records import SourceRecord

ItemT = TypeVar("ItemT")
StateT = TypeVar("StateT")


class KafkaSourcePartition(StatefulSourcePartition[ItemT, StateT], Generic[ItemT, StateT]):
    """One Kafka partition, read in batches from an explicit offset."""

    def __init__(
        self,
        consumer: dict[str, Any],
        topic: str,
        partition: int,
        offset: int,
        *,
        batch_size: int,
        lag_gauge: Any,
        drain_idle_s: float | None,
        min_wait_s: float,
        max_wait_s: float,
    ) -> None:
        self.reader = PartitionReader(consumer, topic, partition, offset, batch_size=batch_size)
        self.pacing = PartitionPacing(
            self.reader,
            lag_gauge,
            drain_idle_s=drain_idle_s,
            min_wait_s=min_wait_s,
            max_wait_s=max_wait_s,
        )

    @abstractmethod
    def decode(self, records: list[SourceRecord], now_ms: int) -> list[ItemT]:
        """The items of a non-empty poll."""

    def progress(self, now_ms: int) -> tuple[list[ItemT], bool]:
        """Items to send after every poll, and whether a draining run may stop here.

        A source whose downstream must hear that the partition is done (a
        watermark) holds the drain until it has said so.
        """
        return [], True

    def next_batch(self) -> list[ItemT]:
        records = self.reader.read()
        now = time.monotonic()
        now_ms = int(time.time() * 1000)
        self.pacing.after_read(bool(records), now)
        items = self.decode(records, now_ms) if records else []
        reports, ready = self.progress(now_ms)
        items.extend(reports)
        if not records and self.pacing.drained(now, ready=ready) and not items:
            raise StopIteration
        return items

    def next_awake(self) -> datetime | None:
        return self.pacing.next_awake()

    def close(self) -> None:
        self.reader.close()


class StreamsSource(FixedPartitionedSource[ItemT, StateT], Generic[ItemT, StateT]):
    """Every partition of several topics, named ``stream:partition``."""

    def __init__(self, consumer: dict[str, Any], topics: dict[str, str]) -> None:
        self._consumer = consumer
        self._topics = topics  # stream -> topic

    def list_parts(self) -> list[str]:
        return [
            f"{stream}:{p}"
            for stream, topic in self._topics.items()
            for p in list_partitions(self._consumer, topic)
        ]

    def build_part(
        self, step_id: str, for_part: str, resume_state: StateT | None
    ) -> KafkaSourcePartition[ItemT, StateT]:
        stream, _, partition = for_part.partition(":")
        return self.build_stream_part(stream, int(partition), resume_state)

    @abstractmethod
    def build_stream_part(
        self, stream: str, partition: int, resume_state: StateT | None
    ) -> KafkaSourcePartition[ItemT, StateT]:
        """The source partition of ``partition`` of ``stream``'s topic."""
