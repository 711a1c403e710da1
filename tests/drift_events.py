"""Drift events as the drift flow emits them, for the tests of what consumes them."""

from __future__ import annotations

from dataclasses import replace

from loopline.contracts.schemas import DriftEvent

T0 = 1_700_000_000_000


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
