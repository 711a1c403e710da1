"""`loopline models rollout` announces every change on the real model-updates topic."""

from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path

from loopline.contracts.schemas import LabeledExample, ModelUpdate, decode, encode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.registry.directory import DirectoryRegistry, ManifestFields
from loopline.rollout.plan import RolloutPlan
from loopline.trainer import commands
from loopline.trainer.kafka_io import delivering_producer, read_history
from loopline.trainer.rollout import commands as rollout_commands


def run(settings: Settings, *argv: str) -> int:
    p = argparse.ArgumentParser(prog="loopline")
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    rollout_commands.register(sub)
    args = p.parse_args(argv)
    args.settings = settings
    return args.func(args)


def test_rollout_changes_are_announced_with_the_plan(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        isolated_settings,
        registry=dataclasses.replace(isolated_settings.registry, path=tmp_path / "registry"),
    )
    model = model_of(settings).name
    reg = DirectoryRegistry(settings.registry.path)
    for i in range(3):
        reg.publish(model, f"onnx-{i}".encode(), ManifestFields("fraud", "f" * 64, ["a"]))
    reg.set_alias(model, "champion", "1")

    assert run(settings, "models", "rollout", "start", "2", "--mode", "canary") == 0
    assert run(settings, "models", "rollout", "abort", "--reason", "injected errors") == 0
    assert run(settings, "models", "rollout", "start", "3", "--mode", "shadow") == 0
    assert run(settings, "models", "rollout", "promote") == 0

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


def labeled_examples(model: str, version: str, n: int, t_ms: int, signal: float) -> list[bytes]:
    rng = random.Random(version)
    out = []
    for i in range(n):
        y = int(i % 3 == 0)
        score = min(max(0.5 + (signal if y else -signal) + rng.gauss(0, 0.15), 0.01), 0.99)
        ex = LabeledExample(
            f"r-{version}-{i}", f"e-{i}", model, version, "f" * 64, {}, [], score, y, t_ms, t_ms
        )
        out.append(encode(ex))
    return out


def test_watch_promotes_on_labels_and_aborts_a_worse_candidate(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        isolated_settings,
        registry=dataclasses.replace(isolated_settings.registry, path=tmp_path / "registry"),
    )
    model = model_of(settings).name
    reg = DirectoryRegistry(settings.registry.path)
    for i in range(3):
        reg.publish(model, f"onnx-{i}".encode(), ManifestFields("fraud", "f" * 64, ["a"]))
    reg.set_alias(model, "champion", "1")
    watch = ("models", "rollout", "watch", "--min-labels", "60", "--decide-every-s", "0.5")
    producer = delivering_producer(settings.kafka)
    try:
        assert run(settings, "models", "rollout", "start", "2", "--mode", "canary") == 0
        plan = reg.rollout(model)
        assert plan is not None
        after = plan.created_ms + 1
        # Old labels of a bad v2 (before the plan) must not count; then fair evidence.
        records = labeled_examples(model, "2", 100, plan.created_ms - 10_000, -0.3)
        records += labeled_examples(model, "1", 80, after, 0.25)
        records += labeled_examples(model, "2", 80, after, 0.27)
        for raw in records:
            producer.send_and_wait(topics.labeled, raw, None)
        assert run(settings, *watch, "--max-seconds", "90") == 0
        done = reg.rollout(model)
        assert done is not None and done.state == "promoted", done
        assert done.reason.startswith("policy: candidate not worse after")
        assert reg.aliases(model) == {"champion": "2"}

        assert run(settings, "models", "rollout", "start", "3", "--mode", "shadow") == 0
        plan = reg.rollout(model)
        assert plan is not None
        after = plan.created_ms + 1
        for raw in labeled_examples(model, "2", 80, after, 0.25) + labeled_examples(
            model, "3", 80, after, 0.0
        ):
            producer.send_and_wait(topics.labeled, raw, None)
        # Without options the watch takes its thresholds from the rollout settings.
        configured = dataclasses.replace(
            settings,
            rollout=dataclasses.replace(settings.rollout, min_labels=60, decide_every_s=0.5),
        )
        assert run(configured, "models", "rollout", "watch", "--max-seconds", "90") == 0
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
