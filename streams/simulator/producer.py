"""Paces a simulation onto Kafka: transactions to events, outcomes to outcomes.

Event time maps to wall time through ``speed`` (1: real time, 10: ten times
faster, 0: as fast as the broker takes it). Every delivery is checked: a
failed one raises :class:`DeliveryError` at the end (or when the local queue
cannot drain), never disappears.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from loopline.contracts.errors import DeliveryError
from loopline.contracts.kafka_config import producer_config
from loopline.contracts.schemas import Outcome, encode
from loopline.contracts.settings import KafkaSettings
from loopline.contracts.topics import Topics
from loopline.streams.simulator.config import SimulatorConfig
from loopline.streams.simulator.generator import SimulatedTransaction, Simulator

_PROGRESS_EVERY_S = 5.0


@dataclass
class SimulationReport:
    transactions: int = 0
    outcomes: int = 0
    fraud: int = 0
    by_pattern: Counter[str] = field(default_factory=Counter)
    first_ms: int = 0
    last_ms: int = 0

    def describe(self, wall_s: float) -> str:
        span = (self.last_ms - self.first_ms) / 1000 if self.transactions else 0.0
        patterns = ", ".join(f"{k} {v}" for k, v in sorted(self.by_pattern.items()))
        share = self.fraud / self.transactions if self.transactions else 0.0
        return (
            f"produced {self.transactions} transactions ({self.fraud} fraud, {share:.2%}; "
            f"{patterns}) and {self.outcomes} outcomes over {span:.0f} s of event time "
            f"in {wall_s:.1f} s"
        )


class CheckedProducer:
    """A confluent producer that counts failed deliveries and refuses to lose them."""

    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self.failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err}")

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)  # local queue full: wait for deliveries
        self._producer.poll(0)
        if self.failures:
            raise DeliveryError(f"{len(self.failures)} deliveries failed: {self.failures[0]}")

    def flush(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining or self.failures:
            raise DeliveryError(
                f"{len(self.failures)} deliveries failed and {remaining} unacknowledged "
                f"after {timeout_s} s: {'; '.join(self.failures[:3])}"
            )


def produce_simulation(
    config: SimulatorConfig,
    kafka: KafkaSettings,
    topics: Topics,
    *,
    speed: float = 1.0,
    progress: Callable[[str], None] | None = None,
    producer: CheckedProducer | None = None,
) -> SimulationReport:
    """Produce the whole simulation; returns what was sent (all of it acknowledged)."""
    if speed < 0:
        raise ValueError("speed must be >= 0")
    out = producer or CheckedProducer(
        producer_config(kafka, **{"queue.buffering.max.messages": 500_000})
    )
    report = SimulationReport()
    wall0 = time.monotonic()
    next_progress = wall0 + _PROGRESS_EVERY_S
    for item in Simulator(config).timeline():
        t_ms = item.event_time if isinstance(item, Outcome) else item.transaction.event_time
        if speed:
            wait = wall0 + (t_ms - config.start_ms) / 1000.0 / speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if isinstance(item, SimulatedTransaction):
            tx = item.transaction
            out.produce(topics.events, encode(tx), tx.card_id.encode())
            report.transactions += 1
            report.fraud += item.label
            report.by_pattern[item.pattern] += 1
            report.first_ms = report.first_ms or tx.event_time
            report.last_ms = tx.event_time
        else:
            out.produce(topics.outcomes, encode(item), item.event_id.encode())
            report.outcomes += 1
        if progress is not None and time.monotonic() >= next_progress:
            next_progress += _PROGRESS_EVERY_S
            progress(
                f"simulate: {report.transactions} transactions, {report.outcomes} outcomes, "
                f"event time +{(t_ms - config.start_ms) / 1000:.0f} s"
            )
    out.flush()
    return report
