"""ADWIN on a rate, with alarm hygiene: warm-up, debounce, confirmation, cooldown.

A raw ADWIN detection only opens a *candidate*. Its change point is estimated
from a short history (the CUSUM split that best separates an old and a new
level) and the old level is frozen. The alarm is *confirmed* once the new
level has lasted ``min_persist`` samples and *persists*: the mean since the
change differs from the old level by at least ``min_effect`` (Cohen's h), and
the later half of that stretch still carries ``persist_ratio`` of the earlier
half's shift, ``confirm_z`` standard errors away from the old level. A burst that fades
fails the second test, and is dropped when ``confirm_window`` samples pass
without confirmation. A real shift is usually confirmed at the detection
itself, since ADWIN has seen enough of the new level by then. After a
confirmed alarm the stream is quiet for ``cooldown`` samples, after any raw
detection for ``debounce`` samples, and at the start for ``warmup`` samples.

>>> import random
>>> rng = random.Random(7)
>>> detector = RateShiftDetector(direction="up")
>>> for i in range(6000):
...     error = 1.0 if rng.random() < (0.10 if i < 3000 else 0.30) else 0.0
...     shift = detector.update(error)
...     if shift is not None:
...         print(f"{i}: {shift.before:.2f} -> {shift.after:.2f} since {shift.change_at - 1}")
3175: 0.10 -> 0.26 since 3001
>>> detector.n, detector.n_alarms
(6000, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from river import drift

from loopline.contracts.errors import ConfigError
from loopline.streams.drift.effect import cohens_h

DIRECTIONS = ("both", "up", "down")
# A variance floor for the z test: a reference rate of exactly 0 or 1 would
# otherwise make any single different value "infinitely" significant.
_MIN_VARIANCE = 0.0025


@dataclass(frozen=True)
class Shift:
    """A confirmed change of a stream's level. Sample indexes count from 1."""

    before: float
    after: float
    window_before: int
    window_after: int
    change_at: int
    detected_at: int
    confirmed_at: int
    effect: float
    raw_detections: int
    rejected: int


@dataclass
class _Candidate:
    before: float
    window_before: int
    start: int
    detected_at: int
    expires_at: int
    total: float  # sum of the values since start
    half_start: int  # first sample of the later half
    half_total: float  # sum of the values of the later half


class RateShiftDetector:
    """Confirmed level shifts of a stream of values in [0, 1].

    Parameters
    ----------
    delta, clock
        ADWIN's confidence and how often (in samples) it checks for a cut.
    warmup
        Samples at the start during which no alarm can open.
    min_persist
        Samples the new level must have lasted before an alarm is confirmed.
    persist_ratio
        Share of the earlier half's shift the later half must still carry.
    confirm_z
        Standard errors the later half must lie beyond the old level.
    confirm_window
        Samples after a raw detection within which a candidate must be confirmed.
    min_effect
        Smallest effect (Cohen's h) worth an alarm.
    debounce
        Samples after any raw detection during which no new candidate opens.
    cooldown
        Samples after a confirmed alarm during which no new candidate opens.
    direction
        ``"up"``, ``"down"`` or ``"both"``: which shifts count (errors: up).
    history
        Samples kept to locate the change point; at least ``min_persist``.
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 8,
        *,
        warmup: int = 500,
        min_persist: int = 64,
        persist_ratio: float = 0.5,
        confirm_z: float = 2.5,
        confirm_window: int = 256,
        min_effect: float = 0.05,
        debounce: int = 64,
        cooldown: int = 1000,
        direction: str = "both",
        history: int = 1024,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not 1 <= min_persist <= history:
            raise ConfigError(f"min_persist must be in [1, history={history}], got {min_persist}")
        if min(warmup, debounce, cooldown, confirm_window) < 0 or clock < 1 or not 0 < delta < 1:
            raise ConfigError(
                "warmup, debounce, cooldown and confirm_window must be >= 0, clock >= 1, "
                "0 < delta < 1"
            )
        self.delta = delta
        self.clock = clock
        self.warmup = warmup
        self.min_persist = min_persist
        self.persist_ratio = persist_ratio
        self.confirm_z = confirm_z
        self.confirm_window = confirm_window
        self.min_effect = min_effect
        self.debounce = debounce
        self.cooldown = cooldown
        self.direction = direction
        self.history = history
        self.n = 0
        self.n_detections = 0
        self.n_rejected = 0
        self.n_alarms = 0
        self._adwin = drift.ADWIN(delta=delta, clock=clock)
        self._history = [0.0] * history
        # River's ADWIN forgets everything on the update after a detection, so
        # its window is always "every sample since segment_start".
        self._segment_start = 1
        self._segment_sum = 0.0
        self._quiet_until = warmup
        self._candidate: _Candidate | None = None

    @property
    def estimation(self) -> float:
        """Mean of ADWIN's current window (the stream's present level)."""
        return self._adwin.estimation

    @property
    def width(self) -> int:
        """Samples in ADWIN's current window."""
        return self._adwin.width

    @property
    def warming_up(self) -> bool:
        return self.n < self.warmup

    def update(self, x: float) -> Shift | None:
        """Add one value in [0, 1]; return the shift it confirms, if any."""
        n = self.n + 1
        self.n = n
        self._history[n % self.history] = x
        self._segment_sum += x
        adwin = self._adwin
        adwin.update(x)
        candidate = self._candidate
        if candidate is not None:
            candidate.total += x
            candidate.half_total += x
        if adwin.drift_detected:
            self._on_detection(n)
            candidate = self._candidate
        if candidate is not None:
            return self._check(candidate, n)
        return None

    def _on_detection(self, n: int) -> None:
        self.n_detections += 1
        length = n - self._segment_start + 1
        total = self._segment_sum
        self._segment_start = n + 1
        self._segment_sum = 0.0
        if self._candidate is not None or n < self._quiet_until:
            return
        self._quiet_until = n + self.debounce
        split = self._split(n, length, total)
        if split is None:
            self.n_rejected += 1
            return
        before, recent = split
        start = n - recent + 1
        history, size = self._history, self.history
        half_start = start + recent // 2
        self._candidate = _Candidate(
            before=before,
            window_before=length - recent,
            start=start,
            detected_at=n,
            expires_at=n + self.confirm_window,
            total=sum(history[i % size] for i in range(start, n + 1)),
            half_start=half_start,
            half_total=sum(history[i % size] for i in range(half_start, n + 1)),
        )

    def _split(self, n: int, length: int, total: float) -> tuple[float, int] | None:
        """The CUSUM change point of the segment ending at ``n``: (old level, recent samples)."""
        limit = min(length - 1, self.history - 1)
        if limit < 1:
            return None
        history, size = self._history, self.history
        sign = {"up": 1.0, "down": -1.0, "both": 0.0}[self.direction]
        best_score, best = 0.0, None
        recent_sum = 0.0
        for recent in range(1, limit + 1):
            recent_sum += history[(n - recent + 1) % size]
            older = length - recent
            diff = recent_sum / recent - (total - recent_sum) / older
            score = diff * math.sqrt(recent * older / length)
            score = score * sign if sign else abs(score)
            if score > best_score:
                best_score = score
                best = ((total - recent_sum) / older, recent)
        return best

    def _check(self, c: _Candidate, n: int) -> Shift | None:
        length = n - c.start + 1
        # Keep the later half the later half as the stretch grows.
        history, size = self._history, self.history
        target = c.start + length // 2
        while c.half_start < target:
            c.half_total -= history[c.half_start % size]
            c.half_start += 1
        if length >= self.min_persist:
            after = c.total / length
            if self._persists(c, after, n - c.half_start + 1, c.half_start - c.start):
                return self._confirm(c, n, after, length)
        if n >= c.expires_at:
            self._candidate = None
            self.n_rejected += 1
        return None

    def _persists(self, c: _Candidate, after: float, late_n: int, early_n: int) -> bool:
        effect = cohens_h(c.before, after)
        if abs(effect) < self.min_effect or not self._direction_ok(effect):
            return False
        late = c.half_total / late_n - c.before
        early = (c.total - c.half_total) / early_n - c.before
        # A burst puts its weight in the earlier half and fades in the later one.
        if late * effect <= 0 or abs(late) < self.persist_ratio * abs(early):
            return False
        variance = max(c.before * (1.0 - c.before), _MIN_VARIANCE)
        return abs(late) >= self.confirm_z * math.sqrt(variance / late_n)

    def _confirm(self, c: _Candidate, n: int, after: float, length: int) -> Shift:
        self._candidate = None
        self.n_alarms += 1
        self._quiet_until = n + self.cooldown
        return Shift(
            before=c.before,
            after=after,
            window_before=c.window_before,
            window_after=length,
            change_at=c.start,
            detected_at=c.detected_at,
            confirmed_at=n,
            effect=cohens_h(c.before, after),
            raw_detections=self.n_detections,
            rejected=self.n_rejected,
        )

    def _direction_ok(self, effect: float) -> bool:
        if self.direction == "up":
            return effect > 0
        if self.direction == "down":
            return effect < 0
        return effect != 0
