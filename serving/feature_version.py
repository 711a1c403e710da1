"""Which applied feature-set version a serving process computes: the champion's.

A changed view gets a new feature-set version (`loopline apply`), but the
champion was trained on the old one. Until a model trained on the new version
becomes champion, serving keeps reading the old version's values (Redis keys
carry the fingerprint, so both versions can be kept side by side by two
features flows). When the alias moves to a model of another applied version,
the process asks to be restarted on it (:class:`VersionSwitch`): a worker
drains and exits, the supervisor starts it again, and it starts on the new
champion's version.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from loopline.contracts.errors import LooplineError, UnavailableError
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.state import AppliedState
from loopline.registry.directory import Manifest, ModelRegistry

log = logging.getLogger(__name__)


def serving_feature_set(
    definitions: FeatureSet, registry: ModelRegistry, registry_root: Path, model: str, alias: str
) -> FeatureSet:
    """The definitions' feature set, or the champion's applied version while they differ."""
    state = AppliedState(registry_root)
    if not state.exists():
        log.warning("no applied feature sets in %s; run `loopline apply`", registry_root)
        return definitions
    try:
        champion = registry.resolve(model, alias)
        if champion is not None:
            # An unsigned manifest must not choose what serving computes.
            champion.check_signature()
    except LooplineError as e:
        log.warning("cannot resolve %s@%s: %s", model, alias, e)
        champion = None
    if champion is not None and champion.manifest.fingerprint != definitions.fingerprint:
        pinned = state.feature_set(model, fingerprint=champion.manifest.fingerprint)
        if pinned is not None:
            log.info(
                "%s v%s was trained on applied feature set %s: serving it until a model of the "
                "definitions' %s is %s",
                model,
                champion.manifest.version,
                pinned.fingerprint[:12],
                definitions.fingerprint[:12],
                alias,
            )
            return pinned
    check_applied(state, model, definitions)
    return definitions


def check_applied(state: AppliedState, model: str, fs: FeatureSet) -> None:
    """Refuse a feature set `loopline apply` never recorded."""
    if state.is_applied(model, fs.fingerprint):
        return
    current = state.current(model)
    now = f"v{current.version} ({current.fingerprint[:12]})" if current else "none"
    raise UnavailableError(
        f"the definitions give model {model!r} feature set {fs.fingerprint[:12]}, which was "
        f"never applied (applied: {now}); run `loopline plan` then `loopline apply`"
    )


class VersionSwitch:
    """Set when a model of another applied feature-set version should serve."""

    def __init__(self, registry_root: Path, serving: FeatureSet) -> None:
        self._state = AppliedState(registry_root)
        self._serving = serving
        self.requested = threading.Event()

    def consider(self, manifest: Manifest) -> bool:
        """Called for a model refused for its feature set: True when a restart serves it."""
        fp = manifest.fingerprint
        if fp == self._serving.fingerprint or not self._state.is_applied(manifest.model_name, fp):
            return False
        log.warning(
            "%s v%s needs applied feature set %s (serving %s): restarting on it",
            manifest.model_name,
            manifest.version,
            fp[:12],
            self._serving.fingerprint[:12],
        )
        self.requested.set()
        return True
