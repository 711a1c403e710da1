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
from typing import Any

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
