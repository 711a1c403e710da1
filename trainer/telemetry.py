"""Prometheus metrics of the long-running trainer (`loopline run trainer`)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from loopline.trainer.service import Handled


@dataclass
class Telemetry:
    registry: CollectorRegistry
    events: Counter
    duration: Gauge
    auc: Gauge
    champion: Gauge

    @staticmethod
    def create() -> Telemetry:
        # Its own registry: several components may share a process in tests.
        reg = CollectorRegistry()
        return Telemetry(
            registry=reg,
            events=Counter(
                "loopline_trainer_retrain_events",
                "Retrain events handled, by outcome (published, rejected, duplicate, failed)",
                ["outcome"],
                registry=reg,
            ),
            duration=Gauge(
                "loopline_trainer_last_training_seconds",
                "Duration of the last training",
                registry=reg,
            ),
            auc=Gauge(
                "loopline_trainer_last_holdout_auc",
                "Holdout AUC of the last trained challenger",
                registry=reg,
            ),
            champion=Gauge(
                "loopline_trainer_champion_version",
                "Version the last accepted training made champion",
                registry=reg,
            ),
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
        self.auc.set(report.metrics.get("auc", float("nan")))
        # A version published as a rollout candidate is not champion (yet).
        if report.accepted and report.published_as == "champion" and report.version.isdigit():
            self.champion.set(int(report.version))
