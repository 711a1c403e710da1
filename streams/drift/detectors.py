"""The configured detectors: each built from ``Settings.drift`` the same way everywhere.

The monitor, the benchmark and the tests build their detectors here, so what
is measured is what runs.
"""

from __future__ import annotations

from typing import Any

from loopline.contracts.settings import DriftSettings
from loopline.streams.drift.band import BandShiftDetector
from loopline.streams.drift.rate_shift import RateShiftDetector


def concept_detector(settings: DriftSettings) -> RateShiftDetector:
    """The configured detector of rising per-example error (what the benchmark measures)."""
    return RateShiftDetector(**rate_params(settings, settings.min_persist, "up"))


def band_detector(settings: DriftSettings) -> BandShiftDetector:
    """The configured detector of one feature's (or the score's) distribution shifts."""
    return BandShiftDetector(
        reference_size=settings.reference_size,
        low_quantile=settings.band_low_quantile,
        high_quantile=settings.band_high_quantile,
        **rate_params(settings, settings.data_min_persist, "both"),
    )


def rate_params(s: DriftSettings, min_persist: int, direction: str) -> dict[str, Any]:
    """:class:`RateShiftDetector` arguments from the settings; ``history`` fits ``min_persist``."""
    return {
        "delta": s.adwin_delta,
        "clock": s.adwin_clock,
        "warmup": s.warmup,
        "min_persist": min_persist,
        "persist_ratio": s.persist_ratio,
        "confirm_z": s.confirm_z,
        "confirm_window": s.confirm_window,
        "min_effect": s.min_effect,
        "debounce": s.debounce,
        "cooldown": s.cooldown,
        "direction": direction,
        "history": max(1024, min_persist),
    }
