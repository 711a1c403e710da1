"""Turning confirmed shifts and breaches into :class:`DriftEvent` payloads.

Event ids are derived from what the alarm is about and where in the stream it
was confirmed, never from the clock: a dataflow that resumes from a snapshot
and replays its input re-emits the same ids, so consumers drop duplicates.

>>> drift_event_id("fraud", "concept", "error", "v3", 0, 4211)
'de-2d03bb16d5d01dfffe37fe4b'
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, NamedTuple

from loopline.contracts.schemas import DriftEvent
from loopline.streams.drift.performance import Breach
from loopline.streams.drift.rate_shift import Shift
from loopline.streams.drift.regression import RMSE

ID_PREFIX = "de-"


def drift_event_id(*parts: str | int) -> str:
    """Deterministic id of one alarm: model, kind, feature, version, generation, sample."""
    key = "|".join(str(p) for p in parts)
    return ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


def finite(value: float, default: float = 0.0) -> float:
    """JSON payloads carry no NaN: replace a missing statistic by ``default``.

    >>> finite(float("nan")), finite(0.5)
    (0.0, 0.5)
    """
    return value if math.isfinite(value) else default


def clean_evidence(evidence: dict[str, Any]) -> dict[str, Any]:
    """Round floats for people and drop non-finite ones (JSON has no NaN).

    >>> clean_evidence({"a": 0.123456789, "b": float("nan"), "c": [1.0, float("inf")], "d": "x"})
    {'a': 0.123457, 'c': [1.0, None], 'd': 'x'}
    """
    out: dict[str, Any] = {}
    for key, value in evidence.items():
        if isinstance(value, float):
            if math.isfinite(value):
                out[key] = round(value, 6)
        elif isinstance(value, list):
            out[key] = [
                (round(v, 6) if math.isfinite(v) else None) if isinstance(v, float) else v
                for v in value
            ]
        else:
            out[key] = value
    return out


class AlarmSource(NamedTuple):
    """Whose traffic an alarm is about (part of every event id)."""

    model_name: str
    model_version: str
    generation: int


def shift_event(
    src: AlarmSource,
    kind: str,
    feature: str,
    detector: str,
    shift: Shift,
    *,
    time_ms: int,
    severity: str,
    evidence: dict[str, Any],
    sample: int | None = None,
) -> DriftEvent:
    """The event of a confirmed shift in one monitored stream."""
    at = shift.confirmed_at if sample is None else sample
    return DriftEvent(
        id=drift_event_id(src.model_name, kind, feature, src.model_version, src.generation, at),
        time_ms=time_ms,
        kind=kind,
        detector=detector,
        feature=feature,
        statistic_before=finite(shift.before),
        statistic_after=finite(shift.after),
        window_before=shift.window_before,
        window_after=shift.window_after,
        model_version=src.model_version,
        severity=severity,
        evidence=clean_evidence(
            {
                "model_name": src.model_name,
                "effect_h": shift.effect,
                "change_at_sample": shift.change_at,
                "detected_at_sample": shift.detected_at,
                "confirmed_at_sample": shift.confirmed_at,
                "raw_detections": shift.raw_detections,
                "rejected_candidates": shift.rejected,
                **evidence,
            }
        ),
    )


def breach_event(src: AlarmSource, breach: Breach, time_ms: int) -> DriftEvent:
    """The event of a performance floor (or ceiling) breached on labeled data."""
    return DriftEvent(
        id=drift_event_id(
            src.model_name,
            "performance",
            breach.metric,
            src.model_version,
            src.generation,
            breach.samples,
        ),
        time_ms=time_ms,
        kind="performance",
        detector=f"rolling-{breach.metric}",
        feature=breach.metric,
        statistic_before=finite(breach.before),
        statistic_after=finite(breach.after),
        window_before=breach.window,
        window_after=breach.window,
        model_version=src.model_version,
        # AUC ranks every case and RMSE weighs every error; a precision drop
        # alone costs analysts' time.
        severity="critical" if breach.metric in ("auc", RMSE) else "warning",
        evidence=clean_evidence({"model_name": src.model_name, **breach.evidence()}),
    )
