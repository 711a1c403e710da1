"""RateShiftDetector: ADWIN with warm-up, debounce, confirmation and cooldown."""

from __future__ import annotations

import pickle
import random

import pytest
from drift_events import shifts

from loopline.contracts.errors import ConfigError
from loopline.streams.drift.rate_shift import RateShiftDetector


def bernoulli(seed: int, rates: list[tuple[int, float]]) -> list[float]:
    """Values 0/1; ``rates`` lists (samples, rate) segments."""
    rng = random.Random(seed)
    return [1.0 if rng.random() < p else 0.0 for n, p in rates for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_an_abrupt_error_rise_is_confirmed_soon_with_its_levels(seed: int) -> None:
    values = bernoulli(seed, [(3000, 0.10), (3000, 0.30)])
    found = shifts(RateShiftDetector(direction="up"), values)
    assert len(found) == 1
    at, shift = found[0]
    assert 3000 <= at < 3000 + 400
    assert abs(shift.before - 0.10) < 0.03
    assert abs(shift.after - 0.30) < 0.12
    assert abs((shift.change_at - 1) - 3000) < 150  # change_at counts from 1
    assert shift.effect > 0.3
    assert shift.window_after >= 64  # confirmation needs min_persist samples
    assert shift.confirmed_at == at + 1


def test_stable_streams_raise_no_alarm() -> None:
    for seed in range(3):
        detector = RateShiftDetector(direction="both")
        assert shifts(detector, bernoulli(100 + seed, [(100_000, 0.10)])) == []
        assert detector.n_alarms == 0


def test_direction_up_ignores_a_fall_that_both_reports() -> None:
    values = bernoulli(1, [(3000, 0.30), (3000, 0.10)])
    assert shifts(RateShiftDetector(direction="up"), values) == []
    found = shifts(RateShiftDetector(direction="both"), values)
    assert len(found) == 1 and found[0][1].effect < 0


def test_nothing_is_raised_during_warmup() -> None:
    values = bernoulli(2, [(300, 0.10), (8000, 0.40)])
    late = shifts(RateShiftDetector(direction="up", warmup=2000), values)
    early = shifts(RateShiftDetector(direction="up", warmup=0), values)
    assert early and early[0][0] < 2000
    assert late == []  # after warm-up the higher level is simply the normal


def test_cooldown_holds_back_a_second_alarm() -> None:
    values = bernoulli(3, [(3000, 0.05), (1000, 0.25), (3000, 0.60)])
    quick = shifts(RateShiftDetector(direction="up", cooldown=0), values)
    slow = shifts(RateShiftDetector(direction="up", cooldown=10_000), values)
    assert len(quick) == 2
    assert len(slow) == 1 and slow[0][0] == quick[0][0]


def test_a_short_burst_is_not_confirmed() -> None:
    rng = random.Random(4)
    values = bernoulli(4, [(3000, 0.05)]) + [1.0] * 15
    values += [1.0 if rng.random() < 0.05 else 0.0 for _ in range(3000)]
    hasty = RateShiftDetector(direction="up", min_persist=1, persist_ratio=0.0)
    careful = RateShiftDetector(direction="up")
    assert len(shifts(hasty, values)) == 1
    assert shifts(careful, values) == []
    assert careful.n_detections >= 1 and careful.n_rejected >= 1


def test_pickling_mid_stream_changes_nothing() -> None:
    values = bernoulli(5, [(3000, 0.10), (3000, 0.30), (3000, 0.55)])
    whole = RateShiftDetector(direction="up", cooldown=500)
    expected = shifts(whole, values)
    assert len(expected) == 2
    for cut in (1500, 3040, 3100, 3170, 6050):
        first = RateShiftDetector(direction="up", cooldown=500)
        got = shifts(first, values[:cut])
        restored = pickle.loads(pickle.dumps(first))
        got += [(i + cut, s) for i, s in shifts(restored, values[cut:])]
        assert got == expected, f"cut at {cut}"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "sideways"},
        {"min_persist": 0},
        {"min_persist": 2048, "history": 1024},
        {"warmup": -1},
        {"delta": 0.0},
        {"clock": 0},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        RateShiftDetector(**kwargs)
