"""A registry many hosts share through fsspec (``registry.backend: fsspec``): S3 or a filesystem.

Layout under ``registry.uri``::

    <model>/versions/<n>/model.onnx      # written first, created only if absent
    <model>/versions/<n>/manifest.json   # written second: the version now exists
    <model>/state.json                   # aliases, their history, the rollout plan

Writes are atomic by convention. A publisher claims version ``n`` by
creating its ``model.onnx`` only if absent (a conditional put on S3, an
exclusive hard link on a filesystem): two publishers never share a number.
The manifest follows; a version without one is not listed, read or served,
so readers never see a half-written version (a publisher that died between
the two leaves a skipped number, nothing else). Aliases and the rollout plan
live in one small object, changed by compare-and-set (``If-Match`` on S3, a
lock file on a filesystem) and moved last, after the version it names is
whole. Serving's poll reads that one object.

>>> import tempfile
>>> reg = SharedRegistry(ObjectStore.open("file://" + tempfile.mkdtemp()))
>>> v = reg.publish("fraud", b"onnx", ManifestFields("fraud", "f" * 64, ["a"]))
>>> reg.set_alias("fraud", "champion", v.manifest.version)
>>> reg.aliases("fraud"), reg.resolve("fraud", "champion").read_verified()
({'champion': '1'}, b'onnx')
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from loopline.contracts.errors import ModelError, ModelNotFoundError
from loopline.contracts.settings import RegistrySettings
from loopline.registry import documents
from loopline.registry.documents import Doc
from loopline.registry.manifest import (
    IMMUTABLE_FIELDS,
    Manifest,
    ManifestFields,
    ModelVersion,
    sha256_hex,
)
from loopline.registry.object_store import ObjectStore
from loopline.registry.signatures import ModelKey
from loopline.rollout.plan import RolloutPlan

T = TypeVar("T")
STATE = "state.json"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


class SharedRegistry:
    """The registry contract over an :class:`ObjectStore`; safe for many hosts at once."""

    def __init__(self, store: ObjectStore, *, signing_key: ModelKey | None = None) -> None:
        self.store = store
        self.signing_key = signing_key

    @staticmethod
    def from_settings(
        settings: RegistrySettings, *, signing_key: ModelKey | None = None
    ) -> SharedRegistry:
        store = ObjectStore.open(settings.uri, endpoint_url=settings.endpoint_url)
        return SharedRegistry(store, signing_key=signing_key)

    def where(self) -> str:
        return self.store.url

    # -- versions -----------------------------------------------------------
    def publish(self, model: str, onnx: bytes, fields: ManifestFields) -> ModelVersion:
        documents.check_model_name(model)
        number = max(self._numbers(model), default=0) + 1
        while not self.store.create(self._key(model, str(number), MODEL_FILE), onnx):
            number += 1  # another publisher took it
        manifest = Manifest(
            **dataclasses.asdict(fields),
            model_name=model,
            version=str(number),
            sha256=sha256_hex(onnx),
            created_ms=int(time.time() * 1000),
        )
        if self.signing_key is not None:
            manifest = dataclasses.replace(manifest, signature=self.signing_key.sign(manifest))
        if not self.store.create(
            self._key(model, manifest.version, MANIFEST_FILE), _json(manifest)
        ):
            raise ModelError(
                f"{model} v{number}: a manifest appeared before its publisher wrote it"
            )
        return self._version(manifest)

    def get(self, model: str, version: str) -> ModelVersion:
        data = self.store.read(self._key(model, version, MANIFEST_FILE))
        if data is None:
            raise ModelNotFoundError(f"model {model!r} has no version {version!r}")
        try:
            manifest = Manifest.from_json(data.decode())
        except (ValueError, TypeError) as e:
            raise ModelError(f"model {model!r} v{version}: unreadable manifest ({e})") from e
        return self._version(manifest)

    def versions(self, model: str) -> list[ModelVersion]:
        out = []
        for number in sorted(self._numbers(model)):
            try:
                out.append(self.get(model, str(number)))
            except ModelNotFoundError:
                continue  # being published, or its publisher died: not a version
        return out

    def models(self) -> list[str]:
        return [n for n in self.store.children("") if self._numbers(n)]

    def update_manifest(self, model: str, version: str, **changes: Any) -> ModelVersion:
        """Rewrite mutable manifest fields (status, decision, metrics) by compare-and-set."""
        frozen = sorted(set(changes) & IMMUTABLE_FIELDS)
        if frozen:
            raise ModelError(f"{model} v{version}: manifest fields {frozen} cannot change")
        self.get(model, version)  # must exist

        def change(old: bytes | None) -> tuple[bytes | None, None]:
            assert old is not None  # manifests are never deleted
            updated = dataclasses.replace(Manifest.from_json(old.decode()), **changes)
            return _json(updated), None

        self.store.update(self._key(model, version, MANIFEST_FILE), change)
        return self.get(model, version)

    # -- aliases (the hot path: one small object) ------------------------------
    def aliases(self, model: str) -> dict[str, str]:
        return dict(self._state(model)[0]["aliases"])

    def alias_history(self, model: str, alias: str) -> list[str]:
        return list(self._state(model)[0]["history"].get(alias, []))

    def resolve(self, model: str, alias: str) -> ModelVersion | None:
        version = self.aliases(model).get(alias)
        return None if version is None else self.get(model, version)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.get(model, version)  # whole before an alias names it
        self._change(model, lambda aliases, _: documents.move_alias(aliases, alias, version))

    def remove_alias(self, model: str, alias: str) -> None:
        self._change(model, lambda aliases, _: documents.drop_alias(aliases, alias))

    def rollback(self, model: str, alias: str = "champion") -> str:
        return self._change(model, lambda aliases, _: documents.roll_back(aliases, model, alias))

    # -- rollout plans ------------------------------------------------------
    def rollout(self, model: str) -> RolloutPlan | None:
        return documents.current_plan(self._state(model)[1])

    def rollout_history(self, model: str) -> list[RolloutPlan]:
        return documents.plan_history(self._state(model)[1])

    def set_rollout(self, plan: RolloutPlan) -> None:
        self.get(plan.model, plan.candidate_version)  # must exist
        self._change(plan.model, lambda a, r: documents.apply_plan(a, r, plan))

    def start_rollout(self, plan: RolloutPlan) -> None:
        """Record a new running ``plan``, unless another plan is running (ModelError)."""
        self.get(plan.model, plan.candidate_version)  # must exist

        def start(aliases: Doc, rollouts: Doc) -> None:
            documents.check_none_running(rollouts, plan)
            documents.apply_plan(aliases, rollouts, plan)

        self._change(plan.model, start)

    def finish_rollout(
        self, model: str, plan_id: str, state: str, reason: str
    ) -> RolloutPlan | None:
        """End running plan ``plan_id``; None when it is no longer the running plan."""

        def finish(aliases: Doc, rollouts: Doc) -> RolloutPlan | None:
            done = documents.finishing(rollouts, plan_id, state, reason)
            if done is not None:
                documents.apply_plan(aliases, rollouts, done)
            return done

        return self._change(model, finish)

    # -- internals ----------------------------------------------------------
    def _key(self, model: str, version: str, name: str) -> str:
        if not version.isdigit():
            raise ModelNotFoundError(f"model {model!r} has no version {version!r}")
        return f"{documents.check_model_name(model)}/versions/{version}/{name}"

    def _numbers(self, model: str) -> list[int]:
        names = self.store.children(f"{documents.check_model_name(model)}/versions")
        return [int(n) for n in names if n.isdigit()]

    def _version(self, m: Manifest) -> ModelVersion:
        key = self._key(m.model_name, m.version, MODEL_FILE)

        def fetch() -> bytes:
            data = self.store.read(key)
            if data is None:
                raise ModelNotFoundError(f"{self.store.key_url(key)} is missing")
            return data

        uri = self.store.key_url(key)
        return ModelVersion(m, Path(key), self.signing_key, uri=uri, fetch=fetch)

    def _state(self, model: str) -> tuple[Doc, Doc]:
        return _parse_state(self.store.read(f"{documents.check_model_name(model)}/{STATE}"))

    def _change(self, model: str, fn: Callable[[Doc, Doc], T]) -> T:
        """Apply ``fn`` to the model's aliases and rollout documents by compare-and-set."""

        def change(old: bytes | None) -> tuple[bytes | None, T]:
            aliases, rollouts = _parse_state(old)
            result = fn(aliases, rollouts)
            new = {**aliases, "rollout": rollouts}
            if old is not None and new == json.loads(old):
                return None, result
            return json.dumps(new, indent=2, sort_keys=True).encode(), result

        return self.store.update(f"{documents.check_model_name(model)}/{STATE}", change)


def _parse_state(data: bytes | None) -> tuple[Doc, Doc]:
    if data is None:
        return documents.empty_aliases(), documents.empty_rollout()
    try:
        state = json.loads(data)
    except ValueError as e:
        raise ModelError(f"unreadable registry {STATE} ({e})") from e
    return documents.aliases_doc(state), documents.rollout_doc(state.get("rollout"))


def _json(m: Manifest) -> bytes:
    return m.to_json().encode()
