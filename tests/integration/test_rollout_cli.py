"""`loopline models rollout` announces every change on the real model-updates topic."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from loopline.contracts.registry import DirectoryRegistry, ManifestFields
from loopline.contracts.rollout import RolloutPlan
from loopline.contracts.schemas import ModelUpdate, decode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.trainer import commands, rollout_commands
from loopline.trainer.kafka_io import read_history


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
    model = settings.trainer.model_name
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
