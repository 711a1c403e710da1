"""The Bytewax sink every flow sends its dead letters through.

Unlike Bytewax's stock ``KafkaSink``, which registers no delivery callback,
a batch returns only once the broker has acknowledged every letter; a failure
raises, so the flow resumes from its last snapshot and loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from loopline.contracts.schemas import DeadLetter
from loopline.streams.common.dead_letters import DeadLetterProducer

Counter = Callable[[list[DeadLetter]], None]


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, producer: dict[str, Any], topic: str, on_sent: Counter | None) -> None:
        self._producer = DeadLetterProducer(producer, topic)
        self._on_sent = on_sent

    def write_batch(self, items: list[DeadLetter]) -> None:
        self._producer.send(items)  # raises unless every letter is acknowledged
        if self._on_sent is not None:
            self._on_sent(items)

    def close(self) -> None:
        self._producer.close()


class DeadLetterSink(DynamicSink[DeadLetter]):
    """Dead letters to ``topic``; ``on_sent`` sees each acknowledged batch (for metrics)."""

    def __init__(
        self, producer: dict[str, Any], topic: str, on_sent: Counter | None = None
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._on_sent = on_sent

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(self._producer, self._topic, self._on_sent)
