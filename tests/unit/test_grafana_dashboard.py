"""The Grafana dashboard and `loopline up --monitoring`'s generated configuration: every
metric the dashboard reads is in the catalogue, and the generated Prometheus and Grafana
files point where the settings say. Pure functions: no processes, no sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError
from loopline.contracts.metric_names import by_series
from loopline.contracts.settings import Settings
from loopline.stack import dashboard
from loopline.stack.monitoring import (
    deploy_dir,
    grafana_provisioning,
    prometheus_config,
    scrape_targets,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "loopline.json"
# Series Prometheus makes itself: the firing-alerts annotation reads ALERTS.
PROMETHEUS_OWN = frozenset({"ALERTS", "up"})


def _settings(**env: str) -> Settings:
    return load_settings(env={f"LOOPLINE_{k.upper()}": v for k, v in env.items()})


def _undeclared(board: dict) -> list[tuple[str, str]]:
    known = by_series()
    return sorted(
        (q.panel, name)
        for q in dashboard.queries(board)
        for name in dashboard.metric_names(q.expr)
        if name not in known and name not in PROMETHEUS_OWN
    )


def test_every_metric_the_dashboard_reads_is_in_the_catalogue() -> None:
    board = dashboard.load(DASHBOARD)
    assert len(dashboard.queries(board)) > 20
    assert _undeclared(board) == []


def test_a_misspelled_metric_is_caught() -> None:
    # Guards the guard: the same check must fail on a name the catalogue lacks.
    board = dashboard.load(DASHBOARD)
    target = next(p for p in board["panels"] if p.get("targets"))["targets"][0]
    target["expr"] = 'sum(rate(loopline_serving_request_total{code="OK"}[$__rate_interval]))'
    assert [name for _, name in _undeclared(board)] == ["loopline_serving_request_total"]


def test_metric_names_skips_functions_labels_keywords_and_strings() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (arm, le) (rate(a_bucket{arm=~"x|y"}[5m]))) '
        "/ on (job) group_left (model, version) topk by (job) (1, b) "
        "or (c unless c offset 1m) and ignoring (le) d > bool 0"
    )
    assert dashboard.metric_names(expr) == {"a_bucket", "b", "c", "d"}


def test_the_dashboard_covers_what_on_call_needs() -> None:
    used = {
        name
        for q in dashboard.queries(dashboard.load(DASHBOARD))
        for name in dashboard.metric_names(q.expr)
    }
    for series in (
        "loopline_serving_stage_seconds_bucket",  # latency percentiles
        "loopline_serving_arm_model_seconds_bucket",  # ... per rollout arm
        "loopline_serving_model_info",  # ... per model version
        "loopline_serving_arm_calls_total",  # throughput per arm
        "loopline_serving_degraded_answers_total",  # degraded / defaulted features
        "loopline_features_freshness_seconds_bucket",  # freshness
        "loopline_features_consumer_lag",  # consumer lag
        "loopline_features_dead_letters_total",  # DLQ rate
        "loopline_drift_statistic",  # drift statistics
        "loopline_drift_alarms_total",  # ... with alarm annotations
        "loopline_policy_retrain_events_total",  # retrains
        "loopline_trainer_retrain_events_total",
        "loopline_serving_model_swaps_total",  # swaps
        "loopline_rollout_arm_auc",  # business metric per arm
    ):
        assert series in used, series


def test_panels_are_well_formed_and_use_the_provisioned_datasource() -> None:
    board = dashboard.load(DASHBOARD)
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "loopline.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert panel["description"], panel["title"]
    for q in dashboard.queries(board):
        dashboard.prometheus_expr(q.expr, "30s")  # no variable Prometheus cannot evaluate
    names = [a["name"] for a in board["annotations"]["list"]]
    assert "Drift alarms" in names


def test_a_dashboard_variable_prometheus_cannot_evaluate_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\$model"):
        dashboard.prometheus_expr('rate(x_total{model="$model"}[$__rate_interval])', "30s")


def test_scrape_targets_follow_the_settings_and_the_example_jobs() -> None:
    s = _settings(serving__host="0.0.0.0", serving__metrics_port="19464", labels__metrics_port="0")
    targets = scrape_targets(s)
    assert targets["loopline-serving"] == "127.0.0.1:19464"
    assert "loopline-labels" not in targets  # port 0: metrics off
    assert targets["loopline-drift"] == f"127.0.0.1:{s.drift.metrics_port}"
    example = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    example_jobs = {job["job_name"] for job in example["scrape_configs"]} - {"prometheus"}
    assert set(scrape_targets(_settings())) == example_jobs


def test_prometheus_config_has_the_interval_the_rules_and_itself() -> None:
    s = _settings(stack__scrape_interval_s="1", stack__prometheus_port="19090")
    rules = deploy_dir(s) / "prometheus" / "rules" / "loopline.rules.yml"
    config = prometheus_config(s, rules)
    assert config["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}
    assert config["rule_files"] == [str(rules)]
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs["prometheus"] == ["127.0.0.1:19090"]
    assert jobs["loopline-serving"] == [f"127.0.0.1:{s.serving.metrics_port}"]
    yaml.safe_dump(config)  # what is written must be plain YAML


def test_grafana_provisioning_points_at_this_prometheus_and_the_dashboard() -> None:
    s = _settings(stack__prometheus_port="19090", stack__scrape_interval_s="5")
    files = grafana_provisioning(s, DEPLOY)
    (source,) = files["datasources/loopline.yml"]["datasources"]
    assert source["url"] == "http://127.0.0.1:19090"
    assert source["jsonData"]["timeInterval"] == "5s"
    (provider,) = files["dashboards/loopline.yml"]["providers"]
    folder = Path(provider["options"]["path"])
    assert json.loads((folder / "loopline.json").read_text())["uid"] == "loopline"


def test_monitoring_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"stack\.scrape_interval_s"):
        _settings(stack__scrape_interval_s="0")
    with pytest.raises(ConfigError, match=r"stack\.prometheus_port"):
        _settings(stack__prometheus_port="70000")


def test_a_missing_deploy_dir_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stack\.deploy_dir"):
        deploy_dir(_settings(stack__deploy_dir=str(tmp_path)))
