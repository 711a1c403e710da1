"""The model registry contract and its embedded directory implementation.

The trainer publishes; serving reads. Both speak to :class:`ModelRegistry`,
so another backend (MLflow) can stand in without either changing.

Layout of :class:`DirectoryRegistry` under its root::

    <model>/versions/<version>/model.onnx
    <model>/versions/<version>/manifest.json
    <model>/aliases.json        # {"aliases": {...}, "history": {...}}
    <model>/rollout.json        # {"plan": {...} | null, "history": [{...}, ...]}

Every write goes to a temporary name first and is renamed into place, so a
reader never sees a partial file, and an alias moves in one step. A registry
opened with a signing key (:func:`open_registry`) signs what it publishes and
hands every version out with the key, for serving to check before loading.

>>> import tempfile
>>> reg = DirectoryRegistry(tempfile.mkdtemp())
>>> v = reg.publish("fraud", b"onnx-bytes", ManifestFields(
...     feature_set="fraud", fingerprint="f" * 64, feature_names=["a", "b"]))
>>> v.manifest.version, reg.resolve("fraud", "champion") is None
('1', True)
>>> reg.set_alias("fraud", "champion", "1")
>>> reg.resolve("fraud", "champion").manifest.sha256 == sha256_hex(b"onnx-bytes")
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ModelError, ModelNotFoundError, RegistryWriteError
from loopline.contracts.settings import RegistrySettings
from loopline.registry import documents
from loopline.registry.manifest import (
    IMMUTABLE_FIELDS,
    Manifest,
    ManifestFields,
    ModelRegistry,
    ModelVersion,
    model_update,
    sha256_hex,
)
from loopline.registry.signatures import ModelKey
from loopline.rollout.plan import RolloutPlan
from loopline.storage.files import atomic_write, fsync

# The manifest types are importable from here, beside the registry that stores them.
__all__ = [
    "IMMUTABLE_FIELDS", "DirectoryRegistry", "Manifest", "ManifestFields", "ModelRegistry",
    "ModelVersion", "model_update", "open_registry", "sha256_hex",
]  # fmt: skip

MODEL_FILE = "model.onnx"
ROLLOUT_FILE = "rollout.json"
MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"


def staging_prefix(pid: int | None = None) -> str:
    """A staging folder's name prefix: the host and process that write it."""
    return f".staging-{socket.gethostname()}-{os.getpid() if pid is None else pid}-"


def sweep_staging(versions_dir: Path) -> list[str]:
    """Remove staging folders a killed publisher left behind; returns their names.

    Only this host's folders whose process is gone: a live publisher's (or
    another host's, on a shared directory) is left alone.
    """
    host_prefix = f".staging-{socket.gethostname()}-"
    removed = []
    for path in versions_dir.glob(f"{host_prefix}*"):
        pid = path.name[len(host_prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def open_registry(settings: RegistrySettings) -> DirectoryRegistry:
    """The directory registry at ``registry.path``, with its signing key when one is set.

    :func:`loopline.registry.backend.open_registry` picks the backend."""
    return DirectoryRegistry(settings.path, signing_key=ModelKey.from_settings(settings))


class DirectoryRegistry:
    """A registry in a local (or shared) directory. Safe for concurrent readers."""

    def __init__(self, root: str | Path, *, signing_key: ModelKey | None = None) -> None:
        self.root = Path(root)
        self.signing_key = signing_key

    def where(self) -> str:
        return str(self.root)

    # -- versions -----------------------------------------------------------
    def publish(self, model: str, onnx: bytes, fields: ManifestFields) -> ModelVersion:
        versions_dir = self._model_dir(model) / "versions"
        with self._writing(model, "a new version"):
            versions_dir.mkdir(parents=True, exist_ok=True)
            sweep_staging(versions_dir)
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=versions_dir))
            return self._publish_staged(model, onnx, fields, staging)

    def _publish_staged(
        self, model: str, onnx: bytes, fields: ManifestFields, staging: Path
    ) -> ModelVersion:
        """Fill ``staging``, then rename it to the next free version number."""
        versions_dir = staging.parent
        try:
            (staging / MODEL_FILE).write_bytes(onnx)
            fsync(staging / MODEL_FILE)
            while True:
                version = str(self._next_version(model))
                manifest = Manifest(
                    **dataclasses.asdict(fields),
                    model_name=model,
                    version=version,
                    sha256=sha256_hex(onnx),
                    created_ms=int(time.time() * 1000),
                )
                if self.signing_key is not None:
                    signature = self.signing_key.sign(manifest)
                    manifest = dataclasses.replace(manifest, signature=signature)
                (staging / MANIFEST_FILE).write_text(manifest.to_json())
                fsync(staging / MANIFEST_FILE)
                fsync(staging)
                try:
                    # Renaming a directory onto a missing name is atomic; a
                    # concurrent publisher that took the number makes it fail.
                    os.rename(staging, versions_dir / version)
                    break
                except OSError:
                    if not (versions_dir / version).exists():
                        raise
            fsync(versions_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.get(model, version)

    def get(self, model: str, version: str) -> ModelVersion:
        vdir = self._model_dir(model) / "versions" / version
        try:
            manifest = Manifest.from_json((vdir / MANIFEST_FILE).read_text())
        except FileNotFoundError:
            raise ModelNotFoundError(f"model {model!r} has no version {version!r}") from None
        except (ValueError, TypeError) as e:
            raise ModelError(f"model {model!r} v{version}: unreadable manifest ({e})") from e
        return ModelVersion(manifest, vdir / MODEL_FILE, self.signing_key)

    def versions(self, model: str) -> list[ModelVersion]:
        vdir = self._model_dir(model) / "versions"
        if not vdir.is_dir():
            return []
        names = sorted((p.name for p in vdir.iterdir() if p.name.isdigit()), key=int)
        return [self.get(model, n) for n in names]

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def update_manifest(self, model: str, version: str, **changes: Any) -> ModelVersion:
        """Rewrite mutable manifest fields (status, decision, metrics) atomically.

        Fields that identify the model or its inputs never change after publish.
        """
        frozen = sorted(set(changes) & IMMUTABLE_FIELDS)
        if frozen:
            raise ModelError(f"{model} v{version}: manifest fields {frozen} cannot change")
        with self._locked(model):
            mv = self.get(model, version)
            updated = dataclasses.replace(mv.manifest, **changes)
            atomic_write(mv.model_path.parent / MANIFEST_FILE, updated.to_json())
        return self.get(model, version)

    # -- aliases ------------------------------------------------------------
    def aliases(self, model: str) -> dict[str, str]:
        return dict(self._alias_doc(model)["aliases"])

    def alias_history(self, model: str, alias: str) -> list[str]:
        return list(self._alias_doc(model)["history"].get(alias, []))

    def resolve(self, model: str, alias: str) -> ModelVersion | None:
        version = self.aliases(model).get(alias)
        return None if version is None else self.get(model, version)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.get(model, version)  # must exist
        with self._locked(model):
            self._move_alias(model, alias, version)

    def remove_alias(self, model: str, alias: str) -> None:
        with self._locked(model):
            self._drop_alias(model, alias)

    def rollback(self, model: str, alias: str = "champion") -> str:
        """Point ``alias`` back at the version it held before; returns that version."""
        with self._locked(model):
            doc = self._alias_doc(model)
            version = documents.roll_back(doc, model, alias)
            self._write_aliases(model, doc)
            return version

    # -- rollout plans ------------------------------------------------------
    def rollout(self, model: str) -> RolloutPlan | None:
        """The model's current rollout plan (running or finished), if any."""
        return documents.current_plan(self._rollout_doc(model))

    def rollout_history(self, model: str) -> list[RolloutPlan]:
        """Every plan record written for the model, oldest first (the current one last)."""
        return documents.plan_history(self._rollout_doc(model))

    def set_rollout(self, plan: RolloutPlan) -> None:
        """Record ``plan`` as the model's rollout, moving the aliases with it.

        Running: the ``candidate`` alias names the candidate version. Promoted:
        ``champion`` names it and ``candidate`` is dropped. Aborted:
        ``candidate`` is dropped, ``champion`` untouched. The plan record is the
        source of truth for which version is the candidate; the alias follows.

        >>> import tempfile
        >>> reg = DirectoryRegistry(tempfile.mkdtemp())
        >>> for onnx in (b"one", b"two"):
        ...     _ = reg.publish("m", onnx, ManifestFields("fs", "f" * 64, ["a"]))
        >>> reg.set_alias("m", "champion", "1")
        >>> plan = RolloutPlan.start("m", candidate="2", champion="1", mode="shadow")
        >>> reg.set_rollout(plan)
        >>> reg.aliases("m"), reg.rollout("m") == plan
        ({'champion': '1', 'candidate': '2'}, True)
        >>> reg.set_rollout(plan.finished("promoted", "better"))
        >>> reg.aliases("m"), reg.rollout("m").state, len(reg.rollout_history("m"))
        ({'champion': '2'}, 'promoted', 2)
        """
        self.get(plan.model, plan.candidate_version)  # must exist
        with self._locked(plan.model):
            self._write_rollout(plan)

    def start_rollout(self, plan: RolloutPlan) -> None:
        """Record a new running ``plan``, unless another plan is running (ModelError)."""
        self.get(plan.model, plan.candidate_version)  # must exist
        with self._locked(plan.model):
            documents.check_none_running(self._rollout_doc(plan.model), plan)
            self._write_rollout(plan)

    def finish_rollout(
        self, model: str, plan_id: str, state: str, reason: str
    ) -> RolloutPlan | None:
        """End running plan ``plan_id`` as ``state`` ("promoted" | "aborted").

        A compare-and-set: returns the finished plan, or None when ``plan_id``
        is no longer the running plan (another process ended or replaced it),
        so several serving processes running the policy decide only once.

        >>> import tempfile
        >>> reg = DirectoryRegistry(tempfile.mkdtemp())
        >>> for onnx in (b"one", b"two"):
        ...     _ = reg.publish("m", onnx, ManifestFields("fs", "f" * 64, ["a"]))
        >>> reg.set_alias("m", "champion", "1")
        >>> reg.start_rollout(RolloutPlan.start("m", candidate="2", champion="1",
        ...                                     mode="canary", canary_share=0.1, plan_id="p"))
        >>> reg.finish_rollout("m", "p", "aborted", "errors").state
        'aborted'
        >>> reg.finish_rollout("m", "p", "promoted", "late") is None
        True
        """
        with self._locked(model):
            done = documents.finishing(self._rollout_doc(model), plan_id, state, reason)
            if done is not None:
                self._write_rollout(done)
            return done

    # -- internals ----------------------------------------------------------
    def _write_rollout(self, plan: RolloutPlan) -> None:
        """Move the aliases the plan implies, then record it; the caller holds the lock."""
        aliases, rollouts = self._alias_doc(plan.model), self._rollout_doc(plan.model)
        documents.apply_plan(aliases, rollouts, plan)
        self._write_aliases(plan.model, aliases)
        atomic_write(self._model_dir(plan.model) / ROLLOUT_FILE, json.dumps(rollouts, indent=2))

    def _move_alias(self, model: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``; the caller holds the model's lock."""
        doc = self._alias_doc(model)
        if documents.move_alias(doc, alias, version):
            self._write_aliases(model, doc)

    def _drop_alias(self, model: str, alias: str) -> None:
        doc = self._alias_doc(model)
        if documents.drop_alias(doc, alias):
            self._write_aliases(model, doc)

    def _write_aliases(self, model: str, doc: dict[str, Any]) -> None:
        atomic_write(self._model_dir(model) / ALIASES_FILE, json.dumps(doc, indent=2))

    def _rollout_doc(self, model: str) -> dict[str, Any]:
        path = self._model_dir(model) / ROLLOUT_FILE
        try:
            return documents.rollout_doc(json.loads(path.read_text()))
        except FileNotFoundError:
            return documents.empty_rollout()
        except ValueError as e:
            raise ModelError(f"model {model!r}: unreadable {ROLLOUT_FILE} ({e})") from e

    def _model_dir(self, model: str) -> Path:
        return self.root / documents.check_model_name(model)

    def _next_version(self, model: str) -> int:
        existing = [int(v.manifest.version) for v in self.versions(model)]
        return max(existing, default=0) + 1

    def _alias_doc(self, model: str) -> dict[str, Any]:
        path = self._model_dir(model) / ALIASES_FILE
        try:
            return documents.aliases_doc(json.loads(path.read_text()))
        except FileNotFoundError:
            return documents.empty_aliases()

    @contextlib.contextmanager
    def _locked(self, model: str) -> Iterator[None]:
        mdir = self._model_dir(model)
        with self._writing(model, "aliases, manifests or rollout plans"):
            mdir.mkdir(parents=True, exist_ok=True)
            with open(mdir / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _writing(self, model: str, what: str) -> Iterator[None]:
        """An operating-system refusal (disk full, read-only) as a RegistryWriteError.

        Every write is a temporary file renamed into place, so whatever the
        refusal interrupted, the files readers see are still whole.
        """
        try:
            yield
        except OSError as e:
            where = e.filename or self.root
            raise RegistryWriteError(
                f"registry {self.root}: could not write {what} of model {model!r}: "
                f"{e.strerror or e} ({where}); free space on that file system or make it "
                "writable, then retry (what it held before is unchanged)"
            ) from e
