"""`loopline models rollout ...` through argparse, against a temporary registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from rollout_support import registry_with_versions, rollout_cli, with_registry

from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError, ModelError, ModelNotFoundError
from loopline.contracts.schemas import LabeledExample
from loopline.contracts.settings import Settings
from loopline.featurerepo.loader import model_of
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.rollout.policy import RolloutPolicy
from loopline.trainer.rollout import commands as rollout_commands
from loopline.trainer.rollout.evidence import count_example


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return with_registry(load_settings(env={}), tmp_path / "registry")


@pytest.fixture
def reg(settings: Settings) -> DirectoryRegistry:
    return registry_with_versions(settings.registry.path, model_of(settings).name)


def test_start_status_promote(
    settings: Settings, reg: DirectoryRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    model = model_of(settings).name
    assert rollout_cli(settings, "status") == 0
    assert "no rollout" in capsys.readouterr().out

    start = ("start", "2", "--mode", "canary", "--share", "0.25")
    assert rollout_cli(settings, *start, "--no-announce") == 0
    out = capsys.readouterr().out
    assert "v2 in canary" in out and "25.0% of entities" in out
    plan = reg.rollout(model)
    assert plan is not None and plan.running and plan.canary_share == 0.25
    assert (plan.candidate_version, plan.champion_version) == ("2", "1")
    assert reg.aliases(model) == {"champion": "1", "candidate": "2"}

    # One rollout at a time.
    with pytest.raises(ModelError, match="running"):
        rollout_cli(settings, "start", "3", "--no-announce")

    assert rollout_cli(settings, "status") == 0
    out = capsys.readouterr().out
    for text in (f"rollout {plan.plan_id}", "running", "canary", "candidate=v2"):
        assert text in out

    assert rollout_cli(settings, "promote", "--no-announce") == 0
    assert "champion: v1 -> v2" in capsys.readouterr().out
    assert reg.aliases(model) == {"champion": "2"}
    done = reg.rollout(model)
    assert done is not None and done.state == "promoted" and done.plan_id == plan.plan_id

    assert rollout_cli(settings, "status", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["plan"]["state"] == "promoted"
    assert [p["state"] for p in record["history"]] == ["running", "promoted"]
    assert record["aliases"] == {"champion": "2"}

    with pytest.raises(ConfigError, match="no running rollout"):
        rollout_cli(settings, "promote", "--no-announce")


def test_shadow_start_then_abort_keeps_the_champion(
    settings: Settings, reg: DirectoryRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    model = model_of(settings).name
    assert rollout_cli(settings, "start", "3", "--no-announce") == 0
    plan = reg.rollout(model)
    assert plan is not None and (plan.mode, plan.shadow_share) == ("shadow", 1.0)
    capsys.readouterr()
    # A reason is required to abort.
    with pytest.raises(SystemExit):
        rollout_cli(settings, "abort", "--no-announce")
    assert rollout_cli(settings, "abort", "--reason", "too slow", "--no-announce") == 0
    assert "champion stays v1" in capsys.readouterr().out
    assert reg.aliases(model) == {"champion": "1"}
    assert rollout_cli(settings, "status") == 0
    out = capsys.readouterr().out
    assert "aborted" in out and "too slow" in out


def test_start_refuses_what_cannot_be_rolled_out(
    settings: Settings, reg: DirectoryRegistry
) -> None:
    with pytest.raises(ConfigError, match="already the champion"):
        rollout_cli(settings, "start", "champion", "--no-announce")
    with pytest.raises(ModelNotFoundError):
        rollout_cli(settings, "start", "9", "--no-announce")
    with pytest.raises(SystemExit):  # argparse: not a mode
        rollout_cli(settings, "start", "2", "--mode", "linear")
    with pytest.raises(ConfigError):
        rollout_cli(settings, "start", "2", "--share", "1.5", "--no-announce")
    reg.remove_alias(model_of(settings).name, "champion")
    with pytest.raises(ModelNotFoundError, match="no champion"):
        rollout_cli(settings, "start", "2", "--no-announce")
    assert reg.rollout(model_of(settings).name) is None


def test_register_needs_the_models_group() -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    with pytest.raises(ConfigError, match="models"):
        rollout_commands.register(sub)


def test_watch_needs_a_running_plan(settings: Settings, reg: DirectoryRegistry) -> None:
    with pytest.raises(ConfigError, match="no running rollout"):
        rollout_cli(settings, "watch", "--max-seconds", "1")


def test_count_example_counts_only_the_plans_examples() -> None:
    plan = RolloutPlan.start("fraud", candidate="3", champion="2", mode="shadow", created_ms=1000)
    policy = RolloutPolicy()

    def example(model: str, version: str, t: int) -> LabeledExample:
        return LabeledExample("r", "e", model, version, "fp", {}, [], 0.7, 1, t, t)

    counted = [
        count_example(policy, plan, example(m, v, t))
        for m, v, t in (
            ("fraud", "3", 1000),
            ("fraud", "2", 5000),
            ("fraud", "3", 999),
            ("other", "3", 5000),
            ("fraud", "1", 5000),
        )
    ]
    assert counted == [True, True, False, False, False]
    assert policy.arms["candidate"].labels == 1 and policy.arms["champion"].labels == 1
