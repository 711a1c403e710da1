"""Distribution shift of one numeric stream, as a rate ADWIN can watch cheaply.

The first ``reference_size`` values fix a reference band between two
quantiles (10 % and 90 % by default). Afterwards each value becomes one bit:
is it outside the band? On reference data that rate is about 20 %; a shifted
location pushes mass out of one side, a wider spread out of both, a narrower
spread into the band, and every one of those moves the rate. The bits feed a
:class:`RateShiftDetector`, so an update stays a few hundred nanoseconds,
where KSWIN (a Kolmogorov-Smirnov test per value) costs about 300 µs. After a
confirmed shift the band is learned again from the new data, so the new
normal raises no more alarms.

>>> import random
>>> rng = random.Random(3)
>>> detector = BandShiftDetector(reference_size=1000)
>>> for i in range(8000):
...     amount = rng.lognormvariate(3.0 if i < 4000 else 3.5, 1.0)
...     shift = detector.update(amount)
...     if shift is not None:
...         print(f"sample {i}: outside band {shift.before:.2f} -> {shift.after:.2f}")
sample 4351: outside band 0.19 -> 0.30
>>> detector.n_alarms, detector.learning_reference  # the new normal is the reference now
(1, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.streams.drift.rate_shift import RateShiftDetector, Shift


@dataclass(frozen=True)
class BandShift:
    """A confirmed shift of the outside-the-band rate, with the raw values' context."""

    shift: Shift
    band_low: float
    band_high: float
    reference_mean: float
    recent_mean: float
    samples: int

    @property
    def before(self) -> float:
        return self.shift.before

    @property
    def after(self) -> float:
        return self.shift.after

    def evidence(self) -> dict[str, Any]:
        return {
            "reference_band": [self.band_low, self.band_high],
            "reference_mean": self.reference_mean,
            "recent_mean": self.recent_mean,
        }


class BandShiftDetector:
    """Confirmed shifts of a numeric stream's distribution (any real values: the band
    comes from the reference's own quantiles, so no range such as [0, 1] is assumed).

    Parameters
    ----------
    reference_size
        Values that fix the reference band (learned again after each alarm).
    low_quantile, high_quantile
        The band's edges as quantiles of the reference values.
    recent_alpha
        Weight of a new value in the recent mean reported as evidence.
    upper_only
        Only values above the band count as outside (for magnitudes such as an
        absolute residual, whose low side says nothing: the band is then
        ``(-inf, high]`` and ``low_quantile`` is unused).
    rate_params
        Passed to :class:`RateShiftDetector` (delta, clock, warmup, ...).
    """

    # Class default: detector states pickled before this option existed are two-sided.
    upper_only = False

    def __init__(
        self,
        reference_size: int = 2000,
        low_quantile: float = 0.1,
        high_quantile: float = 0.9,
        recent_alpha: float = 1 / 64,
        upper_only: bool = False,
        **rate_params: Any,
    ) -> None:
        if reference_size < 10:
            raise ConfigError(f"drift.reference_size must be >= 10, not {reference_size}")
        if not 0.0 <= low_quantile < high_quantile <= 1.0:
            raise ConfigError(
                "drift.band_low_quantile and band_high_quantile need 0 <= low < high <= 1"
            )
        self.reference_size = reference_size
        self.low_quantile = low_quantile
        self.high_quantile = high_quantile
        self.recent_alpha = recent_alpha
        self.upper_only = upper_only
        self.rate_params = rate_params
        self.n = 0
        self.n_alarms = 0
        self.band_low = math.nan
        self.band_high = math.nan
        self.reference_mean = math.nan
        self.recent_mean = math.nan
        self._reference: list[float] | None = []
        self._rate: RateShiftDetector | None = None

    @property
    def learning_reference(self) -> bool:
        return self._rate is None

    @property
    def rate(self) -> RateShiftDetector | None:
        """The detector on the outside-the-band bits (None while learning the band)."""
        return self._rate

    @property
    def outside_rate(self) -> float:
        """Present fraction of values outside the band (NaN while learning it)."""
        return math.nan if self._rate is None else self._rate.estimation

    def update(self, x: float) -> BandShift | None:
        """Add one finite value; return the shift it confirms, if any."""
        self.n += 1
        rate = self._rate
        if rate is None:
            self._learn(x)
            return None
        self.recent_mean += (x - self.recent_mean) * self.recent_alpha
        shift = rate.update(1.0 if (x < self.band_low or x > self.band_high) else 0.0)
        if shift is None:
            return None
        self.n_alarms += 1
        found = BandShift(
            shift=shift,
            band_low=self.band_low,
            band_high=self.band_high,
            reference_mean=self.reference_mean,
            recent_mean=self.recent_mean,
            samples=self.n,
        )
        self._reference = []
        self._rate = None
        return found

    def _learn(self, x: float) -> None:
        reference = self._reference
        if reference is None:  # defensive: rebuilt after unpickling an old state
            reference = self._reference = []
        reference.append(x)
        if len(reference) < self.reference_size:
            return
        ordered = sorted(reference)
        last = len(ordered) - 1
        self.band_low = -math.inf if self.upper_only else ordered[int(self.low_quantile * last)]
        self.band_high = ordered[math.ceil(self.high_quantile * last)]
        self.reference_mean = self.recent_mean = math.fsum(ordered) / len(ordered)
        self._reference = None
        self._rate = RateShiftDetector(**self.rate_params)
