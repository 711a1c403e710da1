"""Every training run as an MLflow run (``registry.mlflow_tracking_uri`` set).

The trainer opens a run before it trains and closes it with what happened:

* params: the booster's hyper-parameters, the task, the gate's margins;
* tags: the feature set and its fingerprint, lineage (the retrain event id,
  its trigger and drift events, the data window and source), the gate's
  decision, the version published and where it went;
* metrics: the gate's metrics for the challenger (``challenger.<metric>``)
  and the champion on the same holdout (``champion.<metric>``), the ONNX
  parity check (``parity_max_abs_diff``), row counts, stage seconds;
* artifacts: the ONNX model (``onnx/model.onnx``; with the MLflow registry
  the published version's folder ``loopline-model/`` already holds it).

A run whose training fails ends FAILED, with the error as a tag.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import RegistrySettings
from loopline.registry.mlflow_registry import (
    ARTIFACT_DIR,
    RUN_ID,
    TAG,
    experiment_id,
    mlflow_errors,
)

TAG_LIMIT = 5000  # MLflow's bound on a tag value


class TrackedRun:
    """One MLflow run of one training run."""

    def __init__(self, tracker: MlflowTracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id

    def lineage(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """``extra`` for the manifest, carrying this run's id (the MLflow registry
        publishes the version into this run)."""
        return {**(extra or {}), RUN_ID: self.run_id}

    def finish(
        self,
        *,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, Any],
        onnx: bytes,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        client, now = self.tracker.client, int(time.time() * 1000)
        with self.tracker.calls():
            client.log_batch(
                self.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())],
                params=[Param(k, str(v)[:500]) for k, v in sorted(params.items())],
                tags=[RunTag(TAG + k, str(v)[:TAG_LIMIT]) for k, v in sorted(tags.items())],
            )
            if not client.list_artifacts(self.run_id, ARTIFACT_DIR):
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "model.onnx"
                    path.write_bytes(onnx)
                    client.log_artifact(self.run_id, str(path), "onnx")
            client.set_terminated(self.run_id, "FINISHED")

    def fail(self, error: BaseException) -> None:
        with self.tracker.calls():
            client = self.tracker.client
            client.set_tag(self.run_id, TAG + "error", f"{type(error).__name__}: {error}"[:500])
            client.set_terminated(self.run_id, "FAILED")


class MlflowTracker:
    """Opens a run per training run in experiment ``experiment``."""

    def __init__(self, tracking_uri: str, experiment: str = "loopline") -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=tracking_uri)

    @staticmethod
    def from_settings(settings: RegistrySettings) -> MlflowTracker | None:
        """The tracker ``registry.mlflow_tracking_uri`` names (None: unset)."""
        if not settings.mlflow_tracking_uri:
            return None
        try:
            return MlflowTracker(settings.mlflow_tracking_uri, settings.mlflow_experiment)
        except ImportError as e:
            raise ConfigError(
                f"registry.mlflow_tracking_uri needs MLflow: pip install 'loopline[mlflow]' ({e})"
            ) from e

    def start(self, model: str, extra: Mapping[str, Any] | None) -> TrackedRun:
        trigger = str((extra or {}).get("trigger", "") or "train")
        with self.calls():
            run = self.client.create_run(
                experiment_id(self.client, self.experiment),
                run_name=f"{model} {trigger}",
                tags={TAG + "model": model},
            )
        return TrackedRun(self, str(run.info.run_id))

    @contextmanager
    def calls(self) -> Iterator[None]:
        with mlflow_errors(self.tracking_uri, "training run"):
            yield
