"""Rollout of a regression model: promote or abort on per-arm RMSE and MAE (relative
margins), the watcher's gauges, and the task passed through its config."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from rollout_support import ListSource, registry_with_versions

from loopline.contracts import metric_names as mn
from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import LabeledExample, encode
from loopline.contracts.settings import RolloutSettings, Settings
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.rollout.policy import RolloutPolicy
from loopline.trainer.rollout.watch_loop import RolloutWatchConfig
from loopline.trainer.rollout.watch_metrics import RolloutMetrics
from loopline.trainer.rollout.watcher import RolloutWatcher

pytestmark = pytest.mark.unit

MODEL = "price"


def feed(policy: RolloutPolicy, arm: str, n: int, noise: float, seed: int = 0) -> None:
    rng = random.Random(f"{arm}-{seed}")
    for _ in range(n):
        target = rng.gauss(200.0, 50.0)
        policy.update_label(arm, target + rng.gauss(0.0, noise), target)


def regression_policy(**kw: float) -> RolloutPolicy:
    return RolloutPolicy(min_labels=500, task="regression", **kw)  # type: ignore[arg-type]


def test_a_candidate_as_good_as_the_champion_is_promoted() -> None:
    policy = regression_policy()
    feed(policy, "champion", 2000, noise=10.0, seed=1)
    feed(policy, "candidate", 2000, noise=9.0, seed=2)
    decision = policy.decide()
    assert decision.action == "promote", decision.reason
    assert "RMSE" in decision.reason and "MAE" in decision.reason
    cand, champ = decision.evidence["candidate"], decision.evidence["champion"]
    assert 8.0 < cand["rmse"] < champ["rmse"] < 11.0
    assert "auc" not in cand and "log_loss" not in cand


def test_a_candidate_worse_by_more_than_the_rmse_margin_is_aborted() -> None:
    policy = regression_policy(rmse_margin=0.02, mae_margin=0.5)
    feed(policy, "champion", 2000, noise=10.0)
    feed(policy, "candidate", 2000, noise=12.0)  # ~20 % worse
    decision = policy.decide()
    assert decision.action == "abort"
    assert decision.reason.startswith("quality regression: candidate RMSE")


def test_the_mae_margin_is_checked_too() -> None:
    policy = regression_policy(rmse_margin=1.0, mae_margin=0.02)
    feed(policy, "champion", 1000, noise=10.0)
    feed(policy, "candidate", 1000, noise=12.0)
    decision = policy.decide()
    assert decision.action == "abort"
    assert decision.reason.startswith("quality regression: candidate MAE")


def test_the_margins_are_relative() -> None:
    # The same 5 % gap promotes under a 10 % margin and aborts under a 2 % one,
    # whatever the target's scale.
    for scale in (1.0, 1000.0):
        for margin, action in ((0.10, "promote"), (0.02, "abort")):
            policy = regression_policy(rmse_margin=margin, mae_margin=margin)
            for i in range(600):
                sign = 1.0 if i % 2 else -1.0
                policy.update_label("champion", scale * (1.0 + sign), scale)
                policy.update_label("candidate", scale * (1.0 + 1.05 * sign), scale)
            assert policy.decide().action == action, (scale, margin)


def test_it_waits_for_min_labels_on_both_arms() -> None:
    policy = regression_policy()
    feed(policy, "champion", 2000, noise=10.0)
    feed(policy, "candidate", 499, noise=10.0)
    decision = policy.decide()
    assert decision.action == "continue" and "candidate 499" in decision.reason


def test_policy_from_settings_takes_the_margins_and_task() -> None:
    s = RolloutSettings(rmse_margin=0.05, mae_margin=0.07)
    policy = RolloutPolicy.from_settings(s, task="regression")
    assert (policy.task, policy.rmse_margin, policy.mae_margin) == ("regression", 0.05, 0.07)
    assert RolloutPolicy.from_settings(s).task == "binary"
    with pytest.raises(ConfigError, match="task must be one of"):
        RolloutPolicy(task="ranking")


def test_watch_config_takes_task_as_an_override() -> None:
    settings = replace(Settings(), rollout=RolloutSettings(min_labels=7, rmse_margin=0.1))
    cfg = RolloutWatchConfig.from_settings(settings, task="regression", model="price")
    policy = cfg.new_policy()
    assert (cfg.model, policy.task, policy.min_labels, policy.rmse_margin) == (
        "price",
        "regression",
        7,
        0.1,
    )
    assert RolloutWatchConfig.from_settings(Settings()).task == "binary"
    with pytest.raises(ConfigError, match="rollout: task must be one of"):
        RolloutWatchConfig.from_settings(Settings(), task="ranking")


# -- the watcher end to end on a temporary registry -------------------------------------
def records(version: str, n: int, noise: float, t_ms: int) -> list[bytes]:
    rng = random.Random(f"{version}-{noise}")
    out = []
    for i in range(n):
        target = rng.gauss(200.0, 50.0)
        ex = LabeledExample(
            f"r{version}-{i}", f"e{i}", MODEL, version, "f" * 64, {}, [],
            target + rng.gauss(0.0, noise), target, t_ms, t_ms,
        )  # fmt: skip
        out.append(encode(ex))
    return out


@pytest.fixture
def reg(tmp_path: Path) -> DirectoryRegistry:
    return registry_with_versions(tmp_path, MODEL, feature_set="fs")


def run_plan(reg: DirectoryRegistry, candidate_noise: float) -> tuple[RolloutWatcher, str]:
    plan = RolloutPlan.start(MODEL, candidate="2", champion="1", mode="shadow", created_ms=1_000)
    reg.start_rollout(plan)
    source = ListSource()
    cfg = RolloutWatchConfig(MODEL, RolloutSettings(min_labels=200), task="regression")
    metrics = RolloutMetrics(CollectorRegistry())
    watcher = RolloutWatcher(
        reg, MODEL, open_source=lambda _: source, new_policy=cfg.new_policy, metrics=metrics
    )
    assert watcher.tick() is None  # follows the plan
    source.pending = records("1", 300, 10.0, 2_000) + records("2", 300, candidate_noise, 2_000)
    watcher.pump(0.0)
    end = watcher.tick()
    assert end is not None and end.finished is not None
    return watcher, end.finished.state


def gauge(watcher: RolloutWatcher, metric: mn.Metric, arm: str) -> float | None:
    return watcher.metrics.registry.get_sample_value(metric.series, {"model": MODEL, "arm": arm})


def test_the_watcher_promotes_on_rmse_and_exports_the_gauges(reg: DirectoryRegistry) -> None:
    watcher, state = run_plan(reg, candidate_noise=10.0)
    assert state == "promoted"
    assert reg.aliases(MODEL)["champion"] == "2"
    rmse, mae = (
        gauge(watcher, mn.ROLLOUT_ARM_RMSE, "candidate"),
        gauge(watcher, mn.ROLLOUT_ARM_MAE, "candidate"),
    )
    assert rmse is not None and 8.0 < rmse < 12.0
    assert mae is not None and 6.0 < mae < rmse
    # A regression watcher exports no AUC series.
    assert gauge(watcher, mn.ROLLOUT_ARM_AUC, "candidate") is None


def test_the_watcher_aborts_a_worse_candidate(reg: DirectoryRegistry) -> None:
    watcher, state = run_plan(reg, candidate_noise=20.0)
    assert state == "aborted"
    assert reg.aliases(MODEL)["champion"] == "1"
    assert "RMSE" in (watcher.last_decision.reason if watcher.last_decision else "")


def test_binary_metrics_have_no_regression_series() -> None:
    metrics = RolloutMetrics(CollectorRegistry())
    metrics.evidence(MODEL, {"champion": {"labels": 3, "auc": 0.9, "log_loss": 0.3}})
    names = {f.name for f in metrics.registry.collect()}
    assert mn.ROLLOUT_ARM_RMSE.name not in names and mn.ROLLOUT_ARM_AUC.name in names
    metrics.evidence(MODEL, {}, "regression")
    value = metrics.registry.get_sample_value(
        mn.ROLLOUT_ARM_RMSE.series, {"model": MODEL, "arm": "candidate"}
    )
    assert value is not None and math.isnan(value)
