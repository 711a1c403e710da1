"""The rollout watcher's Prometheus metrics (names from ``loopline.contracts.metric_names``)."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Gauge

from loopline.contracts import metric_names as mn
from loopline.contracts.tasks import BINARY, REGRESSION
from loopline.rollout.plan import ARMS
from loopline.telemetry.prometheus import counter, gauge


class RolloutMetrics:
    """Per-arm evidence gauges, whether a plan runs, and the decisions taken."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.labels = self._gauge(mn.ROLLOUT_ARM_LABELS)
        self.auc = self._gauge(mn.ROLLOUT_ARM_AUC)
        self.log_loss = self._gauge(mn.ROLLOUT_ARM_LOG_LOSS)
        # Regression gauges are registered on first regression evidence, so a binary
        # watcher exports exactly what it did before regression existed.
        self.rmse: Gauge | None = None
        self.mae: Gauge | None = None
        self.running = self._gauge(mn.ROLLOUT_RUNNING)
        self.decisions = counter(mn.ROLLOUT_DECISIONS, registry)

    def _gauge(self, m: mn.Metric) -> Gauge:
        return gauge(m, self.registry)

    def evidence(
        self, model: str, evidence: dict[str, dict[str, float]], task: str = BINARY
    ) -> None:
        # Only the task's own quality gauges: a binary model exports no RMSE series.
        if task == REGRESSION:
            if self.rmse is None or self.mae is None:
                self.rmse = self._gauge(mn.ROLLOUT_ARM_RMSE)
                self.mae = self._gauge(mn.ROLLOUT_ARM_MAE)
            quality = {"rmse": self.rmse, "mae": self.mae}
        else:
            quality = {"auc": self.auc, "log_loss": self.log_loss}
        for arm in ARMS:
            ev = evidence.get(arm, {})
            self.labels.labels(model, arm).set(ev.get("labels", 0))
            for key, quality_gauge in quality.items():
                quality_gauge.labels(model, arm).set(ev.get(key, math.nan))
