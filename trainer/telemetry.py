"""Prometheus metrics of the long-running trainer (`loopline run trainer`).

Names from ``loopline.contracts.metric_names``. The last challenger's holdout
quality is exported by the task's own gate metrics: AUC for a binary model
(NaN for a regression one), and RMSE and MAE for a regression model. The
regression gauges are registered on the first regression report, so a binary
trainer exports exactly what it did before regression existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from loopline.contracts import metric_names as mn
from loopline.contracts.tasks import REGRESSION
from loopline.telemetry.prometheus import counter, gauge
from loopline.trainer.service import Handled

# Each task's holdout metrics, as the gate computes them, and their catalogue entries.
REGRESSION_GAUGES = {"rmse": mn.TRAINER_LAST_HOLDOUT_RMSE, "mae": mn.TRAINER_LAST_HOLDOUT_MAE}


@dataclass
class Telemetry:
    registry: CollectorRegistry
    events: Counter
    duration: Gauge
    auc: Gauge
    champion: Gauge
    # Filled on the first regression report: metric name -> gauge.
    regression: dict[str, Gauge] = field(default_factory=dict)

    @staticmethod
    def create() -> Telemetry:
        # Its own registry: several components may share a process in tests.
        reg = CollectorRegistry()
        return Telemetry(
            registry=reg,
            events=counter(mn.TRAINER_RETRAIN_EVENTS, reg),
            duration=gauge(mn.TRAINER_LAST_TRAINING_SECONDS, reg),
            auc=gauge(mn.TRAINER_LAST_HOLDOUT_AUC, reg),
            champion=gauge(mn.TRAINER_CHAMPION_VERSION, reg),
        )

    @staticmethod
    def start(port: int) -> Telemetry:
        """Metrics served on ``port`` (0: collected but not served)."""
        t = Telemetry.create()
        if port:
            start_http_server(port, registry=t.registry)
        return t

    def record(self, handled: Handled) -> None:
        self.events.labels(handled.outcome).inc()
        report = handled.report
        if report is None:
            return
        self.duration.set(report.duration_s)
        self.auc.set(report.metrics.get("auc", math.nan))
        if report.task == REGRESSION:
            if not self.regression:
                self.regression = {k: gauge(m, self.registry) for k, m in REGRESSION_GAUGES.items()}
            for key, gauge in self.regression.items():
                gauge.set(report.metrics.get(key, math.nan))
        # A version published as a rollout candidate is not champion (yet).
        if report.accepted and report.published_as == "champion" and report.version.isdigit():
            self.champion.set(int(report.version))
