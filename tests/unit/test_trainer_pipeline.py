"""Training end to end on simulated history: bootstrap, parity, gate, publish, rollback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from fraud_repo import FRAUD_FEATURES
from synthetic_fraud import synthetic_history
from trainer_support import Announcements, training_set_of

from loopline.contracts.errors import DeliveryError
from loopline.contracts.schemas import ModelUpdate, Outcome
from loopline.contracts.settings import TrainerSettings
from loopline.featurecore.entity_state import replay
from loopline.registry.directory import DirectoryRegistry
from loopline.trainer.dataset import TrainingSet
from loopline.trainer.errors import InsufficientDataError, ParityError
from loopline.trainer.export import (
    float32_exact_thresholds,
    native_probabilities,
    onnx_probabilities,
    to_onnx,
)
from loopline.trainer.pipeline import Trainer

SETTINGS = TrainerSettings(
    num_trees=80,
    early_stopping_rounds=15,
    num_threads=1,
    min_rows=200,
    min_positives=10,
    window_hours=48,
)


@pytest.fixture(scope="module")
def history() -> tuple[list, list[Outcome]]:
    return synthetic_history(n_cards=350, hours=48, seed=11)


@pytest.fixture(scope="module")
def training_set(history: tuple[list, list[Outcome]]) -> TrainingSet:
    txs, outcomes = history
    return training_set_of(txs, outcomes, window_hours=48)


def test_bootstrap_rows_are_point_in_time_replay_rows(
    history: tuple, training_set: TrainingSet
) -> None:
    txs, outcomes = history
    fraud = {o.event_id for o in outcomes}
    # Shuffled input: the builder sorts by event time before replaying.
    shuffled = list(reversed(txs))
    again = training_set_of(shuffled, outcomes, window_hours=48)
    assert again.ids == training_set.ids
    np.testing.assert_array_equal(again.features, training_set.features)
    expected = {
        str(r.event["event_id"]): np.asarray(r.features, dtype=np.float32)
        for r in replay(FRAUD_FEATURES, (t.as_record() for t in txs))
    }
    for i in range(0, len(training_set), 97):
        np.testing.assert_array_equal(training_set.features[i], expected[training_set.ids[i]])
    labels = dict(zip(training_set.ids, training_set.labels.tolist(), strict=True))
    assert {e for e, y in labels.items() if y == 1} == fraud & set(labels)
    # Events younger than the maturity window with no outcome are left out, not called legit.
    newest = max(t.event_time for t in txs)
    young = {t.event_id for t in txs if t.event_time > newest - 3_600_000} - fraud
    assert young and not young & set(labels)
    assert training_set.dropped["immature"] == len(young)


def test_bootstrap_training_publishes_a_verified_champion(
    tmp_path: Path, training_set: TrainingSet
) -> None:
    reg = DirectoryRegistry(tmp_path)
    sent = Announcements()
    report = Trainer(SETTINGS, reg, announcer=sent).train(training_set)

    assert report.accepted and report.version == "1" and report.source == "bootstrap"
    assert report.metrics["auc"] > 0.8
    assert report.parity_max_abs_diff <= 1e-5
    champ = reg.resolve("fraud", "champion")
    assert champ is not None
    m = champ.manifest
    assert (m.status, m.feature_set, m.fingerprint) == (
        "candidate",
        "fraud",
        FRAUD_FEATURES.fingerprint,
    )
    assert m.feature_names == list(FRAUD_FEATURES.model_features)
    assert m.training_window_ms == list(training_set.window_ms)
    assert sum(m.rows[k] for k in ("train", "valid", "holdout")) == len(training_set)
    assert m.code_version.startswith("0.")
    # Serving's load check: a fresh session reproduces the golden scores.
    assert len(m.golden_inputs) == SETTINGS.golden_rows
    scores = onnx_probabilities(champ.read_verified(), np.asarray(m.golden_inputs))
    np.testing.assert_allclose(scores, m.golden_scores, atol=1e-7)
    assert [(u.version, u.alias, u.action, u.sha256) for u in sent.sent] == [
        ("1", "champion", "publish", m.sha256)
    ]
    assert sent.sent[0].uri.startswith("file://") and sent.sent[0].uri.endswith("/1/model.onnx")


def test_broken_export_is_refused_and_nothing_is_published(
    tmp_path: Path, training_set: TrainingSet
) -> None:
    def stale_export(booster: lgb.Booster, fs: object) -> bytes:
        # A plausible bug: exporting the model without its last tree.
        n = booster.current_iteration()
        return to_onnx(lgb.Booster(model_str=booster.model_to_string(num_iteration=n - 1)), fs)  # type: ignore[arg-type]

    reg = DirectoryRegistry(tmp_path)
    sent = Announcements()
    with pytest.raises(ParityError) as info:
        Trainer(SETTINGS, reg, announcer=sent, exporter=stale_export).train(training_set)
    assert info.value.max_abs_diff > SETTINGS.parity_tolerance
    assert reg.versions("fraud") == [] and sent.sent == []


def test_worse_challenger_is_kept_as_rejected_and_force_overrides(
    tmp_path: Path, training_set: TrainingSet
) -> None:
    reg = DirectoryRegistry(tmp_path)
    sent = Announcements()
    trainer = Trainer(SETTINGS, reg, announcer=sent)
    trainer.train(training_set)
    # Same holdout, but the challenger learns from scrambled labels.
    n_train = round(len(training_set) * 0.7)
    labels = training_set.labels.copy()
    labels[:n_train] = np.random.default_rng(0).permutation(labels[:n_train])
    scrambled = dataclasses.replace(training_set, labels=labels)

    report = trainer.train(scrambled)
    assert not report.accepted and report.version == "2"
    assert report.decision.startswith("rejected: ") and "auc" in report.decision
    assert report.champion_version == "1"
    assert report.metrics["auc"] < report.champion_metrics["auc"] - SETTINGS.gate_auc_margin  # type: ignore[index]
    v2 = reg.get("fraud", "2").manifest
    assert (v2.status, v2.decision, v2.parent_version) == ("rejected", report.decision, "1")
    assert reg.aliases("fraud") == {"champion": "1"}
    assert len(sent.sent) == 1

    forced = trainer.train(scrambled, force=True)
    assert forced.accepted and forced.decision.startswith("forced: ")
    assert reg.aliases("fraud") == {"champion": "3"}
    assert reg.get("fraud", "3").manifest.extra["gate"]["forced"] is True


def test_rollback_restores_the_previous_champion(tmp_path: Path, training_set: TrainingSet) -> None:
    reg = DirectoryRegistry(tmp_path)
    trainer = Trainer(
        dataclasses.replace(
            SETTINGS, gate_auc_margin=1.0, gate_log_loss_margin=1.0, gate_brier_margin=1.0
        ),
        reg,
    )
    trainer.train(training_set)
    second = trainer.train(training_set.rows(len(training_set) // 4, len(training_set)))
    assert second.accepted and reg.aliases("fraud")["champion"] == "2"
    assert reg.rollback("fraud") == "1"
    assert reg.resolve("fraud", "champion").manifest.version == "1"  # type: ignore[union-attr]


def test_too_little_data_is_refused(tmp_path: Path, training_set: TrainingSet) -> None:
    reg = DirectoryRegistry(tmp_path)
    with pytest.raises(InsufficientDataError):
        Trainer(SETTINGS, reg).train(training_set.rows(0, 150))
    assert reg.versions("fraud") == []


def test_float32_exact_thresholds_fix_a_real_export_mismatch() -> None:
    # Two adjacent float32 values: LightGBM splits between them in double
    # precision, and a plain float32 threshold rounds onto the upper value.
    a = np.float32(9.77)
    b = np.nextafter(a, np.float32(-np.inf))
    rng = np.random.default_rng(0)
    x = np.where(rng.random(400) < 0.5, a, b).astype(np.float32)
    features = np.column_stack([x, rng.random(400).astype(np.float32)])
    params = {"objective": "binary", "verbosity": -1, "min_data_in_leaf": 5, "num_leaves": 4}
    booster = lgb.train(params, lgb.Dataset(features, (x == a).astype(int)), num_boost_round=5)
    exact = lgb.Booster(model_str=float32_exact_thresholds(booster.model_to_string()))
    native = native_probabilities(booster, features)
    np.testing.assert_array_equal(native_probabilities(exact, features), native)

    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    def convert(b: lgb.Booster) -> bytes:
        types = [("input", FloatTensorType([None, 2]))]
        return convert_lightgbm(
            b, initial_types=types, target_opset=15, zipmap=False
        ).SerializeToString()

    assert np.abs(onnx_probabilities(convert(booster), features) - native).max() > 0.1
    assert np.abs(onnx_probabilities(convert(exact), features) - native).max() < 1e-6


def test_a_failed_announcement_is_an_error_that_says_what_is_true(
    tmp_path: Path, training_set: TrainingSet
) -> None:
    class Down:
        def announce(self, update: ModelUpdate) -> None:
            raise DeliveryError("model-updates: not acknowledged within 30 s")

    reg = DirectoryRegistry(tmp_path)
    with pytest.raises(DeliveryError, match=r"v1 is champion in the registry.*promote 1"):
        Trainer(SETTINGS, reg, announcer=Down()).train(training_set)
    assert reg.aliases("fraud") == {"champion": "1"}
