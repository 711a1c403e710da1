"""Which feature-set versions of a repo are applied: a small JSON file in the registry.

``loopline apply`` records each model's compiled feature set by fingerprint;
a changed computation gets the next version number (and, through its
fingerprint, new Redis keys), while earlier versions stay listed. Serving
refuses a model whose fingerprint was never applied.

>>> import tempfile, pathlib
>>> state = AppliedState(pathlib.Path(tempfile.mkdtemp()))
>>> state.record("eta", "f" * 64, {"views": []}, now_ms=1).version
1
>>> state.record("eta", "f" * 64, {"views": []}, now_ms=2).version  # unchanged: same version
1
>>> state.record("eta", "e" * 64, {"views": []}, now_ms=3).version
2
>>> [v.version for v in state.versions("eta")], state.is_applied("eta", "f" * 64)
([1, 2], True)
>>> from loopline.featurecore.sample import SAMPLE
>>> fs = SAMPLE.feature_set()
>>> _ = state.record("returns", fs.fingerprint, fs.describe(), now_ms=4)
>>> state.feature_set("returns", version=1).fingerprint == fs.fingerprint
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.featurecore.features import FeatureSet, from_description
from loopline.storage.files import atomic_write

STATE_FILE = "feature-sets.json"


@dataclass(frozen=True)
class AppliedVersion:
    """One applied feature-set version of a model."""

    version: int
    fingerprint: str
    applied_ms: int
    description: dict[str, Any] = field(default_factory=dict)


class AppliedState:
    """The applied feature sets of every model in one registry folder."""

    def __init__(self, registry_root: Path) -> None:
        self.path = Path(registry_root) / STATE_FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        if not self.path.is_file():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.path} is unreadable ({e}); run `loopline apply` again") from e
        return doc if isinstance(doc, dict) else {}

    def versions(self, model: str) -> list[AppliedVersion]:
        return [AppliedVersion(**v) for v in self._read().get(model, [])]

    def current(self, model: str) -> AppliedVersion | None:
        versions = self.versions(model)
        return versions[-1] if versions else None

    def is_applied(self, model: str, fingerprint: str) -> bool:
        return any(v.fingerprint == fingerprint for v in self.versions(model))

    def feature_set(
        self, model: str, *, fingerprint: str = "", version: int = 0
    ) -> FeatureSet | None:
        """An applied version's feature set, rebuilt from its description (None: not applied)."""
        for v in self.versions(model):
            if (fingerprint and v.fingerprint == fingerprint) or v.version == version:
                fs = from_description(v.description)
                if fs.fingerprint != v.fingerprint:
                    raise ConfigError(
                        f"{self.path}: {model} v{v.version} does not rebuild to its fingerprint; "
                        "run `loopline apply` again"
                    )
                return fs
        return None

    def record(
        self, model: str, fingerprint: str, description: dict[str, Any], now_ms: int
    ) -> AppliedVersion:
        """The version of ``fingerprint``: the current one if unchanged, else a new one."""
        doc = self._read()
        versions = doc.setdefault(model, [])
        if versions and versions[-1]["fingerprint"] == fingerprint:
            return AppliedVersion(**versions[-1])
        for v in versions:
            if v["fingerprint"] == fingerprint:
                # Back to an earlier computation: it becomes current again, same version.
                versions.remove(v)
                versions.append(v)
                break
        else:
            number = max((v["version"] for v in versions), default=0) + 1
            versions.append(asdict(AppliedVersion(number, fingerprint, now_ms, description)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(doc, indent=2, sort_keys=True))
        return AppliedVersion(**versions[-1])
