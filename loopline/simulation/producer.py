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

from loopline.simulation.api import SimEvent
from loopline.simulation.timeline import Message, Pacer, Routes, SimulationReport, timeline

PROGRESS_EVERY_S = 5.0


class Sink(Protocol):
    """Where messages go: a :class:`CheckedProducer`, or a list in tests."""

    def send(self, topic: str, value: bytes, key: str) -> None: ...

    def flush(self) -> None: ...


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
        sink.send(m.topic, m.value, m.key)
        report.count(m)
        if progress is not None and clock() >= next_progress:
            next_progress += PROGRESS_EVERY_S
            progress(report.progress(m.time_ms, start_ms))
    sink.flush()
    return report
