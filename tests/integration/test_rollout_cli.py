"""`loopline models rollout` announces every change on the real model-updates topic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from rollout_support import labeled_examples, registry_with_versions, rollout_cli, with_registry

from loopline.contracts.schemas import ModelUpdate, decode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.trainer.kafka_io import delivering_producer, read_history


@pytest.fixture
def settings(isolated_settings: Settings, tmp_path: Path) -> Settings:
    return with_registry(isolated_settings, tmp_path / "registry")


@pytest.fixture
def reg(settings: Settings) -> DirectoryRegistry:
    return registry_with_versions(settings.registry.path, model_of(settings).name)


def labeled(model: str, version: str, n: int, t_ms: int, signal: float) -> list[bytes]:
    return labeled_examples(
        model,
        version,
        n,
        t_ms,
        signal,
        seed=version,
        request_id="r-{version}-{i}",
        event_id="e-{i}",
    )


def test_rollout_changes_are_announced_with_the_plan(
    settings: Settings, reg: DirectoryRegistry, topics: Topics
) -> None:
    model = model_of(settings).name

    assert rollout_cli(settings, "start", "2", "--mode", "canary") == 0
    assert rollout_cli(settings, "abort", "--reason", "injected errors") == 0
    assert rollout_cli(settings, "start", "3", "--mode", "shadow") == 0
    assert rollout_cli(settings, "promote") == 0

    updates = [
        decode(ModelUpdate, raw) for raw in read_history(settings.kafka, topics.model_updates)
    ]
    assert [u.action for u in updates] == ["rollout"] * 4
    assert all(u.model_name == model and u.alias == "champion" for u in updates)
    plans = [RolloutPlan.from_dict(u.plan) for u in updates]
    assert [(p.candidate_version, p.mode, p.state) for p in plans] == [
        ("2", "canary", "running"),
        ("2", "canary", "aborted"),
        ("3", "shadow", "running"),
        ("3", "shadow", "promoted"),
    ]
    assert plans[1].reason == "injected errors"
    # Each record names the champion of its moment: v1 until the promotion, then v3.
    assert [u.version for u in updates] == ["1", "1", "1", "3"]
    assert updates[-1].sha256 == reg.get(model, "3").manifest.sha256
    assert plans[-1] == reg.rollout(model)


def test_watch_promotes_on_labels_and_aborts_a_worse_candidate(
    settings: Settings, reg: DirectoryRegistry, topics: Topics
) -> None:
    model = model_of(settings).name
    watch = ("watch", "--min-labels", "60", "--decide-every-s", "0.5")
    producer = delivering_producer(settings.kafka)
    try:
        assert rollout_cli(settings, "start", "2", "--mode", "canary") == 0
        plan = reg.rollout(model)
        assert plan is not None
        after = plan.created_ms + 1
        # Old labels of a bad v2 (before the plan) must not count; then fair evidence.
        records = labeled(model, "2", 100, plan.created_ms - 10_000, -0.3)
        records += labeled(model, "1", 80, after, 0.25)
        records += labeled(model, "2", 80, after, 0.27)
        for raw in records:
            producer.send_and_wait(topics.labeled, raw, None)
        assert rollout_cli(settings, *watch, "--max-seconds", "90") == 0
        done = reg.rollout(model)
        assert done is not None and done.state == "promoted", done
        assert done.reason.startswith("policy: candidate not worse after")
        assert reg.aliases(model) == {"champion": "2"}

        assert rollout_cli(settings, "start", "3", "--mode", "shadow") == 0
        plan = reg.rollout(model)
        assert plan is not None
        after = plan.created_ms + 1
        for raw in labeled(model, "2", 80, after, 0.25) + labeled(model, "3", 80, after, 0.0):
            producer.send_and_wait(topics.labeled, raw, None)
        # Without options the watch takes its thresholds from the rollout settings.
        configured = dataclasses.replace(
            settings,
            rollout=dataclasses.replace(settings.rollout, min_labels=60, decide_every_s=0.5),
        )
        assert rollout_cli(configured, "watch", "--max-seconds", "90") == 0
        done = reg.rollout(model)
        assert done is not None and done.state == "aborted", done
        assert "quality regression" in done.reason
        assert reg.aliases(model) == {"champion": "2"}
    finally:
        producer.close()

    updates = [
        decode(ModelUpdate, raw) for raw in read_history(settings.kafka, topics.model_updates)
    ]
    states = [RolloutPlan.from_dict(u.plan).state for u in updates]
    assert states == ["running", "promoted", "running", "aborted"]
    assert [u.version for u in updates] == ["1", "2", "2", "2"]
