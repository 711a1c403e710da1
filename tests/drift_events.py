"""Drift events as the drift flow emits them, for the tests of what consumes them, and
the shifts a detector reports over a stream, for the detectors' own tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol, TypeVar

from loopline.contracts.schemas import DriftEvent

T0 = 1_700_000_000_000

ShiftT_co = TypeVar("ShiftT_co", covariant=True)
S = TypeVar("S")


class Detector(Protocol[ShiftT_co]):
    def update(self, x: float) -> ShiftT_co | None: ...


def concept_drift(i: int, severity: str = "critical", **changes: object) -> DriftEvent:
    """Drift ``de-<i>`` of model 3's error rate (0.1 -> 0.3); ``changes`` replace any field."""
    event = DriftEvent(
        id=f"de-{i}",
        time_ms=T0 + i,
        kind="concept",
        detector="adwin(binary)",
        feature="error",
        statistic_before=0.1,
        statistic_after=0.3,
        window_before=4000,
        window_after=150,
        model_version="3",
        severity=severity,
    )
    return replace(event, **changes)  # type: ignore[arg-type]


def shifts(detector: Detector[S], values: Iterable[float]) -> list[tuple[int, S]]:
    """Feed ``values`` to ``detector``: (index, shift) for each value that raised one."""
    found = []
    for i, x in enumerate(values):
        shift = detector.update(x)
        if shift is not None:
            found.append((i, shift))
    return found
