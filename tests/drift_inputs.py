"""Drift flow inputs: predictions whose one feature shifts, labeled examples whose
error rises, both for the fraud model (for the drift flow's tests and the dashboard's)."""

from __future__ import annotations

import random

from fraud_repo import FRAUD_FEATURES

from loopline.contracts.schemas import LabeledExample, PredictionLog
from loopline.contracts.settings import DriftSettings

FEATURES = FRAUD_FEATURES.model_features
# Windows of hundreds of inputs, not thousands: a shift at input 800 or so raises alarms.
FAST = DriftSettings(
    reference_size=500,
    warmup=200,
    data_min_persist=128,
    performance_window=500,
    performance_every=50,
)
SHIFTED = 5


def predictions(n: int, shift_at: int, seed: int = 1) -> list[PredictionLog]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        row = [rng.lognormvariate(2.0, 0.8) for _ in FEATURES]
        if i >= shift_at:
            row[SHIFTED] = row[SHIFTED] * 2.5 + 10.0
        out.append(
            PredictionLog(
                request_id=f"r{i}",
                model_name="fraud",
                model_version="1",
                feature_set="fraud",
                fingerprint="fp",
                entities={"card": f"c{i % 50}"},
                features=row,
                score=min(1.0, rng.betavariate(1, 10)),
                event_time=1_700_000_000_000 + i,
                served_at_ms=1_700_000_000_000 + i,
            )
        )
    return out


def labeled(n: int, drift_at: int, seed: int = 2) -> list[LabeledExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = 1 if rng.random() < 0.2 else 0
        mean = (0.8 if i < drift_at else 0.35) if y else 0.2
        out.append(
            LabeledExample(
                request_id=f"r{i}",
                event_id=f"e{i}",
                model_name="fraud",
                model_version="1",
                fingerprint="fp",
                entities={},
                features=[0.0] * len(FEATURES),
                score=min(1.0, max(0.0, rng.gauss(mean, 0.15))),
                label=y,
                event_time=1_700_000_000_000 + i,
                labeled_at_ms=1_700_000_100_000 + i,
            )
        )
    return out
