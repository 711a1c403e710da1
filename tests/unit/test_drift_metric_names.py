"""loopline.contracts.metric_names: one name per metric, used by the rules and the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from loopline.contracts import metric_names
from loopline.contracts.metric_names import ALL, Metric, by_series

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
SERIES = re.compile(r"\bloopline_[a-z0-9_]+")


def test_names_are_unique_and_well_formed() -> None:
    names = [m.name for m in ALL]
    assert len(names) == len(set(names))
    for m in ALL:
        assert m.name.startswith("loopline_") and m.name == m.name.lower()
        assert m.kind in ("counter", "gauge", "histogram")
        assert m.component in ("serving", "streams", "trainer", "policy")
        # prometheus_client adds _total itself; a name ending in it would double it.
        assert not m.name.endswith("_total"), m.name
        assert m.help


@pytest.mark.parametrize(
    "path",
    sorted(PROMETHEUS_DIR.rglob("*.yml")),
    ids=lambda p: str(p.relative_to(PROMETHEUS_DIR)),
)
def test_every_series_the_rules_use_is_declared(path: Path) -> None:
    used = set(SERIES.findall(path.read_text()))
    known = by_series()
    unknown = sorted(name for name in used if name not in known)
    assert not unknown, f"{path.name} uses undeclared series {unknown}"


def test_the_rules_cover_every_area_the_issue_asks_for() -> None:
    rules = (PROMETHEUS_DIR / "rules" / "loopline.rules.yml").read_text()
    for series in (
        "loopline_drift_alarms_total",  # drift alarms
        "loopline_drift_statistic",  # prediction drift, performance floor
        "loopline_features_redis_keys_total",  # stale features
        "loopline_serving_requests_total",  # serving errors
        "loopline_serving_stage_seconds_bucket",  # serving latency
        "loopline_features_consumer_lag",  # consumer lag
    ):
        assert series in rules


def _registered(registry: CollectorRegistry) -> dict[str, tuple[str, tuple[str, ...]]]:
    out = {}
    for family in registry.collect():
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        out[family.name] = (family.type, tuple(sorted(labels)))
    return out


def _declared(component: str) -> dict[str, Metric]:
    # prometheus_client reports a counter family without its _total suffix.
    return {m.name: m for m in ALL if m.component == component}


def _check(registry: CollectorRegistry, component: str) -> None:
    declared = _declared(component)
    for name, (kind, labels) in _registered(registry).items():
        assert name in declared, f"{component} exports {name}, not in metric_names"
        metric = declared[name]
        assert kind == metric.kind, name
        assert set(labels) <= set(metric.labels), (name, labels, metric.labels)


def test_serving_exports_the_declared_names() -> None:
    from loopline.serving.metrics import ServingMetrics

    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    # Labelled children appear in collect() only once they exist.
    metrics.request("Predict", "OK")
    metrics.model_info.labels("fraud", "1", "f").set(1)
    for child in ("degraded", "store_errors", "swaps", "predictions_logged"):
        getattr(metrics, child).labels("x").inc()
    _check(registry, "serving")


def test_trainer_exports_the_declared_names() -> None:
    from loopline.trainer.telemetry import Telemetry

    telemetry = Telemetry.create()
    telemetry.events.labels("published").inc()
    _check(telemetry.registry, "trainer")


def test_module_doc_lists_each_scrape_port() -> None:
    from loopline.contracts.settings import Settings

    s = Settings()
    doc = metric_names.__doc__ or ""
    for port in (
        s.serving.metrics_port,
        s.streams.metrics_port,
        s.trainer.metrics_port,
        s.policy.metrics_port,
        s.drift.metrics_port,
    ):
        assert f"({port})" in doc
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    for port in (
        s.serving.metrics_port,
        s.streams.metrics_port,
        s.labels.metrics_port,
        s.trainer.metrics_port,
        s.policy.metrics_port,
        s.drift.metrics_port,
    ):
        assert f"127.0.0.1:{port}" in config


def test_streams_features_flow_exports_the_declared_names() -> None:
    from loopline.streams.features.metrics import feature_metrics

    registry = CollectorRegistry()
    m = feature_metrics(registry)
    m.dead_letters.labels("malformed").inc()
    m.redis_keys.labels("written").inc()
    m.consumer_lag.labels("0").set(1)
    _check(registry, "streams")


def test_drift_flow_exports_the_declared_names() -> None:
    from loopline.streams.drift.metrics import drift_metrics

    registry = CollectorRegistry()
    m = drift_metrics(registry)
    m.alarms.labels("fraud", "data", "amount", "warning").inc()
    m.statistic.labels("fraud", "data", "amount").set(0.2)
    m.reference.labels("fraud", "data", "amount").set(0.2)
    m.inputs.labels("fraud", "predictions", "monitored").inc()
    m.published.labels("delivered").inc()
    m.lag.labels("loopline.predictions", "0").set(0)
    m.last_input.labels("predictions").set(1.0)
    _check(registry, "streams")


def test_retrain_policy_loop_exports_the_declared_names() -> None:
    from loopline.trainer.policy.service import PolicyMetrics

    registry = CollectorRegistry()
    m = PolicyMetrics(registry)
    m.drift_events.labels("triggered").inc()
    m.retrain_events.labels("drift", "delivered").inc()
    m.held.labels("rows").inc()
    m.pending.set(0)
    m.last_retrain.set(1.0)
    _check(registry, "policy")
