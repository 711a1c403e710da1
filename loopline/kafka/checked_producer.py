"""A Kafka producer that never loses a message silently.

Every message is produced with a delivery callback; a failed delivery is kept
and raised as :class:`DeliveryError` at the next :meth:`CheckedProducer.send`
that sees it or, at the latest, at :meth:`CheckedProducer.flush`, which waits
for every outstanding acknowledgement. (Bytewax's stock ``KafkaSink`` and a
bare ``Producer.produce`` drop failures on the floor.)
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from loopline.contracts.errors import DeliveryError

# How many failures a message quotes: enough to see a pattern, short enough to read.
QUOTED_FAILURES = 3


class CheckedProducer:
    """Produces to Kafka; :meth:`flush` returns only when every message was acknowledged.

    ``hint`` ends every error message: what the user should check (the broker
    address, the topic's existence, an ACL).
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        flush_timeout_s: float = 30.0,
        hint: str = "check the broker address (kafka.bootstrap_servers) and the topic",
    ) -> None:
        self.flush_timeout_s = flush_timeout_s
        self.hint = hint
        self._producer = Producer(config)
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err}")

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one message; raises if a delivery already failed. Blocks while the
        local queue is full (back pressure), never drops."""
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as e:
                raise DeliveryError(f"could not send to {topic}: {e}; {self.hint}") from e
        self._producer.poll(0)
        if self._failures:
            self._raise(0)

    def flush(self) -> None:
        """Wait for every queued message; raises :class:`DeliveryError` if any was
        refused or is still unacknowledged after ``flush_timeout_s``."""
        remaining = self._producer.flush(self.flush_timeout_s)
        if remaining or self._failures:
            self._raise(remaining)

    def send_and_wait(self, topic: str, value: bytes, key: bytes | str | None = None) -> None:
        """One message, acknowledged before this returns."""
        self.send(topic, value, key)
        self.flush()

    def close(self) -> None:
        self.flush()

    def _raise(self, remaining: int) -> None:
        failures, self._failures = self._failures, []
        unacked = ""
        if remaining:
            unacked = f", {remaining} unacknowledged after {self.flush_timeout_s:g} s"
        raise DeliveryError(
            f"{len(failures)} delivery(ies) failed{unacked}: "
            f"{'; '.join(failures[:QUOTED_FAILURES]) or 'no acknowledgement'}; {self.hint}"
        )
