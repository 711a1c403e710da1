"""Publish mode: an accepted challenger becomes champion, or a rollout against the champion."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_fraud import synthetic_history, write_jsonl
from trainer_support import (
    GATE_ALWAYS_PASSES,
    Announcements,
    quick_trainer_settings,
    run_cli,
    training_set_of,
)

from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError, DeliveryError
from loopline.contracts.schemas import ModelUpdate, Outcome
from loopline.contracts.settings import RolloutSettings, Settings, TrainerSettings
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.trainer import commands
from loopline.trainer.dataset import TrainingSet
from loopline.trainer.pipeline import Trainer
from loopline.trainer.publish_policy import PublishPolicy

# Margins so wide that every challenger passes the gate: these tests are about what follows.
SETTINGS = TrainerSettings(
    num_trees=40, early_stopping_rounds=10, num_threads=1, window_hours=48, **GATE_ALWAYS_PASSES
)


@pytest.fixture(scope="module")
def history() -> tuple[list, list[Outcome]]:
    return synthetic_history(n_cards=300, hours=36, seed=5)


@pytest.fixture(scope="module")
def training_set(history: tuple[list, list[Outcome]]) -> TrainingSet:
    txs, outcomes = history
    return training_set_of(txs, outcomes, window_hours=48)


def plans(sent: list[ModelUpdate]) -> list[tuple[str, str, str]]:
    out = []
    for u in sent:
        if u.action == "rollout":
            p = RolloutPlan.from_dict(u.plan)
            out.append((p.candidate_version, p.mode, p.state))
    return out


def test_plan_for_follows_the_mode_and_shares() -> None:
    canary = PublishPolicy("canary", canary_share=0.3, shadow_share=0.5)
    shadow = dataclasses.replace(canary, mode="shadow")
    c = canary.plan_for("m", candidate="5", champion="4", plan_id="x", created_ms=7)
    s = shadow.plan_for("m", candidate="5", champion="4")
    assert c is not None and s is not None
    assert (c.mode, c.canary_share, c.shadow_share, c.plan_id, c.created_ms) == (
        "canary", 0.3, 1.0, "x", 7,
    )  # fmt: skip
    assert (s.mode, s.canary_share, s.shadow_share, s.running) == ("shadow", 0.0, 0.5, True)
    assert canary.plan_for("m", candidate="5", champion="") is None
    assert canary.plan_for("m", candidate="5", champion="4", force=True) is None
    assert PublishPolicy().plan_for("m", candidate="5", champion="4") is None
    with pytest.raises(ConfigError):
        PublishPolicy("linear")
    with pytest.raises(ConfigError):
        PublishPolicy("canary", canary_share=1.5)
    configured = RolloutSettings(publish_mode="canary", canary_share=0.05)
    assert PublishPolicy.from_settings(configured) == PublishPolicy("canary", 0.05, 1.0)
    assert PublishPolicy.from_settings(configured, mode="champion").mode == "champion"


def test_canary_mode_starts_a_plan_and_leaves_the_champion(
    tmp_path: Path, training_set: TrainingSet
) -> None:
    reg = DirectoryRegistry(tmp_path)
    sent = Announcements()
    canary = PublishPolicy("canary", canary_share=0.25)
    trainer = Trainer(SETTINGS, reg, announcer=sent, publish=canary)

    # No champion yet: nothing to roll out against, so v1 becomes champion.
    first = trainer.train(training_set)
    assert (first.accepted, first.published_as, first.rollout_plan_id) == (True, "champion", "")
    assert reg.aliases("fraud") == {"champion": "1"} and reg.rollout("fraud") is None

    second = trainer.train(training_set)
    plan = reg.rollout("fraud")
    assert plan is not None and plan.running
    assert (plan.candidate_version, plan.champion_version, plan.mode, plan.canary_share) == (
        "2", "1", "canary", 0.25,
    )  # fmt: skip
    assert reg.aliases("fraud") == {"champion": "1", "candidate": "2"}
    assert (second.accepted, second.published_as, second.rollout_plan_id) == (
        True, "canary", plan.plan_id,
    )  # fmt: skip
    assert "canary rollout (25.0% of entities" in second.decision
    assert "champion v1, which stays" in second.decision
    assert second.announced
    assert [(u.action, u.version, u.alias) for u in sent.sent] == [
        ("publish", "1", "champion"),
        ("rollout", "1", "champion"),  # the record names the champion, holds the plan
    ]
    assert RolloutPlan.from_dict(sent.sent[-1].plan) == plan
    # The report survives JSON (the CLI's --json and the retrain ledger).
    assert json.loads(json.dumps(second.as_dict()))["rollout_plan_id"] == plan.plan_id


def test_a_new_version_supersedes_the_running_plan(
    tmp_path: Path, training_set: TrainingSet
) -> None:
    reg = DirectoryRegistry(tmp_path)
    sent = Announcements()
    Trainer(SETTINGS, reg, announcer=sent).train(training_set)  # v1 champion
    Trainer(SETTINGS, reg, announcer=sent, publish=PublishPolicy("canary")).train(training_set)
    first_plan = reg.rollout("fraud")
    assert first_plan is not None and first_plan.candidate_version == "2"

    shadow = Trainer(SETTINGS, reg, announcer=sent, publish=PublishPolicy("shadow", 0.1, 0.5))
    third = shadow.train(training_set)
    plan = reg.rollout("fraud")
    assert plan is not None and plan.running and plan.plan_id == third.rollout_plan_id
    assert (plan.candidate_version, plan.mode, plan.shadow_share) == ("3", "shadow", 0.5)
    assert third.superseded_plan_ids == (first_plan.plan_id,)
    history = reg.rollout_history("fraud")
    assert [(p.plan_id, p.state) for p in history] == [
        (first_plan.plan_id, "running"),
        (first_plan.plan_id, "aborted"),
        (plan.plan_id, "running"),
    ]
    assert history[1].reason == "superseded by v3"
    assert reg.aliases("fraud") == {"champion": "1", "candidate": "3"}
    assert plans(sent.sent) == [
        ("2", "canary", "running"),
        ("2", "canary", "aborted"),
        ("3", "shadow", "running"),
    ]

    # --force goes straight to champion, and ends the plan it makes meaningless.
    forced = shadow.train(training_set, force=True)
    assert (forced.published_as, forced.rollout_plan_id) == ("champion", "")
    assert forced.superseded_plan_ids == (plan.plan_id,)
    assert reg.aliases("fraud") == {"champion": "4"}
    ended = reg.rollout("fraud")
    assert ended is not None and (ended.state, ended.reason) == ("aborted", "superseded by v4")
    assert [(u.action, u.version) for u in sent.sent[-2:]] == [("rollout", "4"), ("publish", "4")]


def test_a_rejected_challenger_starts_no_rollout(tmp_path: Path, training_set: TrainingSet) -> None:
    reg = DirectoryRegistry(tmp_path)
    Trainer(SETTINGS, reg).train(training_set)
    strict = dataclasses.replace(SETTINGS, gate_auc_margin=0.0)
    labels = training_set.labels.copy()
    n_train = round(len(training_set) * 0.7)
    labels[:n_train] = np.random.default_rng(0).permutation(labels[:n_train])
    scrambled = dataclasses.replace(training_set, labels=labels)

    report = Trainer(strict, reg, publish=PublishPolicy("canary")).train(scrambled)
    assert not report.accepted and report.published_as == "" and report.rollout_plan_id == ""
    assert reg.rollout("fraud") is None and reg.aliases("fraud") == {"champion": "1"}


def test_a_failed_rollout_announcement_says_what_is_true(
    tmp_path: Path, training_set: TrainingSet
) -> None:
    class Down:
        def announce(self, update: ModelUpdate) -> None:
            if update.action == "rollout":
                raise DeliveryError("model-updates: not acknowledged within 30 s")

    reg = DirectoryRegistry(tmp_path)
    trainer = Trainer(SETTINGS, reg, announcer=Down(), publish=PublishPolicy("canary"))
    trainer.train(training_set)
    with pytest.raises(DeliveryError, match=r"rollout \w+ of v2 is running in the registry"):
        trainer.train(training_set)
    plan = reg.rollout("fraud")
    assert plan is not None and plan.running and reg.aliases("fraud")["champion"] == "1"


def test_a_registry_without_rollouts_cannot_publish_as_canary(tmp_path: Path) -> None:
    class AliasesOnly:
        """A registry that holds versions and aliases but no rollout plans."""

    with pytest.raises(ConfigError, match="rollout plans"):
        Trainer(SETTINGS, AliasesOnly(), publish=PublishPolicy("canary"))  # type: ignore[arg-type]
    Trainer(SETTINGS, AliasesOnly())  # type: ignore[arg-type]  # champion mode needs none


# -- the CLI --------------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = quick_trainer_settings(load_settings(env={}), tmp_path, **GATE_ALWAYS_PASSES)
    rollout = dataclasses.replace(s.rollout, publish_mode="shadow", shadow_share=0.5)
    return dataclasses.replace(s, rollout=rollout)


def run(settings: Settings, *argv: str) -> int:
    return run_cli(settings, argv, commands.register)


def test_train_publish_as_overrides_the_configured_mode(
    tmp_path: Path,
    settings: Settings,
    history: tuple[list, list[Outcome]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    txs, outcomes = history
    boot = [
        "--bootstrap-events",
        str(write_jsonl(tmp_path / "events.jsonl", txs)),
        "--bootstrap-outcomes",
        str(write_jsonl(tmp_path / "outcomes.jsonl", outcomes)),
    ]
    reg = DirectoryRegistry(settings.registry.path)
    assert run(settings, "train", *boot, "--no-announce") == 0  # v1: champion (none before)
    capsys.readouterr()

    assert run(settings, "train", *boot, "--no-announce", "--publish-as", "canary") == 0
    out = capsys.readouterr().out
    plan = reg.rollout("fraud")
    assert plan is not None and (plan.mode, plan.candidate_version) == ("canary", "2")
    assert f"v2 runs as a canary rollout (plan {plan.plan_id})" in out
    assert reg.aliases("fraud")["champion"] == "1"

    # Without the option the configured mode applies: shadow at 50 %, superseding v2's plan.
    assert run(settings, "train", *boot, "--no-announce", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["published_as"], report["superseded_plan_ids"]) == ("shadow", [plan.plan_id])
    current = reg.rollout("fraud")
    assert current is not None and (current.mode, current.shadow_share) == ("shadow", 0.5)

    assert run(settings, "train", *boot, "--no-announce", "--publish-as", "champion") == 0
    assert reg.aliases("fraud") == {"champion": "4"}
    with pytest.raises(SystemExit):
        run(settings, "train", *boot, "--publish-as", "linear")
