"""Paces a repo's simulation onto Kafka: each event to its source's topic, outcomes after.

Event time maps to wall time through ``speed`` (1: real time, 10: ten times
faster, 0: as fast as the broker takes it). Every delivery is checked: a
failed one raises :class:`DeliveryError` (at once when the callback has
reported it, else at the final flush), never disappears.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from confluent_kafka import KafkaError, Producer
from confluent_kafka import Message as KafkaMessage

from loopline.contracts.errors import DeliveryError
from loopline.simulation.api import SimEvent
from loopline.simulation.timeline import Message, Pacer, Routes, SimulationReport, timeline

PROGRESS_EVERY_S = 5.0


class Sink(Protocol):
    """Where messages go: a :class:`CheckedProducer`, or a list in tests."""

    def send(self, topic: str, key: str, value: bytes) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


class CheckedProducer:
    """A confluent producer that records failed deliveries and refuses to lose them."""

    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self.failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err}")

    def send(self, topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key.encode(), on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)  # local queue full: wait for deliveries
        self._producer.poll(0)
        if self.failures:
            raise DeliveryError(
                f"{len(self.failures)} deliveries failed: {self.failures[0]}; check the broker "
                "address (kafka.bootstrap_servers) and that the topics exist (loopline up)"
            )

    def flush(self, timeout_s: float = 30.0) -> None:
        left = self._producer.flush(timeout_s)
        if left or self.failures:
            raise DeliveryError(
                f"{left} message(s) undelivered after {timeout_s:.0f} s, "
                f"{len(self.failures)} failed: {self.failures[:3]}; check the broker"
            )


def produce_simulation(
    events: Iterable[SimEvent],
    routes: Routes,
    sink: Sink,
    *,
    start_ms: int,
    speed: float = 1.0,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SimulationReport:
    """Send the whole simulation; returns what was sent (all of it acknowledged)."""
    pacer = Pacer(start_ms, speed, clock())
    report = SimulationReport()
    next_progress = pacer.wall0_s + PROGRESS_EVERY_S
    m: Message
    for m in timeline(events, routes):
        wait = pacer.wait_s(m.time_ms, clock())
        if wait > 0:
            sleep(wait)
        sink.send(m.topic, m.key, m.value)
        report.count(m)
        if progress is not None and clock() >= next_progress:
            next_progress += PROGRESS_EVERY_S
            progress(report.progress(m.time_ms, start_ms))
    sink.flush()
    return report
