"""A changed computation: the champion's applied version serves until a new model is champion."""

from __future__ import annotations

from pathlib import Path

import model_factory
import pytest
from fraud_repo import FRAUD_FEATURES, changed_fraud_features
from prometheus_client import CollectorRegistry

from loopline.contracts.errors import UnavailableError
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.state import AppliedState
from loopline.registry.directory import DirectoryRegistry
from loopline.serving.feature_version import VersionSwitch, serving_feature_set
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model_manager import ModelManager
from loopline.serving.model_slot import ModelSlot


def _apply(root: Path, *versions: FeatureSet) -> AppliedState:
    state = AppliedState(root)
    for i, fs in enumerate(versions):
        state.record("fraud", fs.fingerprint, fs.describe(), now_ms=i)
    return state


def test_the_champions_version_serves_until_a_model_of_the_new_one_is_champion(
    tmp_path: Path,
) -> None:
    new = changed_fraud_features()
    assert new.fingerprint != FRAUD_FEATURES.fingerprint
    registry = DirectoryRegistry(tmp_path)
    model_factory.publish(registry)  # v1, trained on the old version, champion
    _apply(tmp_path, FRAUD_FEATURES, new)
    served = serving_feature_set(new, registry, tmp_path, "fraud", "champion")
    assert served.fingerprint == FRAUD_FEATURES.fingerprint  # rebuilt from its description
    model_factory.publish(registry, fs=new, seed=1)  # v2 of the new version becomes champion
    served = serving_feature_set(new, registry, tmp_path, "fraud", "champion")
    assert served.fingerprint == new.fingerprint


def test_definitions_never_applied_are_refused_when_no_applied_champion_pins_another(
    tmp_path: Path,
) -> None:
    registry = DirectoryRegistry(tmp_path)
    _apply(tmp_path, FRAUD_FEATURES)
    with pytest.raises(UnavailableError, match="never applied"):
        serving_feature_set(changed_fraud_features(), registry, tmp_path, "fraud", "champion")
    # Without any applied state (a repo never applied), serving warns and goes on.
    other = tmp_path / "fresh"
    other.mkdir()
    assert (
        serving_feature_set(changed_fraud_features(), registry, other, "fraud", "champion")
        == changed_fraud_features()
    )


def test_a_champion_of_another_applied_version_asks_for_a_restart(tmp_path: Path) -> None:
    new = changed_fraud_features()
    registry = DirectoryRegistry(tmp_path)
    model_factory.publish(registry)
    _apply(tmp_path, FRAUD_FEATURES, new)
    switch = VersionSwitch(tmp_path, FRAUD_FEATURES)
    manager = ModelManager(
        registry=registry,
        model_name="fraud",
        alias="champion",
        feature_set=FRAUD_FEATURES,
        slot=ModelSlot(),
        metrics=ServingMetrics(CollectorRegistry()),
        golden_tolerance=1e-4,
        on_other_feature_set=switch.consider,
    )
    assert manager.sync().result == "loaded"
    # A model of an unapplied computation is refused and changes nothing.
    model_factory.publish(registry, seed=2, fingerprint="0" * 64)
    assert manager.sync().result == "refused" and not switch.requested.is_set()
    # The new applied version's model: refused in this process, which asks for a restart.
    model_factory.publish(registry, fs=new, seed=1)
    assert manager.sync().result == "refused"
    assert switch.requested.is_set()
    assert manager.slot.models()[0].version == "1"  # the old champion keeps serving meanwhile
