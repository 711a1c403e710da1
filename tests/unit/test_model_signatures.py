"""Signed models: the registry signs what it publishes, serving refuses what it cannot verify."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import model_factory
import pytest
from fraud_repo import FRAUD_FEATURES as FS
from prometheus_client import CollectorRegistry

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import RegistrySettings
from loopline.registry.directory import DirectoryRegistry, Manifest, open_registry
from loopline.registry.signatures import BAD_SIGNATURE, UNSIGNED, ModelKey, SignatureError
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import load_model
from loopline.serving.model_manager import ModelManager
from loopline.serving.model_slot import ModelSlot

SECRET = b"signing-key-for-tests-0123456789abcdef"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing.key"
    path.write_bytes(SECRET + b"\n")
    return path


@pytest.fixture
def registry(tmp_path: Path, key_file: Path) -> DirectoryRegistry:
    """The registry as trainer and serving open it with ``registry.signing_key_file`` set."""
    return open_registry(RegistrySettings(path=tmp_path / "registry", signing_key_file=key_file))


def unkeyed(registry: DirectoryRegistry) -> DirectoryRegistry:
    """The same directory opened by someone without the key."""
    return DirectoryRegistry(registry.root)


def manager_over(registry: DirectoryRegistry) -> tuple[ModelManager, ServingMetrics]:
    metrics = ServingMetrics(CollectorRegistry())
    manager = ModelManager(
        registry=registry,
        model_name=FS.name,
        alias="champion",
        feature_set=FS,
        slot=ModelSlot(),
        metrics=metrics,
        golden_tolerance=1e-4,
    )
    return manager, metrics


def refusals(metrics: ServingMetrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "loopline_serving_model_refusals_total", {"reason": reason}
    )


# -- the registry -------------------------------------------------------------------
def test_a_keyed_registry_signs_every_version_it_publishes(registry) -> None:
    mv = model_factory.publish(registry)
    assert len(mv.manifest.signature) == 64
    mv.check_signature()
    stored = Manifest.from_json((mv.model_path.parent / "manifest.json").read_text())
    assert stored.signature == mv.manifest.signature
    # Annotating a version keeps its signature valid (status, metrics are not signed).
    registry.update_manifest("fraud", "1", status="rejected")
    registry.get("fraud", "1").check_signature()


def test_without_a_key_versions_are_unsigned_and_not_checked(tmp_path) -> None:
    reg = open_registry(RegistrySettings(path=tmp_path))
    mv = model_factory.publish(reg)
    assert mv.manifest.signature == "" and reg.signing_key is None
    mv.check_signature()  # nothing to check against


def test_manifests_older_than_the_signature_field_stay_readable(registry) -> None:
    mv = model_factory.publish(unkeyed(registry))
    path = mv.model_path.parent / "manifest.json"
    path.write_text(path.read_text().replace('"signature": "",', ""))
    assert "signature" not in path.read_text()
    assert registry.get("fraud", "1").manifest.signature == ""


def test_the_signature_cannot_be_rewritten_through_the_registry(registry) -> None:
    model_factory.publish(registry)
    with pytest.raises(Exception, match="signature"):
        registry.update_manifest("fraud", "1", signature="00" * 32)


def test_a_missing_or_short_key_file_is_a_config_error_naming_the_setting(tmp_path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"too-short")
    for path in (tmp_path / "missing.key", short):
        settings = RegistrySettings(path=tmp_path, signing_key_file=path)
        with pytest.raises(ConfigError, match=r"registry\.signing_key_file") as e:
            open_registry(settings)
        assert "too-short" not in str(e.value)


def test_the_key_never_shows_in_a_repr(registry) -> None:
    mv = model_factory.publish(registry)
    for text in (repr(registry.signing_key), repr(mv), str(vars(registry))):
        assert SECRET.decode() not in text and repr(SECRET) not in text


# -- loading --------------------------------------------------------------------------
def test_serving_loads_a_correctly_signed_version(registry) -> None:
    mv = model_factory.publish(registry)
    assert load_model(registry.get("fraud", mv.manifest.version), FS, 1e-4).version == "1"


def test_a_version_written_without_the_key_is_refused_as_unsigned(registry) -> None:
    model_factory.publish(unkeyed(registry))
    with pytest.raises(SignatureError, match=r"fraud v1 is unsigned") as e:
        load_model(registry.get("fraud", "1"), FS, 1e-4)
    assert e.value.reason == UNSIGNED


def test_a_version_signed_with_another_key_is_refused(registry, tmp_path) -> None:
    other = DirectoryRegistry(registry.root, signing_key=ModelKey(b"x" * 32))
    model_factory.publish(other)
    with pytest.raises(SignatureError, match=r"fraud v1 has a bad signature") as e:
        load_model(registry.get("fraud", "1"), FS, 1e-4)
    assert e.value.reason == BAD_SIGNATURE


def test_a_tampered_model_with_a_recomputed_sha256_is_refused(registry) -> None:
    mv = model_factory.publish(registry)
    model_factory.tamper(mv)
    # Without the key the tampered version would load: sha256 and golden rows agree.
    assert load_model(unkeyed(registry).get("fraud", "1"), FS, 1e-4).version == "1"
    with pytest.raises(SignatureError) as e:
        load_model(registry.get("fraud", "1"), FS, 1e-4)
    assert e.value.reason == BAD_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"golden_scores": [0.5]},
        {"feature_names": ["b", "a"]},
        {"input_name": "other"},
    ],
)
def test_any_served_manifest_field_changed_without_the_key_is_refused(
    registry, key_file, change
) -> None:
    """The signature covers the whole manifest a model is served by, not only its file."""
    mv = model_factory.publish(registry)
    key = ModelKey.from_settings(RegistrySettings(signing_key_file=key_file))
    assert key is not None
    key.check(mv.manifest)
    with pytest.raises(SignatureError) as refused:
        key.check(replace(mv.manifest, **change))
    assert refused.value.reason == BAD_SIGNATURE


def test_an_unsigned_manifest_is_refused_before_its_feature_set_is_looked_at(registry) -> None:
    # A forged manifest must not steer serving (e.g. to another feature-set version).
    model_factory.publish(unkeyed(registry), fingerprint="0" * 64)
    with pytest.raises(SignatureError):
        load_model(registry.get("fraud", "1"), FS, 1e-4)


# -- the manager's refusal --------------------------------------------------------------
@pytest.mark.parametrize(
    ("forge", "reason"),
    [("unsigned", UNSIGNED), ("tampered", BAD_SIGNATURE)],
)
def test_the_manager_refuses_it_and_keeps_the_current_model(
    registry, forge, reason, caplog
) -> None:
    manager, metrics = manager_over(registry)
    model_factory.publish(registry)
    assert manager.sync().result == "loaded"
    served = manager.slot.current
    assert refusals(metrics, reason) == 0  # present before the first refusal
    if forge == "unsigned":
        model_factory.publish(unkeyed(registry), seed=1)
    else:
        model_factory.tamper(model_factory.publish(registry, seed=1))
    with caplog.at_level(logging.ERROR, logger="loopline.serving.model_manager"):
        outcome = manager.sync()
    assert (outcome.result, outcome.version) == ("integrity", "2")
    assert manager.slot.current is served
    assert refusals(metrics, reason) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "fraud v2" in lines[0] and "still serving v1" in lines[0]
    assert SECRET.decode() not in lines[0]
    signature = registry.get("fraud", "2").manifest.signature
    assert not signature or signature not in lines[0]
    # Remembered: the next poll does not load it again, nor count it again.
    assert manager.sync().result == "skipped"
    assert refusals(metrics, reason) == 1


def test_a_refused_version_loads_once_it_is_properly_signed(registry) -> None:
    manager, metrics = manager_over(registry)
    model_factory.publish(registry)
    manager.sync()
    model_factory.publish(unkeyed(registry), seed=1)
    assert manager.sync().result == "integrity"
    # The key holder signs the same file: the signature changed, so the manager retries.
    mv = registry.get("fraud", "2")
    signature = registry.signing_key.sign(mv.manifest)  # type: ignore[union-attr]
    path = mv.model_path.parent / "manifest.json"
    path.write_text(path.read_text().replace('"signature": ""', f'"signature": "{signature}"'))
    assert manager.sync().result == "loaded"
    assert manager.slot.current.version == "2"
    assert refusals(metrics, UNSIGNED) == 1


def test_the_trainer_publishes_through_a_registry_holding_the_key(tmp_path, key_file) -> None:
    from loopline.contracts.settings import Settings
    from loopline.trainer.command_support import open_registry as trainer_registry

    settings = Settings()
    settings = replace(
        settings, registry=RegistrySettings(path=tmp_path / "reg", signing_key_file=key_file)
    )
    mv = model_factory.publish(trainer_registry(settings))
    assert mv.manifest.signature
    open_registry(settings.registry).get("fraud", "1").check_signature()


def test_an_unsigned_champion_does_not_choose_the_served_feature_set(registry) -> None:
    from fraud_repo import changed_fraud_features

    from loopline.featurerepo.state import AppliedState
    from loopline.serving.feature_version import serving_feature_set

    new = changed_fraud_features()
    state = AppliedState(registry.root)
    for i, fs in enumerate((FS, new)):
        state.record("fraud", fs.fingerprint, fs.describe(), now_ms=i)
    model_factory.publish(unkeyed(registry))  # built for the old version, never signed
    served = serving_feature_set(new, registry, registry.root, "fraud", "champion")
    assert served.fingerprint == new.fingerprint
    model_factory.publish(registry, seed=1)  # signed, on the old version: it pins it
    served = serving_feature_set(new, registry, registry.root, "fraud", "champion")
    assert served.fingerprint == FS.fingerprint
