"""Model loading and hot swap logic: integrity, fingerprint refusal, golden check, rollback."""

from __future__ import annotations

import json

import model_factory
import pytest
from fraud_repo import FRAUD_FEATURES as FS
from serving_support import make_core

from loopline.contracts.errors import FingerprintMismatchError, IntegrityError, ModelError
from loopline.registry.directory import DirectoryRegistry
from loopline.serving.model import load_model


def test_a_good_model_loads_and_reproduces_its_golden_scores(tmp_path) -> None:
    mv = model_factory.publish(tmp_path)
    model = load_model(mv, FS, golden_tolerance=1e-5)
    assert model.version == "1" and model.n_features == 20 and model.permutation is None


def test_a_model_for_another_feature_set_is_refused(tmp_path) -> None:
    mv = model_factory.publish(tmp_path, fingerprint="0" * 64)
    with pytest.raises(FingerprintMismatchError, match=r"fingerprint 000000000000.*refusing it"):
        load_model(mv, FS, 1e-5)


def test_a_tampered_file_fails_the_sha256_check(tmp_path) -> None:
    mv = model_factory.publish(tmp_path)
    mv.model_path.write_bytes(mv.model_path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="does not match manifest"):
        load_model(mv, FS, 1e-5)


def test_golden_scores_must_be_reproduced(tmp_path) -> None:
    onnx = model_factory.train_onnx()
    fields = model_factory.manifest_fields(onnx)
    wrong = [s + 0.01 for s in fields.golden_scores]
    mv = model_factory.publish(tmp_path, golden_scores=wrong)
    with pytest.raises(ModelError, match="golden row 0 scored"):
        load_model(mv, FS, 1e-4)


def test_the_manifest_order_is_honoured(tmp_path) -> None:
    names = list(reversed(FS.model_features))
    onnx = model_factory.train_onnx()
    fields = model_factory.manifest_fields(onnx)
    mv = model_factory.publish(tmp_path, feature_names=names, golden_inputs=fields.golden_inputs)
    model = load_model(mv, FS, 1e-4)
    assert model.order(list(range(20))) == list(reversed(range(20)))


def test_swap_keeps_the_previous_version_and_rolls_back_instantly(tmp_path) -> None:
    kit = make_core(tmp_path)
    first = kit.core.slot.current
    model_factory.publish(kit.registry, seed=1)
    assert kit.manager.sync().result == "loaded"
    second = kit.core.slot.current
    assert second.version == "2" and kit.core.slot.previous is first
    # The registry alias moves back: no reload, the kept session serves again.
    kit.registry.rollback("fraud")
    assert kit.manager.sync().result == "rolled_back"
    assert kit.core.slot.current is first and kit.core.slot.previous is second
    info = kit.metrics.registry.get_sample_value
    assert (
        info(
            "loopline_serving_model_info",
            {"model": "fraud", "version": "1", "fingerprint": FS.fingerprint[:12]},
        )
        == 1
    )
    assert (
        info(
            "loopline_serving_model_info",
            {"model": "fraud", "version": "2", "fingerprint": FS.fingerprint[:12]},
        )
        == 0
    )
    assert info("loopline_serving_model_swaps_total", {"result": "rolled_back"}) == 1


@pytest.mark.parametrize(
    ("overrides", "result"),
    [({"fingerprint": "f" * 64}, "refused"), ({"golden_scores": [0.5] * 8}, "failed")],
)
def test_a_bad_new_version_leaves_the_current_one_serving(tmp_path, overrides, result) -> None:
    kit = make_core(tmp_path)
    current = kit.core.slot.current
    model_factory.publish(kit.registry, seed=2, **overrides)
    outcome = kit.manager.sync()
    assert outcome.result == result and outcome.version == "2"
    assert kit.core.slot.current is current
    # Remembered: the next poll does not load it again.
    assert kit.manager.sync().result == "skipped"
    assert (
        kit.metrics.registry.get_sample_value(
            "loopline_serving_model_swaps_total", {"result": result}
        )
        == 1
    )


def test_an_announced_sha256_must_match_the_registry(tmp_path) -> None:
    kit = make_core(tmp_path)
    mv = model_factory.publish(kit.registry, seed=3)
    outcome = kit.manager.sync(("2", "ab" * 32))
    assert outcome.result == "integrity" and kit.core.slot.current.version == "1"
    assert kit.manager.sync(("2", "ab" * 32)).result == "skipped"
    # The bad announcement is refused, not the version: a sound one still loads it.
    assert kit.manager.sync(("2", mv.manifest.sha256)).result == "loaded"


def test_an_announcement_read_after_the_alias_moved_on_checks_nothing(tmp_path) -> None:
    kit = make_core(tmp_path)
    v1 = kit.core.slot.current.manifest
    model_factory.publish(kit.registry, seed=3)
    # v1's announcement, read late (a replica starting from the topic's beginning):
    # the alias names v2 by now, whose sha256 is not v1's.
    outcome = kit.manager.sync(("1", v1.sha256))
    assert outcome.result == "loaded" and kit.core.slot.current.version == "2"


def test_a_missing_file_is_a_failed_load_not_a_crash(tmp_path) -> None:
    kit = make_core(tmp_path)
    mv = model_factory.publish(kit.registry, seed=4)
    mv.model_path.unlink()
    assert kit.manager.sync().result == "failed"
    assert kit.core.slot.current.version == "1"


def test_an_unreadable_manifest_is_a_failed_load(tmp_path) -> None:
    kit = make_core(tmp_path)
    mv = model_factory.publish(kit.registry, seed=5, alias=None)
    (mv.model_path.parent / "manifest.json").write_text(json.dumps({"oops": 1}) + "{")
    assert kit.manager.ensure("2").result == "failed"
    assert DirectoryRegistry(tmp_path).resolve("fraud", "champion").manifest.version == "1"
