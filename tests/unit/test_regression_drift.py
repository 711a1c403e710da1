"""Drift detection for a regression model: residual concept drift, the predicted value's
band, the RMSE ceiling, and the task choosing the error mode."""

from __future__ import annotations

import pickle
import random
from dataclasses import replace

import pytest

from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import DriftEvent, LabeledExample, PredictionLog, decode, encode
from loopline.contracts.settings import DriftSettings, Settings
from loopline.streams.drift import DriftMonitor
from loopline.streams.drift.config import DriftFlowConfig
from loopline.streams.drift.regression import RmseMonitor

pytestmark = pytest.mark.unit

FEATURES = ["x"]
T0 = 1_700_000_000_000
SETTINGS = DriftSettings(reference_size=1000)


def labeled(i: int, label: float, score: float) -> LabeledExample:
    return LabeledExample(
        f"r{i}", f"e{i}", "price", "v1", "fp", {}, [0.0], score, label, T0 + i, T0 + 10_000 + i
    )


def prediction(i: int, score: float) -> PredictionLog:
    return PredictionLog(f"r{i}", "price", "v1", "fs", "fp", {}, [1.0], score, T0 + i, T0 + i)


def run(
    monitor: DriftMonitor, n: int, noise: float, *, jump_at: int | None = None, seed: int = 1
) -> list[tuple[int, DriftEvent]]:
    """Labeled examples of a price model: target ~ N(200, 50), residual sd ``noise``
    (``3 * noise`` from ``jump_at``). Returns (sample index, event) pairs."""
    rng = random.Random(seed)
    found = []
    for i in range(n):
        sd = noise * 3 if jump_at is not None and i >= jump_at else noise
        target = rng.gauss(200.0, 50.0)
        for event in monitor.update_labeled(labeled(i, target, target + rng.gauss(0.0, sd))):
            found.append((i, event))
    return found


def test_a_jump_in_absolute_residual_raises_concept_drift() -> None:
    monitor = DriftMonitor("price", FEATURES, SETTINGS, task="regression")
    events = run(monitor, 8000, noise=5.0, jump_at=4000)
    concept = [(i, e) for i, e in events if e.kind == "concept"]
    assert concept, "no concept alarm after residuals tripled"
    i, event = concept[0]
    assert 4000 <= i < 4400
    assert event.detector == "adwin-residual(q0.9)" and event.feature == "error"
    assert event.evidence["error_mode"] == "absolute"
    assert event.evidence["task"] == "regression"
    assert event.statistic_after > event.statistic_before
    # The residual threshold is in the target's unit (q90 of |N(0, 5)| is ~8.2), not [0, 1].
    assert 6.0 < event.evidence["residual_threshold"] < 11.0
    assert event.severity in ("warning", "critical")
    assert decode(DriftEvent, encode(event)) == event
    assert all(e.kind != "performance" for _, e in events)  # no AUC for regression


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stationary_residual_stream_stays_silent(seed: int) -> None:
    monitor = DriftMonitor("price", FEATURES, SETTINGS, task="regression")
    assert run(monitor, 20_000, noise=5.0, seed=seed) == []
    assert monitor.n_labeled == 20_000


def test_smaller_residuals_raise_nothing() -> None:
    monitor = DriftMonitor("price", FEATURES, SETTINGS, task="regression")
    assert run(monitor, 8000, noise=15.0, jump_at=None) == []
    better = DriftMonitor("price", FEATURES, SETTINGS, task="regression")
    rng = random.Random(4)
    events = []
    for i in range(8000):
        sd = 15.0 if i < 4000 else 3.0  # the model got better: not an alarm
        target = rng.gauss(200.0, 50.0)
        events += better.update_labeled(labeled(i, target, target + rng.gauss(0, sd)))
    assert events == []


def test_the_task_chooses_the_error_mode() -> None:
    assert DriftMonitor("m", FEATURES, SETTINGS).error_mode == "binary"
    assert DriftMonitor("m", FEATURES, SETTINGS, task="regression").error_mode == "absolute"
    absolute = replace(SETTINGS, error_mode="absolute")
    assert DriftMonitor("m", FEATURES, absolute).error_mode == "absolute"  # binary as configured
    with pytest.raises(ConfigError, match="task must be one of"):
        DriftMonitor("m", FEATURES, SETTINGS, task="ranking")


def test_prediction_drift_on_predicted_values_outside_zero_one() -> None:
    monitor = DriftMonitor("price", FEATURES, SETTINGS, task="regression")
    rng = random.Random(9)
    events = []
    for i in range(8000):
        events += monitor.update_prediction(prediction(i, rng.gauss(200 if i < 4000 else 260, 30)))
    kinds = [(e.kind, e.feature) for e in events]
    assert ("prediction", "score") in kinds
    event = next(e for e in events if e.kind == "prediction")
    low, high = event.evidence["reference_band"]
    assert 150 < low < 200 < high < 250  # learned from the values, not clipped to [0, 1]


def test_rmse_ceiling_breach_is_a_critical_performance_event() -> None:
    s = replace(SETTINGS, rmse_ceiling=8.0, performance_window=500, performance_every=50)
    monitor = DriftMonitor("price", FEATURES, s, task="regression")
    events = run(monitor, 4000, noise=5.0, jump_at=2000)
    perf = [(i, e) for i, e in events if e.kind == "performance"]
    assert len(perf) == 1
    i, event = perf[0]
    assert 2000 < i < 2500
    assert (event.feature, event.detector, event.severity) == ("rmse", "rolling-rmse", "critical")
    assert event.evidence["ceiling"] == 8.0 and event.statistic_after > 8.0
    assert 4.0 < event.statistic_before < 6.0  # the healthy RMSE, ~ the noise's sd


def test_rmse_disabled_by_default_and_in_stats() -> None:
    monitor = DriftMonitor("price", FEATURES, SETTINGS, task="regression")
    run(monitor, 3000, noise=5.0, jump_at=0)
    stats = {(st.kind, st.feature): st for st in monitor.stats()}
    assert ("performance", "auc") not in stats
    assert 4.0 < stats["performance", "rmse"].value < 16.0
    assert stats["concept", "error"].reference == pytest.approx(0.1)


def test_rmse_monitor_ceiling_zero_never_breaches() -> None:
    rmse = RmseMonitor(window=10, ceiling=0.0, every=1, persist=1)
    assert [b for i in range(100) for b in rmse.update(0.0, float(i))] == []
    assert rmse.rmse > 80


def test_the_regression_monitor_pickles_mid_stream() -> None:
    monitor = DriftMonitor("price", FEATURES, SETTINGS, task="regression")
    run(monitor, 3000, noise=5.0)
    copy = pickle.loads(pickle.dumps(monitor))
    assert copy.task == "regression"
    a = run(monitor, 3000, noise=5.0, jump_at=0, seed=7)
    b = run(copy, 3000, noise=5.0, jump_at=0, seed=7)
    assert [e.id for _, e in a] == [e.id for _, e in b] and a


def test_flow_config_takes_the_task_as_an_override() -> None:
    assert DriftFlowConfig.from_settings(Settings()).task == "binary"
    assert DriftFlowConfig.from_settings(Settings(), task="regression").task == "regression"
    with pytest.raises(ConfigError, match="drift: task must be one of"):
        DriftFlowConfig.from_settings(Settings(), task="ranking")
