"""MLflow as the registry and the run tracker, against a real ``mlflow server``.

One server for the module (SQLite backend, local artifact root), started by
the stack's own component as ``loopline up --mlflow`` starts it.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import model_factory
import pytest
from fraud_repo import FRAUD_FEATURES as FS
from polling import wait_until
from prometheus_client import CollectorRegistry
from synthetic_fraud import synthetic_history
from trainer_support import training_set_of

from loopline.cli import main
from loopline.contracts.settings import RegistrySettings, Settings, TrainerSettings
from loopline.registry.backend import open_registry
from loopline.registry.manifest import Manifest
from loopline.registry.mlflow_registry import MlflowRegistry
from loopline.registry.mlflow_tracking import MlflowTracker
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model_follower import ModelFollower
from loopline.serving.model_manager import ModelManager
from loopline.serving.model_slot import ModelSlot
from loopline.stack.mlflow_server import MlflowServer
from loopline.stack.paths import StackPaths
from loopline.trainer.pipeline import Trainer

# The first test also waits for the module's MLflow server to start (seconds; more when busy).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = StackPaths.for_state_dir(tmp_path_factory.mktemp("stack"))
    settings = Settings()
    settings = dataclasses.replace(
        settings, stack=dataclasses.replace(settings.stack, mlflow_port=0, startup_timeout_s=600)
    )
    server = MlflowServer(settings, state)
    status = server.up()
    assert status.started_now and status.up
    try:
        yield server.url
    finally:
        assert server.down() is not None
        assert not server.probe()


def mlflow_settings(url: str, model: str) -> RegistrySettings:
    return RegistrySettings(
        backend="mlflow", mlflow_tracking_uri=url, mlflow_experiment=f"exp-{model}"
    )


def test_a_training_run_is_tracked_and_published_to_the_model_registry(mlflow_url: str) -> None:
    settings = mlflow_settings(mlflow_url, "fraud")
    registry = open_registry(settings)
    assert isinstance(registry, MlflowRegistry)
    tracker = MlflowTracker.from_settings(settings)
    txs, outcomes = synthetic_history(n_cards=200, hours=24, seed=5)
    data = training_set_of(txs, outcomes, window_hours=24)
    trainer_settings = TrainerSettings(
        num_trees=30, num_threads=1, min_rows=100, min_positives=5, window_hours=24
    )
    trainer = Trainer(trainer_settings, registry, fs=FS, tracker=tracker)
    report = trainer.train(data, extra={"retrain_event_id": "re-1", "trigger": "drift"})

    assert report.accepted and report.published_as == "champion"
    assert registry.aliases("fraud") == {"champion": report.version, "challenger": report.version}
    mv = registry.resolve("fraud", "champion")
    assert mv is not None and mv.manifest.fingerprint == FS.fingerprint
    run_id = mv.manifest.extra["mlflow_run_id"]
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["loopline.fingerprint"] == FS.fingerprint
    assert tags["loopline.retrain_event_id"] == "re-1"
    assert tags["loopline.data_window_ms"] == f"{report.window_ms[0]}/{report.window_ms[1]}"
    assert metrics["challenger.auc"] == pytest.approx(report.metrics["auc"])
    assert metrics["parity_max_abs_diff"] == pytest.approx(report.parity_max_abs_diff)
    assert run.data.params["num_trees"] == "30"
    # The ONNX file is the version's artifact, in the run that trained it.
    version = tracker.client.get_model_version("fraud", report.version)
    assert version.run_id == run_id
    assert version.tags["loopline.status"] == "candidate"
    assert mv.read_verified()

    # A second run: the gate scores the champion too, logged beside the challenger.
    again = trainer.train(data, extra={"retrain_event_id": "re-2"})
    second = tracker.client.get_run(
        registry.get("fraud", again.version).manifest.extra["mlflow_run_id"]
    )
    assert second.data.metrics["champion.auc"] == pytest.approx(again.champion_metrics["auc"])


def register_by_hand(url: str, model: str, onnx: bytes, manifest: Manifest | None) -> str:
    """What someone does in MLflow without Loopline: log files, register them, move the alias."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    run = client.create_run(client.get_experiment_by_name(f"exp-{model}").experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.onnx").write_bytes(onnx)
        if manifest is not None:
            (Path(tmp) / "manifest.json").write_text(manifest.to_json())
        client.log_artifacts(run.info.run_id, tmp, "by-hand")
    source = f"{run.info.artifact_uri}/by-hand"
    version = str(client.create_model_version(model, source, run_id=run.info.run_id).version)
    client.set_registered_model_alias(model, "champion", version)
    return version


def test_serving_follows_the_mlflow_alias_and_refuses_bad_versions(
    mlflow_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = "fraud-serving"
    registry = open_registry(mlflow_settings(mlflow_url, model))
    first = model_factory.publish(registry, model=model)
    second = model_factory.publish(registry, model=model, alias=None)
    metrics = ServingMetrics(CollectorRegistry())
    slot = ModelSlot()
    manager = ModelManager(
        registry=open_registry(mlflow_settings(mlflow_url, model)),
        model_name=model,
        alias="champion",
        feature_set=FS,
        slot=slot,
        metrics=metrics,
        golden_tolerance=1e-4,
    )
    follower = ModelFollower(manager, kafka=None, topic="unused", poll_s=0.2)
    serving = lambda: slot.models()[0].version if slot.models()[0] else None  # noqa: E731
    refusals = lambda reason: metrics.registry.get_sample_value(  # noqa: E731
        "loopline_serving_model_refusals_total", {"reason": reason}
    )
    manager.sync()
    assert serving() == first.manifest.version
    follower.start()
    try:
        registry.set_alias(model, "champion", second.manifest.version)
        wait_until(lambda: serving() == second.manifest.version, 30, "the swap to v2")

        # `loopline models rollback` moves the MLflow alias back; serving follows.
        monkeypatch.setenv("LOOPLINE_REGISTRY__BACKEND", "mlflow")
        monkeypatch.setenv("LOOPLINE_REGISTRY__MLFLOW_TRACKING_URI", mlflow_url)
        assert main(["models", "rollback", "--model", model, "--no-announce"]) == 0
        assert registry.aliases(model)["champion"] == first.manifest.version
        wait_until(lambda: serving() == first.manifest.version, 30, "the rollback to v1")

        # Registered by hand: another feature set's fingerprint, then no manifest at all.
        onnx = first.read_verified()
        wrong = dataclasses.replace(first.manifest, fingerprint="0" * 64)
        caplog.set_level(logging.ERROR, logger="loopline.serving.model_manager")
        register_by_hand(mlflow_url, model, onnx, wrong)
        wait_until(lambda: refusals("fingerprint") == 1, 30, "the fingerprint refusal")
        register_by_hand(mlflow_url, model, onnx, None)
        wait_until(lambda: refusals("manifest") == 1, 30, "the manifest refusal")
    finally:
        follower.stop()
    assert serving() == first.manifest.version
    messages = [r.getMessage() for r in caplog.records]
    assert any("was built for feature set" in m and "refusing it" in m for m in messages)
    assert any("has no Loopline manifest" in m for m in messages)
    # Each bad version is refused once, not again at every poll.
    assert refusals("fingerprint") == 1 and refusals("manifest") == 1
