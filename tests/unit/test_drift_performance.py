"""PerformanceMonitor: rolling AUC and precision at the alert threshold with floors."""

from __future__ import annotations

import math
import pickle
import random

from loopline.streams.drift.performance import Breach, PerformanceMonitor


def examples(seed: int, segments: list[tuple[int, float]], positives: float = 0.1) -> list:
    """(label, score) pairs; a segment's quality separates positives' scores."""
    rng = random.Random(seed)
    out = []
    for n, quality in segments:
        for _ in range(n):
            label = 1 if rng.random() < positives else 0
            out.append((label, min(1.0, max(0.0, rng.gauss(0.2 + quality * label, 0.15)))))
    return out


def run(monitor: PerformanceMonitor, data: list) -> list[tuple[int, Breach]]:
    return [(i, b) for i, (y, p) in enumerate(data) for b in monitor.update(y, p)]


def test_a_good_model_stays_above_the_floor() -> None:
    monitor = PerformanceMonitor(window=1000, every=50)
    assert run(monitor, examples(1, [(20_000, 0.5)])) == []
    assert monitor.auc > 0.9


def test_an_auc_drop_below_the_floor_is_one_confirmed_breach() -> None:
    monitor = PerformanceMonitor(window=1000, every=50, persist=3, cooldown=100_000)
    found = run(monitor, examples(2, [(3000, 0.5), (5000, 0.05)]))
    assert len(found) == 1
    at, breach = found[0]
    assert 3000 < at < 4000
    assert breach.metric == "auc" and breach.after < 0.8 < breach.before
    assert breach.evaluations_below == 3 and breach.window == 1000


def test_one_evaluation_below_the_floor_is_not_enough() -> None:
    monitor = PerformanceMonitor(window=200, every=10, persist=1000)
    assert run(monitor, examples(3, [(1000, 0.5), (3000, 0.0)])) == []
    assert monitor.auc < 0.8


def test_no_auc_without_enough_positives() -> None:
    monitor = PerformanceMonitor(window=500, every=10, min_positives=20)
    assert run(monitor, examples(4, [(5000, 0.0)], positives=0.01)) == []
    assert math.isnan(monitor.auc)


def test_a_precision_floor_breach_is_reported() -> None:
    monitor = PerformanceMonitor(
        window=1000, every=50, auc_floor=0.0, precision_floor=0.5, cooldown=100_000
    )
    # Quality 0.5 puts positives around 0.7: precise alerts. Then negatives drift
    # up (scores near 0.55) and most alerts are false.
    good = examples(5, [(3000, 0.5)])
    rng = random.Random(6)
    bad = [(y, p if y else min(1.0, rng.gauss(0.55, 0.1))) for y, p in examples(7, [(3000, 0.5)])]
    found = run(monitor, good + bad)
    assert [b.metric for _, b in found] == ["precision"]
    assert found[0][1].after < 0.5 <= found[0][1].before


def test_pickling_mid_stream_changes_nothing() -> None:
    data = examples(8, [(3000, 0.5), (5000, 0.05)])
    expected = run(PerformanceMonitor(window=1000, every=50), data)
    assert expected
    first = PerformanceMonitor(window=1000, every=50)
    got = run(first, data[:3300])
    restored = pickle.loads(pickle.dumps(first))
    got += [(i + 3300, b) for i, b in run(restored, data[3300:])]
    assert got == expected
