"""Every drift detector of one model, as one picklable state object.

A dataflow keeps one :class:`DriftMonitor` per model name, feeds it each
decoded :class:`PredictionLog` and :class:`LabeledExample`, and publishes the
:class:`DriftEvent` objects it returns. Four kinds of alarm:

- ``data``: per model input feature, a shift of the values' distribution
  (:class:`BandShiftDetector` on the logged feature vectors);
- ``prediction``: the same on the score;
- ``concept``: a rise of the per-example error on labeled data
  (:class:`RateShiftDetector`, upward only);
- ``performance``: rolling AUC or precision below its floor.

The ``task`` (passed by the caller) says what labels mean. For ``regression``
the score is the predicted value (its band is learned from its own quantiles:
any range), concept drift watches the absolute residual ``|label - score|``
(``error_mode`` "absolute", against a learned residual quantile: see
:mod:`loopline.streams.drift.regression`), and the performance check is a
ceiling on the rolling RMSE (``drift.rmse_ceiling``) instead of AUC/precision.

Prediction, concept and performance detectors describe one model version and
start over when a new version serves. Input from other arms (shadow,
challenger) is skipped: it repeats the champion's features.

>>> import random
>>> from loopline.contracts.schemas import PredictionLog
>>> from loopline.contracts.settings import DriftSettings
>>> monitor = DriftMonitor("fraud", ["amount"], DriftSettings(reference_size=500))
>>> rng = random.Random(5)
>>> def log(i, amount):
...     return PredictionLog(
...         request_id=f"r{i}", model_name="fraud", model_version="v1", feature_set="fraud",
...         fingerprint="f", entities={}, features=[amount], score=0.1, event_time=i + 1,
...         served_at_ms=1_700_000_000_000 + i)
>>> for i in range(6000):
...     for event in monitor.update_prediction(log(i, rng.gauss(50 if i < 3000 else 65, 10))):
...         print(event.kind, event.feature, event.severity, f"{event.statistic_before:.2f}",
...               "->", f"{event.statistic_after:.2f}", event.model_version)
data amount critical 0.18 -> 0.59 v1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loopline.contracts.errors import ConfigError, SchemaError
from loopline.contracts.schemas import DriftEvent, LabeledExample, PredictionLog
from loopline.contracts.settings import DriftSettings
from loopline.contracts.tasks import BINARY, REGRESSION, check_task
from loopline.streams.drift.band import BandShift, BandShiftDetector
from loopline.streams.drift.detectors import band_detector, concept_detector, rate_params
from loopline.streams.drift.effect import severity_of
from loopline.streams.drift.events import AlarmSource, breach_event, shift_event
from loopline.streams.drift.performance import Breach, PerformanceMonitor
from loopline.streams.drift.rate_shift import RateShiftDetector, Shift
from loopline.streams.drift.regression import (
    RMSE,
    RmseMonitor,
    residual_detector,
    residual_evidence,
)

ERROR_MODES = ("binary", "absolute")
# Predictions in a row from an older version before the monitor believes in a
# rollback; fewer are the tail of a swap across serving processes.
ROLLBACK_CONFIRM = 100
# Versions remembered as "older" (a bounded list keeps the state small).
MAX_VERSIONS = 32


@dataclass(frozen=True)
class ChannelStat:
    """A channel's present statistic, for gauges (NaN while it warms up)."""

    kind: str
    feature: str
    value: float
    reference: float
    samples: int
    alarms: int


class DriftMonitor:
    """Drift detection for one model: feed it predictions and labeled examples.

    Parameters
    ----------
    model_name
        The model whose traffic this monitor watches (part of every event id).
    feature_names
        The model's input features, in the logged vector's order.
    settings
        Detectors and hygiene (``Settings.drift``).
    task
        ``"binary"`` or ``"regression"`` (what labels and scores mean).
    """

    # Class defaults: monitors pickled before tasks existed are binary and watch every feature.
    task = BINARY
    _watched: set[str] | None = None

    def __init__(
        self,
        model_name: str,
        feature_names: Sequence[str],
        settings: DriftSettings | None = None,
        task: str = BINARY,
    ) -> None:
        s = settings or DriftSettings()
        self.task = check_task(task, "drift")
        if s.error_mode not in ERROR_MODES:
            raise ConfigError(
                f"drift.error_mode must be one of {ERROR_MODES}, not {s.error_mode!r}"
            )
        if s.data_sample_every < 1:
            raise ConfigError("drift.data_sample_every must be >= 1")
        self.model_name = model_name
        self.feature_names = tuple(feature_names)
        self.settings = s
        self.model_version = ""
        self.fingerprint = ""
        self.n_predictions = 0
        self.n_labeled = 0
        self.n_skipped = 0
        # Bumped whenever detectors start over, so event ids never repeat.
        self.generation = 0
        self._versions: list[str] = []
        self._rollback = ("", 0)
        self._features = [band_detector(self.settings) for _ in self.feature_names]
        watched = {f.strip() for f in s.watch_features.split(",") if f.strip()}
        unknown = sorted(watched - set(self.feature_names))
        if unknown:
            raise ConfigError(f"drift.watch_features names unknown features {unknown}")
        self._watched = watched or None
        self._reset_model_channels()

    # -- input ------------------------------------------------------------------------
    def update_prediction(self, log: PredictionLog) -> list[DriftEvent]:
        """Data drift on the feature vector, prediction drift on the score."""
        s = self.settings
        if log.arm != s.arm:
            self.n_skipped += 1
            return []
        if len(log.features) != len(self.feature_names):
            raise SchemaError(
                f"PredictionLog.features: expected {len(self.feature_names)} values "
                f"({self.model_name}), got {len(log.features)}",
                "features",
            )
        if log.fingerprint != self.fingerprint:
            if self.fingerprint:  # another feature set: old references mean nothing
                self.generation += 1
                self._features = [band_detector(self.settings) for _ in self.feature_names]
            self.fingerprint = log.fingerprint
        current = self._observe_version(log.model_version)
        self.n_predictions += 1
        events: list[DriftEvent] = []
        if self.n_predictions % s.data_sample_every == 0:
            inputs = zip(self.feature_names, self._features, log.features, strict=True)
            for name, detector, x in inputs:
                if self._watched is not None and name not in self._watched:
                    continue
                found = detector.update(x)
                if found is not None:
                    events.append(self._band_event("data", name, found, log.served_at_ms))
        if current and s.watch_prediction:
            found = self._score.update(log.score)
            if found is not None:
                events.append(self._band_event("prediction", "score", found, log.served_at_ms))
        return events

    def update_labeled(self, example: LabeledExample) -> list[DriftEvent]:
        """Concept drift on the per-example error, performance against the floors."""
        if example.arm != self.settings.arm:
            self.n_skipped += 1
            return []
        if not self.model_version:
            self._switch_version(example.model_version)
        elif example.model_version != self.model_version:
            self.n_skipped += 1  # a label for a model that no longer serves
            return []
        self.n_labeled += 1
        if not self.settings.watch_error:
            return [
                self._breach_event(b, example.labeled_at_ms)
                for b in self._performance.update(example.label, example.score)
            ]
        if self.task == REGRESSION:
            return self._update_regression(example)
        s = self.settings
        if s.error_mode == "binary":
            error = float((example.score >= s.alert_threshold) != (example.label == 1))
        else:
            error = abs(example.label - example.score)
        events: list[DriftEvent] = []
        shift = self._error.update(error)
        if shift is not None:
            events.append(
                self._event(
                    "concept",
                    "error",
                    f"adwin({s.error_mode})",
                    shift,
                    time_ms=example.labeled_at_ms,
                    evidence={"error_mode": s.error_mode, "alert_threshold": s.alert_threshold},
                )
            )
        for breach in self._performance.update(example.label, example.score):
            events.append(self._breach_event(breach, example.labeled_at_ms))
        return events

    def _update_regression(self, example: LabeledExample) -> list[DriftEvent]:
        """Concept drift on the absolute residual, the rolling RMSE against its ceiling."""
        events: list[DriftEvent] = []
        found = self._error.update(abs(example.label - example.score))
        if found is not None:
            q = self.settings.band_high_quantile
            events.append(
                self._event(
                    "concept",
                    "error",
                    f"adwin-residual(q{q:g})",
                    found.shift,
                    time_ms=example.labeled_at_ms,
                    evidence=residual_evidence(found),
                    sample=found.samples,
                )
            )
        for breach in self._performance.update(example.label, example.score):
            events.append(self._breach_event(breach, example.labeled_at_ms))
        return events

    @property
    def error_mode(self) -> str:
        """The per-example error watched: the task chooses "absolute" for regression."""
        return "absolute" if self.task == REGRESSION else self.settings.error_mode

    # -- observation ------------------------------------------------------------------
    def stats(self) -> list[ChannelStat]:
        """Every channel's present statistic (for Prometheus gauges)."""
        s = self.settings
        band_reference = 1.0 - (s.band_high_quantile - s.band_low_quantile)
        out = [
            ChannelStat("data", name, d.outside_rate, band_reference, d.n, d.n_alarms)
            for name, d in zip(self.feature_names, self._features, strict=True)
        ]
        score, error, perf = self._score, self._error, self._performance
        out.append(
            ChannelStat(
                "prediction", "score", score.outside_rate, band_reference, score.n, score.n_alarms
            )
        )
        if isinstance(error, BandShiftDetector) and isinstance(perf, RmseMonitor):
            above = 1.0 - s.band_high_quantile  # share above the reference quantile
            alarms = error.n_alarms
            out.append(ChannelStat("concept", "error", error.outside_rate, above, error.n, alarms))
            out.append(ChannelStat("performance", RMSE, perf.rmse, s.rmse_ceiling, perf.n, 0))
            return out
        out.append(
            ChannelStat("concept", "error", error.estimation, float("nan"), error.n, error.n_alarms)
        )
        out.append(ChannelStat("performance", "auc", perf.auc, s.auc_floor, perf.n, 0))
        out.append(
            ChannelStat("performance", "precision", perf.precision, s.precision_floor, perf.n, 0)
        )
        return out

    # -- internals --------------------------------------------------------------------
    def _reset_model_channels(self) -> None:
        s = self.settings
        self._score = band_detector(self.settings)
        self._error: RateShiftDetector | BandShiftDetector
        self._performance: PerformanceMonitor | RmseMonitor
        if self.task == REGRESSION:
            self._error = residual_detector(s, rate_params(s, s.min_persist, "up"))
            self._performance = RmseMonitor(
                window=s.performance_window,
                ceiling=s.rmse_ceiling,
                every=s.performance_every,
                persist=s.performance_persist,
                cooldown=s.performance_cooldown,
            )
            return
        self._error = concept_detector(s)
        self._performance = PerformanceMonitor(
            window=s.performance_window,
            auc_floor=s.auc_floor,
            precision_floor=s.precision_floor,
            threshold=s.alert_threshold,
            every=s.performance_every,
            persist=s.performance_persist,
            min_positives=s.performance_min_positives,
            cooldown=s.performance_cooldown,
        )

    def _observe_version(self, version: str) -> bool:
        """Follow the serving version; True when ``version`` is the current one."""
        if version == self.model_version:
            self._rollback = ("", 0)
            return True
        if not self.model_version or version not in self._versions:
            self._switch_version(version)
            return True
        name, count = self._rollback
        count = count + 1 if name == version else 1
        self._rollback = (version, count)
        if count >= ROLLBACK_CONFIRM:
            self._switch_version(version)
            return True
        self.n_skipped += 1
        return False

    def _switch_version(self, version: str) -> None:
        if self.model_version:
            self.generation += 1
            self._reset_model_channels()
        self.model_version = version
        self._rollback = ("", 0)
        if version in self._versions:
            self._versions.remove(version)
        self._versions.append(version)
        del self._versions[:-MAX_VERSIONS]

    def _band_event(self, kind: str, feature: str, found: BandShift, time_ms: int) -> DriftEvent:
        s = self.settings
        detector = f"adwin-band(q{s.band_low_quantile:g},q{s.band_high_quantile:g})"
        return self._event(
            kind,
            feature,
            detector,
            found.shift,
            time_ms=time_ms,
            evidence=found.evidence(),
            sample=found.samples,
        )

    def _event(
        self,
        kind: str,
        feature: str,
        detector: str,
        shift: Shift,
        *,
        time_ms: int,
        evidence: dict[str, Any],
        sample: int | None = None,
    ) -> DriftEvent:
        s = self.settings
        severity = severity_of(shift.effect, warning=s.warning_effect, critical=s.critical_effect)
        return shift_event(
            self._alarm_source(),
            kind,
            feature,
            detector,
            shift,
            time_ms=time_ms,
            severity=severity,
            evidence=evidence,
            sample=sample,
        )

    def _breach_event(self, breach: Breach, time_ms: int) -> DriftEvent:
        return breach_event(self._alarm_source(), breach, time_ms)

    def _alarm_source(self) -> AlarmSource:
        return AlarmSource(self.model_name, self.model_version, self.generation)
