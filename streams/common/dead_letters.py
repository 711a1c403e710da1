"""Dead letters to Kafka, with every delivery checked.

Bytewax's stock ``KafkaSink`` registers no delivery callback, so a failed
delivery vanishes. Here each batch is produced with a callback and flushed;
any failure raises :class:`DeliveryError`, which stops the flow before its
next snapshot: on restart the batch is read and dead-lettered again. Dead
letters are therefore at least once; ``(source_topic, partition, offset)``
identifies duplicates.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from loopline.contracts.errors import DeliveryError
from loopline.contracts.schemas import DeadLetter, encode


class DeadLetterProducer:
    """Produces :class:`DeadLetter` records to one topic and waits for the acks."""

    def __init__(self, config: dict[str, Any], topic: str, *, flush_timeout_s: float = 30.0):
        self._producer = Producer(config)
        self._topic = topic
        self._flush_timeout_s = flush_timeout_s
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err}")

    def send(self, letters: Iterable[DeadLetter]) -> int:
        """Produce and wait until every letter is acknowledged; returns how many."""
        n = 0
        for letter in letters:
            key = base64.b64decode(letter.key_b64) if letter.key_b64 else None
            while True:
                try:
                    self._producer.produce(
                        self._topic, value=encode(letter), key=key, on_delivery=self._on_delivery
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)  # local queue full: let deliveries drain
            n += 1
        if n:
            self.flush()
        return n

    def flush(self) -> None:
        remaining = self._producer.flush(self._flush_timeout_s)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeliveryError(
                f"{len(failures)} dead letter(s) failed and {remaining} unacknowledged after "
                f"{self._flush_timeout_s} s to {self._topic}: {'; '.join(failures[:3])}"
            )

    def close(self) -> None:
        self.flush()
