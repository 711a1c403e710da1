"""What a published model version states: its manifest, and the registry protocol.

The trainer writes a manifest with every version; serving checks the model
against it (sha256, feature-set fingerprint, feature order, golden scores)
before it serves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from loopline.contracts.errors import IntegrityError, ModelError
from loopline.contracts.schemas import ModelUpdate
from loopline.registry.signatures import ModelKey
from loopline.rollout.plan import RolloutPlan

# What a model predicts: "binary" (probability of the positive class) or
# "regression" (a real value). Manifests written before the field are binary.
# Identity and input contract of a published version; the rest may be annotated.
IMMUTABLE_FIELDS = frozenset(
    {
        "model_name",
        "version",
        "sha256",
        "created_ms",
        "feature_set",
        "fingerprint",
        "feature_names",
        "input_name",
        "probability_output",
        "task",
        "golden_inputs",
        "golden_scores",
        "signature",
    }
)


class UnservableError(ModelError):
    """A version that can never serve as registered: it has no readable Loopline manifest."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ManifestFields:
    """What a publisher states about a model; the registry adds identity fields."""

    feature_set: str
    fingerprint: str
    feature_names: list[str]
    input_name: str = "input"
    # The output tensor serving reads (name kept for old manifests): for a binary
    # model the class probabilities, shape [n, 2], column 1 the positive class;
    # for a regression model the predicted values, shape [n, 1].
    probability_output: str = "probabilities"
    task: str = "binary"  # one of TASKS
    training_window_ms: list[int] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    parent_version: str = ""
    code_version: str = ""
    # A few input rows and the scores (probability or value) the model must give for them:
    # serving checks a freshly loaded session against them before swapping.
    golden_inputs: list[list[float]] = field(default_factory=list)
    golden_scores: list[float] = field(default_factory=list)
    status: str = "candidate"  # "candidate" | "rejected"
    decision: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest(ManifestFields):
    model_name: str = ""
    version: str = ""
    sha256: str = ""
    created_ms: int = 0
    # The registry key's signature of (model_name, version, sha256, fingerprint);
    # "" when published without a key (and in manifests older than the field).
    signature: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Manifest:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(Manifest)}
        return Manifest(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ModelVersion:
    """A published version: its manifest and where its ONNX file is.

    ``signing_key`` is the key of the registry that read it (None: none set);
    :meth:`check_signature` checks the manifest against it. A version of a
    remote registry (fsspec, MLflow) names its file by ``uri`` and reads it
    with ``fetch``; ``model_path`` is then where the bytes are kept locally
    once read.
    """

    manifest: Manifest
    model_path: Path
    signing_key: ModelKey | None = field(default=None, repr=False, compare=False)
    uri: str = ""
    fetch: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def location(self) -> str:
        """Where the model file lives, as a URI (what announcements carry)."""
        return self.uri or self.model_path.resolve().as_uri()

    def check_signature(self) -> None:
        """Raise :class:`~loopline.registry.signatures.SignatureError` when the
        registry has a key and the manifest is unsigned or signed otherwise."""
        if self.signing_key is not None:
            self.signing_key.check(self.manifest)

    def read_verified(self) -> bytes:
        """The ONNX bytes, checked against the manifest's sha256."""
        data = self.fetch() if self.fetch is not None else self.model_path.read_bytes()
        digest = sha256_hex(data)
        if digest != self.manifest.sha256:
            raise IntegrityError(
                f"{self.manifest.model_name} v{self.manifest.version}: model file sha256 "
                f"{digest[:12]}... does not match manifest {self.manifest.sha256[:12]}..."
            )
        return data


def model_update(
    mv: ModelVersion, alias: str, action: str, plan: RolloutPlan | None = None
) -> ModelUpdate:
    """The model-updates record saying ``alias`` of a model now means ``mv``.

    The topic is compacted by model name: every record states the model's
    current champion (and, for action ``rollout``, its plan), never a delta.
    """
    m = mv.manifest
    return ModelUpdate(
        model_name=m.model_name,
        version=m.version,
        alias=alias,
        sha256=m.sha256,
        uri=mv.location,
        fingerprint=m.fingerprint,
        time_ms=int(time.time() * 1000),
        action=action,
        plan=plan.to_dict() if plan is not None else {},
    )


class ModelRegistry(Protocol):
    """What the trainer and serving need from a registry."""

    def publish(self, model: str, onnx: bytes, fields: ManifestFields) -> ModelVersion: ...
    def get(self, model: str, version: str) -> ModelVersion: ...
    def versions(self, model: str) -> list[ModelVersion]: ...
    def aliases(self, model: str) -> dict[str, str]: ...
    def resolve(self, model: str, alias: str) -> ModelVersion | None: ...
    def set_alias(self, model: str, alias: str, version: str) -> None: ...
    def rollback(self, model: str, alias: str = "champion") -> str: ...
    def models(self) -> list[str]: ...
    def alias_history(self, model: str, alias: str) -> list[str]: ...
    def update_manifest(self, model: str, version: str, **changes: Any) -> ModelVersion: ...
    def rollout(self, model: str) -> RolloutPlan | None: ...
    def finish_rollout(
        self, model: str, plan_id: str, state: str, reason: str
    ) -> RolloutPlan | None: ...
