"""ADWIN on a rate, with alarm hygiene: warm-up, debounce, confirmation, cooldown.

A raw ADWIN detection only opens a *candidate*. The candidate's change point
is estimated from a short history (the CUSUM split that best separates an old
and a new level), and the alarm is *confirmed* once the new level has
persisted for ``min_persist`` samples and still differs from the old one by
at least ``persist_ratio`` of the detected effect (and ``min_effect``, in
Cohen's h). When ADWIN already saw ``min_persist`` samples of the new level,
as it usually has for a real shift, confirmation costs no delay; a short
burst is dropped. After a confirmed alarm the stream is quiet for
``cooldown`` samples, after any raw detection for ``debounce`` samples, and
at the start for ``warmup`` samples.

>>> import random
>>> rng = random.Random(7)
>>> detector = RateShiftDetector(direction="up")
>>> for i in range(6000):
...     error = 1.0 if rng.random() < (0.10 if i < 3000 else 0.30) else 0.0
...     shift = detector.update(error)
...     if shift is not None:
...         print(f"sample {i}: {shift.before:.2f} -> {shift.after:.2f}, h={shift.effect:.2f}")
sample 3175: 0.10 -> 0.26, h=0.43
>>> detector.n, detector.n_alarms
(6000, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loopline.streams.drift.effect import cohens_h
from river import drift

DIRECTIONS = ("both", "up", "down")


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
    after: float
    window_before: int
    start: int
    detected_at: int
    effect: float
    check_at: int


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
        Share of the detected effect that must still hold at confirmation.
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
        min_effect: float = 0.05,
        debounce: int = 64,
        cooldown: int = 1000,
        direction: str = "both",
        history: int = 1024,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not 1 <= min_persist <= history:
            raise ValueError(f"min_persist must be in [1, history={history}], got {min_persist}")
        if min(warmup, debounce, cooldown) < 0 or clock < 1 or not 0 < delta < 1:
            raise ValueError(
                "warmup, debounce and cooldown must be >= 0, clock >= 1, 0 < delta < 1"
            )
        self.delta = delta
        self.clock = clock
        self.warmup = warmup
        self.min_persist = min_persist
        self.persist_ratio = persist_ratio
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
        if adwin.drift_detected:
            self._on_detection(n)
        candidate = self._candidate
        if candidate is not None and n >= candidate.check_at:
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
        before, after, recent = split
        effect = cohens_h(before, after)
        if not self._direction_ok(effect) or abs(effect) < self.min_effect:
            self.n_rejected += 1
            return
        start = n - recent + 1
        self._candidate = _Candidate(
            before=before,
            after=after,
            window_before=length - recent,
            start=start,
            detected_at=n,
            effect=effect,
            check_at=max(n, start + self.min_persist - 1),
        )

    def _split(self, n: int, length: int, total: float) -> tuple[float, float, int] | None:
        """The CUSUM change point of the segment ending at ``n``: (before, after, recent)."""
        limit = min(length - 1, self.history - 1)
        if limit < 1:
            return None
        history, size = self._history, self.history
        sign = {"up": 1.0, "down": -1.0, "both": 0.0}[self.direction]
        best_score, best = -math.inf, None
        recent_sum = 0.0
        for recent in range(1, limit + 1):
            recent_sum += history[(n - recent + 1) % size]
            older = length - recent
            diff = recent_sum / recent - (total - recent_sum) / older
            score = diff * math.sqrt(recent * older / length)
            score = score * sign if sign else abs(score)
            if score > best_score:
                best_score = score
                best = ((total - recent_sum) / older, recent_sum / recent, recent)
        return best

    def _check(self, candidate: _Candidate, n: int) -> Shift | None:
        self._candidate = None
        recent = n - candidate.start + 1
        history, size = self._history, self.history
        after = sum(history[i % size] for i in range(candidate.start, n + 1)) / recent
        effect = cohens_h(candidate.before, after)
        needed = max(self.min_effect, self.persist_ratio * abs(candidate.effect))
        if effect * candidate.effect <= 0 or abs(effect) < needed:
            self.n_rejected += 1
            return None
        self.n_alarms += 1
        self._quiet_until = n + self.cooldown
        return Shift(
            before=candidate.before,
            after=after,
            window_before=candidate.window_before,
            window_after=recent,
            change_at=candidate.start,
            detected_at=candidate.detected_at,
            confirmed_at=n,
            effect=effect,
            raw_detections=self.n_detections,
            rejected=self.n_rejected,
        )

    def _direction_ok(self, effect: float) -> bool:
        if self.direction == "up":
            return effect > 0
        if self.direction == "down":
            return effect < 0
        return effect != 0
