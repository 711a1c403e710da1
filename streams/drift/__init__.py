"""Drift detection for Loopline: pure logic, no stream-processing framework.

The dataflow adapter keeps one :class:`DriftMonitor` per model, calls
:meth:`DriftMonitor.update_prediction` and :meth:`DriftMonitor.update_labeled`
with decoded payloads and publishes the :class:`DriftEvent` objects they
return; :meth:`DriftMonitor.stats` feeds gauges. Everything here pickles, so
the dataflow's recovery snapshots carry the detectors across restarts.

The Bytewax adapter is :mod:`.bytewax_flow` (settings in :mod:`.config`,
metrics in :mod:`.metrics`); the runner :mod:`.run`; ``loopline run drift``
and ``drift tail`` :mod:`.commands`.
"""

from loopline.streams.drift.band import BandShift, BandShiftDetector
from loopline.streams.drift.detectors import band_detector, concept_detector
from loopline.streams.drift.effect import cohens_h, severity_of
from loopline.streams.drift.events import drift_event_id
from loopline.streams.drift.monitor import ChannelStat, DriftMonitor
from loopline.streams.drift.performance import Breach, PerformanceMonitor
from loopline.streams.drift.rate_shift import RateShiftDetector, Shift

__all__ = [
    "BandShift",
    "BandShiftDetector",
    "Breach",
    "ChannelStat",
    "DriftMonitor",
    "PerformanceMonitor",
    "RateShiftDetector",
    "Shift",
    "band_detector",
    "cohens_h",
    "concept_detector",
    "drift_event_id",
    "severity_of",
]
