"""Rolling model quality on labeled data, against configured floors.

AUC (River's ``RollingROCAUC``) and precision at the alert threshold over the
last ``window`` labeled examples, evaluated every ``every`` examples once the
window is full and holds ``min_positives`` of each class (and, for
precision, that many alerts). A floor breach is confirmed only when
``persist`` evaluations in a row are below it; then that metric is quiet for
``cooldown`` examples.

>>> import random
>>> rng = random.Random(1)
>>> monitor = PerformanceMonitor(window=1000, auc_floor=0.8, every=50)
>>> def example(quality):
...     label = 1 if rng.random() < 0.1 else 0
...     return label, min(1.0, max(0.0, rng.gauss(0.2 + quality * label, 0.15)))
>>> for i in range(6000):
...     for breach in monitor.update(*example(0.5 if i < 3000 else 0.1)):
...         print(f"{i}: {breach.metric} {breach.before:.2f} -> {breach.after:.2f}")
3749: auc 0.96 -> 0.77
5749: auc 0.96 -> 0.70
>>> round(monitor.auc, 2)
0.7
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from river import metrics

from loopline.contracts.errors import ConfigError


@dataclass(frozen=True)
class Breach:
    """A confirmed floor breach: ``before`` is the mean of the healthy evaluations."""

    metric: str  # "auc" | "precision" | "rmse" (a ceiling: floor holds it)
    before: float
    after: float
    floor: float
    window: int
    positives: int
    evaluations_below: int
    samples: int

    def evidence(self) -> dict[str, float | int]:
        """The breach for a drift event's evidence."""
        if self.metric == "rmse":  # a ceiling, crossed from below (streams/drift/regression.py)
            return {
                "ceiling": self.floor,
                "evaluations_above": self.evaluations_below,
                "labeled_samples": self.samples,
            }
        return {
            "floor": self.floor,
            "positives_in_window": self.positives,
            "evaluations_below": self.evaluations_below,
            "labeled_samples": self.samples,
        }


class PerformanceMonitor:
    """Rolling AUC and precision at the alert threshold, with floors.

    Parameters
    ----------
    window
        Labeled examples the rolling metrics cover.
    auc_floor, precision_floor
        Floors; 0 disables a metric's alarm.
    threshold
        Score at or above which the model raises an alert.
    every
        Examples between evaluations.
    persist
        Evaluations in a row below a floor before a breach counts.
    min_positives
        Positives and negatives (and alerts, for precision) a window needs.
    cooldown
        Examples after a breach during which that metric raises no new one.
    """

    def __init__(
        self,
        window: int = 2000,
        auc_floor: float = 0.80,
        *,
        precision_floor: float = 0.0,
        threshold: float = 0.5,
        every: int = 100,
        persist: int = 3,
        min_positives: int = 20,
        cooldown: int = 2000,
    ) -> None:
        if window < 2 or every < 1 or persist < 1:
            raise ConfigError("drift.performance_window must be >= 2, every and persist >= 1")
        self.window = window
        self.auc_floor = auc_floor
        self.precision_floor = precision_floor
        self.threshold = threshold
        self.every = every
        self.persist = persist
        self.min_positives = min_positives
        self.cooldown = cooldown
        self.n = 0
        self.auc = math.nan
        self.precision = math.nan
        self.positives = 0
        self.alerts = 0
        self.true_alerts = 0
        self._roc = metrics.RollingROCAUC(window_size=window)
        # One small int per example: bit 0 = label, bit 1 = alerted.
        self._recent: deque[int] = deque()
        self._below = {"auc": 0, "precision": 0}
        # Sum and count of evaluations at or above the floor: the baseline.
        self._healthy = {"auc": [0.0, 0], "precision": [0.0, 0]}
        self._quiet_until = {"auc": 0, "precision": 0}

    def update(self, label: int, score: float) -> list[Breach]:
        """Add one labeled example; return the floor breaches it confirms."""
        self.n += 1
        alerted = score >= self.threshold
        positive = label == 1
        self._roc.update(positive, score)
        recent = self._recent
        recent.append(positive | (alerted << 1))
        self.positives += positive
        self.alerts += alerted
        self.true_alerts += positive and alerted
        if len(recent) > self.window:
            old = recent.popleft()
            self.positives -= old & 1
            self.alerts -= old >> 1
            self.true_alerts -= old == 3
        if self.n % self.every or self.n < self.window:
            return []
        return self._evaluate()

    def _evaluate(self) -> list[Breach]:
        negatives = len(self._recent) - self.positives
        breaches = []
        if min(self.positives, negatives) >= self.min_positives:
            self.auc = self._roc.get()
            breach = self._judge("auc", self.auc, self.auc_floor)
            if breach is not None:
                breaches.append(breach)
        if self.alerts >= self.min_positives:
            self.precision = self.true_alerts / self.alerts
            breach = self._judge("precision", self.precision, self.precision_floor)
            if breach is not None:
                breaches.append(breach)
        return breaches

    def _judge(self, metric: str, value: float, floor: float) -> Breach | None:
        if floor <= 0.0:
            return None
        if value >= floor:
            self._below[metric] = 0
            healthy = self._healthy[metric]
            healthy[0] += value
            healthy[1] += 1
            return None
        self._below[metric] += 1
        if self._below[metric] < self.persist or self.n < self._quiet_until[metric]:
            return None
        below = self._below[metric]
        self._below[metric] = 0
        self._quiet_until[metric] = self.n + self.cooldown
        total, count = self._healthy[metric]
        return Breach(
            metric=metric,
            before=total / count if count else floor,
            after=value,
            floor=floor,
            window=len(self._recent),
            positives=self.positives,
            evaluations_below=below,
            samples=self.n,
        )
