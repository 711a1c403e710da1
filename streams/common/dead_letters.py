"""Dead letters to Kafka, with every delivery checked.

Each batch is produced through a :class:`CheckedProducer` and flushed; any
failure raises :class:`DeliveryError`, which stops the flow before its next
snapshot: on restart the batch is read and dead-lettered again. Dead letters
are therefore at least once; ``(source_topic, partition, offset)`` identifies
duplicates.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from loopline.contracts.schemas import DeadLetter, encode
from loopline.kafka.checked_producer import CheckedProducer


class DeadLetterProducer:
    """Produces :class:`DeadLetter` records to one topic and waits for the acks."""

    def __init__(self, config: dict[str, Any], topic: str, *, flush_timeout_s: float = 30.0):
        self._producer = CheckedProducer(
            config,
            flush_timeout_s=flush_timeout_s,
            hint=f"dead letters to {topic}: check the broker and that the topic exists",
        )
        self._topic = topic

    def send(self, letters: Iterable[DeadLetter]) -> int:
        """Produce and wait until every letter is acknowledged; returns how many."""
        n = 0
        for letter in letters:
            key = base64.b64decode(letter.key_b64) if letter.key_b64 else None
            self._producer.send(self._topic, encode(letter), key)
            n += 1
        if n:
            self._producer.flush()
        return n

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()
