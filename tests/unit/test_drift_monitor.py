"""DriftMonitor: the state a dataflow keeps per model, fed decoded payloads."""

from __future__ import annotations

import pickle
import random
from dataclasses import replace

import pytest

from loopline.contracts.errors import ConfigError, SchemaError
from loopline.contracts.schemas import DriftEvent, LabeledExample, PredictionLog, decode, encode
from loopline.contracts.settings import DriftSettings
from loopline.streams.drift import DriftMonitor

FEATURES = [f"f{i}" for i in range(20)]
T0 = 1_700_000_000_000


def prediction(i: int, features: list[float], score: float, version: str = "v1") -> PredictionLog:
    return PredictionLog(
        request_id=f"r{i}",
        model_name="fraud",
        model_version=version,
        feature_set="fraud",
        fingerprint="fp1",
        entities={"card": f"c{i % 97}"},
        features=features,
        score=score,
        event_time=T0 + i,
        served_at_ms=T0 + i,
    )


def labeled(i: int, label: int, score: float, version: str = "v1") -> LabeledExample:
    return LabeledExample(
        request_id=f"r{i}",
        event_id=f"e{i}",
        model_name="fraud",
        model_version=version,
        fingerprint="fp1",
        entities={},
        features=[0.0] * len(FEATURES),
        score=score,
        label=label,
        event_time=T0 + i,
        labeled_at_ms=T0 + 10_000 + i,
    )


def traffic(seed: int, n: int, shift_at: int | None = None, shifted: int = 3) -> list:
    """Predictions over 20 features (counts, amounts, ratios); feature ``shifted`` moves."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        moved = shift_at is not None and i >= shift_at
        row = []
        for j in range(len(FEATURES)):
            if j % 3 == 0:
                x = float(rng.randint(0, 5))
            elif j % 3 == 1:
                x = rng.lognormvariate(3.0, 1.0)
            else:
                x = rng.random()
            if moved and j == shifted:
                x = x * 1.8 + 2.0
            row.append(x)
        out.append(prediction(i, row, min(1.0, rng.betavariate(1, 12))))
    return out


def labels(seed: int, n: int, drift_at: int | None = None) -> list[LabeledExample]:
    """Labeled examples; after ``drift_at`` the model misses most frauds."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = 1 if rng.random() < 0.2 else 0
        good = drift_at is None or i < drift_at
        mean = (0.8 if good else 0.35) if y else 0.2
        out.append(labeled(i, y, min(1.0, max(0.0, rng.gauss(mean, 0.15)))))
    return out


def feed(monitor: DriftMonitor, items: list) -> list[DriftEvent]:
    events = []
    for item in items:
        if isinstance(item, PredictionLog):
            events += monitor.update_prediction(item)
        else:
            events += monitor.update_labeled(item)
    return events


def test_stable_traffic_raises_no_alarm() -> None:
    monitor = DriftMonitor("fraud", FEATURES)
    assert feed(monitor, traffic(1, 30_000)) == []
    assert feed(monitor, labels(2, 20_000)) == []
    stats = {(s.kind, s.feature): s for s in monitor.stats()}
    assert len(stats) == len(FEATURES) + 4
    assert 0.1 < stats[("data", "f1")].value < 0.3  # outside the 10-90 % band
    assert stats[("performance", "auc")].value > 0.9


def test_a_shifted_feature_is_reported_as_data_drift() -> None:
    monitor = DriftMonitor("fraud", FEATURES)
    events = feed(monitor, traffic(3, 12_000, shift_at=6000, shifted=4))
    assert [(e.kind, e.feature) for e in events] == [("data", "f4")]
    event = events[0]
    assert event.statistic_after > event.statistic_before
    assert event.model_version == "v1" and event.severity in ("warning", "critical")
    assert event.detector == "adwin-band(q0.1,q0.9)"
    assert T0 + 6000 < event.time_ms < T0 + 9000
    assert event.window_after >= DriftSettings().data_min_persist
    assert {"reference_band", "effect_h", "change_at_sample"} <= set(event.evidence)
    assert decode(DriftEvent, encode(event)) == event


def test_a_concept_drift_raises_concept_and_performance_alarms() -> None:
    monitor = DriftMonitor("fraud", FEATURES, DriftSettings(performance_every=50))
    events = feed(monitor, labels(4, 12_000, drift_at=5000))
    kinds = [(e.kind, e.feature) for e in events]
    assert ("concept", "error") in kinds and ("performance", "auc") in kinds
    concept = next(e for e in events if e.kind == "concept")
    assert concept.statistic_after > concept.statistic_before + 0.05
    assert concept.time_ms < T0 + 10_000 + 5000 + 600
    assert concept.severity == "critical"
    perf = next(e for e in events if e.kind == "performance")
    assert perf.statistic_after < 0.8 < perf.statistic_before
    assert perf.severity == "critical" and perf.evidence["floor"] == 0.8
    for event in events:
        assert decode(DriftEvent, encode(event)) == event


def test_event_ids_are_deterministic_and_distinct() -> None:
    items = traffic(5, 12_000, shift_at=6000) + labels(6, 12_000, drift_at=5000)
    first = feed(DriftMonitor("fraud", FEATURES), items)
    second = feed(DriftMonitor("fraud", FEATURES), items)
    assert first == second and len(first) >= 2
    assert len({e.id for e in first}) == len(first)


def test_pickling_mid_stream_changes_nothing() -> None:
    items = traffic(7, 12_000, shift_at=6000) + labels(8, 12_000, drift_at=5000)
    expected = feed(DriftMonitor("fraud", FEATURES), items)
    assert len(expected) >= 2
    monitor = DriftMonitor("fraud", FEATURES)
    got = []
    for start in range(0, len(items), 5000):
        got += feed(monitor, items[start : start + 5000])
        monitor = pickle.loads(pickle.dumps(monitor))
    assert got == expected


def test_a_new_model_version_starts_its_own_detectors() -> None:
    monitor = DriftMonitor("fraud", FEATURES)
    feed(monitor, labels(9, 3000))
    assert monitor._error.n == 3000
    first = traffic(10, 10)
    feed(monitor, [replace(p, model_version="v2") for p in first])
    assert monitor.model_version == "v2" and monitor._error.n == 0
    # Labels for the old model are skipped; the data detectors kept going.
    assert feed(monitor, labels(11, 100)) == [] and monitor._error.n == 0
    assert monitor._features[0].n == 10


def test_a_rollback_is_followed_only_when_it_lasts() -> None:
    monitor = DriftMonitor("fraud", FEATURES)
    logs = traffic(12, 400)
    feed(monitor, logs[:10])
    feed(monitor, [replace(p, model_version="v2") for p in logs[10:20]])
    # A straggler from the old version (a swap across processes) changes nothing ...
    feed(monitor, logs[20:25])
    assert monitor.model_version == "v2"
    feed(monitor, [replace(p, model_version="v2") for p in logs[25:30]])
    # ... but a hundred in a row is a rollback.
    feed(monitor, logs[30:200])
    assert monitor.model_version == "v1"


def test_other_arms_are_skipped() -> None:
    monitor = DriftMonitor("fraud", FEATURES)
    feed(monitor, [replace(p, arm="shadow") for p in traffic(13, 50)])
    feed(monitor, [replace(e, arm="shadow") for e in labels(14, 50)])
    assert monitor.n_skipped == 100 and monitor.n_predictions == 0 and monitor.n_labeled == 0


def test_a_vector_of_the_wrong_length_is_a_schema_error() -> None:
    monitor = DriftMonitor("fraud", FEATURES)
    with pytest.raises(SchemaError) as err:
        monitor.update_prediction(prediction(0, [1.0, 2.0], 0.1))
    assert err.value.field == "features"
    assert monitor.n_predictions == 0


def test_absolute_error_mode_and_feature_subsampling() -> None:
    settings = DriftSettings(error_mode="absolute", data_sample_every=4)
    monitor = DriftMonitor("fraud", FEATURES, settings)
    feed(monitor, traffic(15, 400))
    assert monitor._features[0].n == 100
    events = feed(monitor, labels(16, 12_000, drift_at=5000))
    concept = [e for e in events if e.kind == "concept"]
    assert concept and concept[0].detector == "adwin(absolute)"
    with pytest.raises(ConfigError):
        DriftMonitor("fraud", FEATURES, DriftSettings(error_mode="squared"))
