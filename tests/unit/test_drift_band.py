"""BandShiftDetector: data drift as the rate of values outside a reference band."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable

import pytest
from drift_events import shifts

from loopline.contracts.errors import ConfigError
from loopline.streams.drift.band import BandShiftDetector


def stream(seed: int, before: Callable, after: Callable, change: int, total: int) -> list[float]:
    rng = random.Random(seed)
    return [before(rng) if i < change else after(rng) for i in range(total)]


def test_the_band_comes_from_the_reference_quantiles() -> None:
    detector = BandShiftDetector(reference_size=1001)
    assert detector.learning_reference and math.isnan(detector.outside_rate)
    for x in range(1001):
        detector.update(float(x))
    assert not detector.learning_reference
    assert (detector.band_low, detector.band_high) == (100.0, 900.0)
    assert detector.reference_mean == 500.0


@pytest.mark.parametrize(
    ("name", "after"),
    [
        ("location", lambda r: r.gauss(0.6, 1.0)),
        ("wider", lambda r: r.gauss(0.0, 1.6)),
        ("narrower", lambda r: r.gauss(0.0, 0.5)),
    ],
)
def test_location_and_spread_shifts_are_detected(name: str, after: Callable) -> None:
    values = stream(1, lambda r: r.gauss(0.0, 1.0), after, change=5000, total=10_000)
    found = shifts(BandShiftDetector(), values)
    assert found, f"{name} shift missed"
    at, shift = found[0]
    assert 5000 <= at < 7000, name
    assert abs(shift.before - 0.2) < 0.05
    assert shift.band_low < 0 < shift.band_high
    assert shift.evidence()["reference_band"] == [shift.band_low, shift.band_high]


def test_after_an_alarm_the_new_normal_is_learned_and_stays_quiet() -> None:
    values = stream(2, lambda r: r.gauss(10, 2), lambda r: r.gauss(14, 2), 4000, 40_000)
    detector = BandShiftDetector()
    found = shifts(detector, values)
    assert len(found) == 1
    assert found[0][1].recent_mean > found[0][1].reference_mean + 1.5
    assert 12 < detector.reference_mean < 16  # the second reference is the shifted data


def test_a_constant_feature_that_starts_moving_is_detected() -> None:
    values = [1.0] * 5000 + [1.0 if i % 3 else 2.0 for i in range(3000)]
    found = shifts(BandShiftDetector(), values)
    assert found and found[0][1].before == 0.0 and found[0][1].after > 0.2


def test_heavy_tailed_stable_data_raises_no_alarm() -> None:
    rng = random.Random(3)
    detector = BandShiftDetector()
    assert shifts(detector, [rng.lognormvariate(3, 1.2) for _ in range(150_000)]) == []


def test_pickling_while_learning_and_while_watching_changes_nothing() -> None:
    values = stream(4, lambda r: r.expovariate(1.0), lambda r: r.expovariate(0.6), 6000, 12_000)
    expected = shifts(BandShiftDetector(), values)
    assert expected
    for cut in (700, 2500, 6100, 9000):
        first = BandShiftDetector()
        got = shifts(first, values[:cut])
        restored = pickle.loads(pickle.dumps(first))
        got += [(i + cut, s) for i, s in shifts(restored, values[cut:])]
        assert got == expected, f"cut at {cut}"


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError):
        BandShiftDetector(reference_size=5)
    with pytest.raises(ConfigError):
        BandShiftDetector(low_quantile=0.9, high_quantile=0.1)
