"""The MLflow Model Registry as Loopline's registry (``registry.backend: mlflow``).

A published version is an MLflow model version of the registered model
named like the Loopline model. Its source is a run's artifact folder
holding ``model.onnx`` and ``manifest.json`` (the manifest without its
version number, which MLflow assigns). Tags carry what MLflow users look
at and what may change: ``loopline.status`` (the gate's verdict),
``loopline.decision``, ``loopline.fingerprint``, ``loopline.sha256``, and
``loopline.signature`` (with ``registry.signing_key_file``: the registry
key's signature, made once MLflow has numbered the version). Aliases are
MLflow's own: ``champion`` is what serves; each new version is also
``challenger`` until a newer one is published. An alias's earlier versions
(for ``loopline models rollback``) are kept in the registered model's tag
``loopline.history.<alias>``.

Serving polls one REST call (the registered model, which lists its
aliases) and reads a version only when the alias moved. A version
registered by hand without a Loopline manifest, or with another feature
set's fingerprint, is refused by serving like any other bad version.
This backend holds no rollout plans: publish as champion.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loopline.contracts.errors import (
    ConfigError,
    ModelError,
    ModelNotFoundError,
    UnavailableError,
)
from loopline.contracts.settings import RegistrySettings
from loopline.registry import documents
from loopline.registry.manifest import (
    IMMUTABLE_FIELDS,
    Manifest,
    ManifestFields,
    ModelVersion,
    UnservableError,
    sha256_hex,
)
from loopline.registry.signatures import ModelKey
from loopline.rollout.plan import RolloutPlan

ARTIFACT_DIR = "loopline-model"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CHALLENGER = "challenger"
TAG = "loopline."
HISTORY_TAG = TAG + "history."
# An alias's remembered versions (MLflow tag values are bounded).
HISTORY_KEPT = 50
# Manifest fields that live in tags (they change after publication).
MUTABLE_FIELDS = ("status", "decision", "metrics")
# The extra field a training run's id travels in, so the version joins its run.
RUN_ID = "mlflow_run_id"


class MlflowRegistry:
    """The registry contract over an MLflow tracking server's Model Registry."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str = "loopline",
        signing_key: ModelKey | None = None,
    ) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.signing_key = signing_key
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        # Published manifests by source: immutable, so each is downloaded once.
        self._manifests: dict[str, Manifest | UnservableError] = {}

    @staticmethod
    def from_settings(
        settings: RegistrySettings, *, signing_key: ModelKey | None = None
    ) -> MlflowRegistry:
        try:
            return MlflowRegistry(
                settings.mlflow_tracking_uri,
                experiment=settings.mlflow_experiment,
                signing_key=signing_key,
            )
        except ImportError as e:
            raise ConfigError(
                f"registry.backend mlflow needs MLflow: pip install 'loopline[mlflow]' ({e})"
            ) from e

    def where(self) -> str:
        return f"MLflow at {self.tracking_uri}"

    # -- versions -----------------------------------------------------------
    def publish(self, model: str, onnx: bytes, fields: ManifestFields) -> ModelVersion:
        documents.check_model_name(model)
        manifest = Manifest(
            **dataclasses.asdict(fields),
            model_name=model,
            sha256=sha256_hex(onnx),
            created_ms=int(time.time() * 1000),
        )
        with self._calls(model):
            run_id = str(fields.extra.get(RUN_ID) or "") or self._publish_run(model)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / ARTIFACT_DIR
                folder.mkdir()
                (folder / MODEL_FILE).write_bytes(onnx)
                (folder / MANIFEST_FILE).write_text(manifest.to_json())
                self.client.log_artifacts(run_id, str(folder), ARTIFACT_DIR)
            source = f"{self.client.get_run(run_id).info.artifact_uri}/{ARTIFACT_DIR}"
            self._ensure_model(model)
            tags = {
                TAG + "fingerprint": manifest.fingerprint,
                TAG + "feature_set": manifest.feature_set,
                TAG + "sha256": manifest.sha256,
                TAG + "status": manifest.status,
                TAG + "decision": manifest.decision[:4000],
            }
            created = self.client.create_model_version(model, source, run_id=run_id, tags=tags)
            version = str(created.version)
            if self.signing_key is not None:
                numbered = dataclasses.replace(manifest, version=version)
                signature = self.signing_key.sign(numbered)
                self.client.set_model_version_tag(model, version, TAG + "signature", signature)
            self.client.set_registered_model_alias(model, CHALLENGER, version)
        return self.get(model, version)

    def get(self, model: str, version: str) -> ModelVersion:
        with self._calls(model, version):
            mv = self.client.get_model_version(model, version)
            base = self._published_manifest(str(mv.source), model, version)
        tags = dict(mv.tags)
        changes: dict[str, Any] = {"model_name": model, "version": str(mv.version)}
        changes["signature"] = tags.get(TAG + "signature", "")
        for name in MUTABLE_FIELDS:
            if TAG + name in tags:
                changes[name] = _tag_value(name, tags[TAG + name])
        manifest = dataclasses.replace(base, **changes)
        source = str(mv.source)
        fetch = functools.partial(self._download, f"{source}/{MODEL_FILE}", model, version)
        return ModelVersion(
            manifest,
            Path(ARTIFACT_DIR) / MODEL_FILE,
            self.signing_key,
            uri=f"models:/{model}/{version}",
            fetch=fetch,
        )

    def versions(self, model: str) -> list[ModelVersion]:
        with self._calls(model):
            found = self.client.search_model_versions(f"name='{model}'")
        numbers = sorted(int(v.version) for v in found)
        return [self.get(model, str(n)) for n in numbers]

    def models(self) -> list[str]:
        with self._calls(""):
            return sorted(m.name for m in self.client.search_registered_models())

    def update_manifest(self, model: str, version: str, **changes: Any) -> ModelVersion:
        """Set mutable fields (status, decision, metrics) as the version's tags."""
        frozen = sorted(set(changes) & IMMUTABLE_FIELDS)
        if frozen:
            raise ModelError(f"{model} v{version}: manifest fields {frozen} cannot change")
        unknown = sorted(set(changes) - set(MUTABLE_FIELDS))
        if unknown:
            raise ModelError(f"{model} v{version}: the MLflow registry cannot change {unknown}")
        with self._calls(model, version):
            for name, value in changes.items():
                text = value if isinstance(value, str) else json.dumps(value)
                self.client.set_model_version_tag(model, version, TAG + name, text)
        return self.get(model, version)

    # -- aliases (the hot path: one REST call) -------------------------------
    def aliases(self, model: str) -> dict[str, str]:
        try:
            with self._calls(model):
                found = self.client.get_registered_model(model)
        except ModelNotFoundError:
            return {}
        return {alias: str(v) for alias, v in found.aliases.items()}

    def alias_history(self, model: str, alias: str) -> list[str]:
        try:
            with self._calls(model):
                tags = self.client.get_registered_model(model).tags
        except ModelNotFoundError:
            return []
        return list(json.loads(tags.get(HISTORY_TAG + alias, "[]")))

    def resolve(self, model: str, alias: str) -> ModelVersion | None:
        version = self.aliases(model).get(alias)
        return None if version is None else self.get(model, version)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.get(model, version)  # must exist
        history = self.alias_history(model, alias)
        with self._calls(model, version):
            self.client.set_registered_model_alias(model, alias, version)
            if not history or history[-1] != version:
                self._write_history(model, alias, [*history, version])

    def remove_alias(self, model: str, alias: str) -> None:
        if alias in self.aliases(model):
            with self._calls(model):
                self.client.delete_registered_model_alias(model, alias)

    def rollback(self, model: str, alias: str = "champion") -> str:
        doc = documents.empty_aliases()
        doc["history"][alias] = self.alias_history(model, alias)
        version = documents.roll_back(doc, model, alias)
        with self._calls(model, version):
            self.client.set_registered_model_alias(model, alias, version)
            self._write_history(model, alias, doc["history"][alias])
        return version

    # -- rollout plans: none in this backend ----------------------------------
    def rollout(self, model: str) -> RolloutPlan | None:
        return None

    def finish_rollout(
        self, model: str, plan_id: str, state: str, reason: str
    ) -> RolloutPlan | None:
        return None

    # -- internals ----------------------------------------------------------
    def _write_history(self, model: str, alias: str, history: list[str]) -> None:
        kept = json.dumps(history[-HISTORY_KEPT:])
        self.client.set_registered_model_tag(model, HISTORY_TAG + alias, kept)

    def _ensure_model(self, model: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(model, tags={TAG + "model": model})
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _publish_run(self, model: str) -> str:
        """A run for a version published outside a tracked training run."""
        experiment = experiment_id(self.client, self.experiment)
        run = self.client.create_run(experiment, run_name=f"publish {model}")
        self.client.set_terminated(run.info.run_id)
        return str(run.info.run_id)

    def _published_manifest(self, source: str, model: str, version: str) -> Manifest:
        """The manifest written at publication (immutable, so read once per source)."""
        if source not in self._manifests:
            try:
                self._manifests[source] = self._read_manifest(source, model, version)
            except UnservableError as e:
                self._manifests[source] = e  # as permanent as a manifest
        found = self._manifests[source]
        if isinstance(found, UnservableError):
            raise found
        return found

    def _read_manifest(self, source: str, model: str, version: str) -> Manifest:
        try:
            text = self._download(f"{source}/{MANIFEST_FILE}", model, version).decode()
        except ModelNotFoundError:
            raise UnservableError(
                f"{model} v{version} has no Loopline manifest ({source}/{MANIFEST_FILE}): it "
                "was registered by hand; publish versions with `loopline train` (or the "
                "registry API), which writes the manifest serving checks"
            ) from None
        try:
            return Manifest.from_json(text)
        except (ValueError, TypeError) as e:
            raise UnservableError(f"{model} v{version}: unreadable manifest ({e})") from e

    def _download(self, uri: str, model: str, version: str) -> bytes:
        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory() as tmp, self._calls(model, version):
            path = download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=self.tracking_uri
            )
            return Path(path).read_bytes()

    @contextmanager
    def _calls(self, model: str, version: str = "") -> Iterator[None]:
        """MLflow's errors as Loopline's: not found, unreachable, or a model error."""
        with mlflow_errors(self.tracking_uri, f"{model} v{version}" if version else model):
            yield


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when missing."""
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id if found is not None else client.create_experiment(name))


@contextmanager
def mlflow_errors(tracking_uri: str, what: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        text = str(e).lower()
        # A failed artifact download reports the HTTP 404 in its message only.
        if (
            e.error_code == "RESOURCE_DOES_NOT_EXIST"
            or "does not exist" in text
            or ("404" in text and "not found" in text)
        ):
            raise ModelNotFoundError(f"{what}: not in MLflow at {tracking_uri}") from e
        if "max retries" in text or "connection" in text:
            raise UnavailableError(f"MLflow at {tracking_uri} is unreachable ({e})") from e
        raise ModelError(f"{what}: MLflow at {tracking_uri} refused: {e}") from e
    except OSError as e:  # requests' errors: an artifact's 404 says it is not there
        if getattr(getattr(e, "response", None), "status_code", None) == 404:
            raise ModelNotFoundError(f"{what}: not in MLflow at {tracking_uri}") from e
        raise UnavailableError(f"MLflow at {tracking_uri} is unreachable ({e})") from e


def _tag_value(name: str, text: str) -> Any:
    if name == "metrics":
        try:
            return json.loads(text)
        except ValueError:
            return {}
    return text
