"""Concept drift and quality of a regression model: absolute residuals and rolling RMSE.

A regression label is any number, so the absolute residual ``|label -
prediction|`` has no fixed scale and cannot feed a [0, 1] rate detector as
is. It is watched like a feature instead: the first ``reference_size``
residuals fix a high quantile (90 % by default), and each later residual
becomes one bit, "above it?". That rate is about 10 % while the model is as
good as it was, and rises when residuals grow, whatever the target's unit.
Only the upper side counts (small residuals are good news), and alarms go up
only.

The performance check is a ceiling on the rolling RMSE (``drift.rmse_ceiling``,
in the target's unit; 0 disables it): AUC and precision are binary-only.

>>> import random
>>> rng = random.Random(11)
>>> from loopline.contracts.settings import DriftSettings
>>> detector = residual_detector(DriftSettings(reference_size=1000), {"warmup": 200})
>>> for i in range(6000):
...     found = detector.update(abs(rng.gauss(0, 1.0 if i < 3000 else 2.0)))
...     if found is not None:
...         print(f"{i}: above q0.9 {found.before:.2f} -> {found.after:.2f}")
3089: above q0.9 0.10 -> 0.52
>>> rmse = RmseMonitor(window=100, ceiling=1.5, every=10, persist=2)
>>> [b.metric for i in range(300) for b in rmse.update(0.0, 1.0 if i < 150 else 3.0)]
['rmse']
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import DriftSettings
from loopline.streams.drift.band import BandShift, BandShiftDetector
from loopline.streams.drift.performance import Breach

RMSE = "rmse"


def residual_detector(settings: DriftSettings, rate_params: dict[str, Any]) -> BandShiftDetector:
    """Rises of the absolute residual above its reference's ``band_high_quantile``."""
    params = {**rate_params, "direction": "up"}
    return BandShiftDetector(
        reference_size=settings.reference_size,
        low_quantile=0.0,
        high_quantile=settings.band_high_quantile,
        upper_only=True,
        **params,
    )


def residual_evidence(found: BandShift) -> dict[str, Any]:
    """What a residual alarm tells the person on call, in the target's unit."""
    return {
        "error_mode": "absolute",
        "task": "regression",
        "residual_threshold": found.band_high,
        "reference_mean_residual": found.reference_mean,
        "recent_mean_residual": found.recent_mean,
    }


class RmseMonitor:
    """Rolling RMSE over the last ``window`` labeled examples, against a ceiling.

    Evaluated every ``every`` examples once the window is full; a breach is
    confirmed after ``persist`` evaluations in a row above ``ceiling`` (0:
    never), then the metric is quiet for ``cooldown`` examples.
    """

    def __init__(
        self,
        window: int = 2000,
        ceiling: float = 0.0,
        *,
        every: int = 100,
        persist: int = 3,
        cooldown: int = 2000,
    ) -> None:
        if window < 2 or every < 1 or persist < 1:
            raise ConfigError("drift window must be >= 2, every and persist >= 1")
        self.window = window
        self.ceiling = ceiling
        self.every = every
        self.persist = persist
        self.cooldown = cooldown
        self.n = 0
        self.rmse = math.nan
        self._squares: deque[float] = deque(maxlen=window)
        self._above = 0
        self._quiet_until = 0
        # Sum and count of evaluations at or below the ceiling: the baseline.
        self._healthy = [0.0, 0]

    def update(self, label: float, prediction: float) -> list[Breach]:
        """Add one labeled example; return the ceiling breach it confirms, if any."""
        self.n += 1
        self._squares.append((label - prediction) ** 2)
        if self.n % self.every or self.n < self.window:
            return []
        # fsum over the window: a running sum would drift over millions of examples.
        self.rmse = math.sqrt(math.fsum(self._squares) / len(self._squares))
        breach = self._judge(self.rmse)
        return [] if breach is None else [breach]

    def _judge(self, value: float) -> Breach | None:
        if self.ceiling <= 0.0:
            return None
        if value <= self.ceiling:
            self._above = 0
            self._healthy[0] += value
            self._healthy[1] += 1
            return None
        self._above += 1
        if self._above < self.persist or self.n < self._quiet_until:
            return None
        above, self._above = self._above, 0
        self._quiet_until = self.n + self.cooldown
        total, count = self._healthy
        return Breach(
            metric=RMSE,
            before=total / count if count else self.ceiling,
            after=value,
            floor=self.ceiling,  # the bound crossed (a ceiling here)
            window=len(self._squares),
            positives=0,
            evaluations_below=above,
            samples=self.n,
        )
