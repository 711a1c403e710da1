"""Which model version serves, and every change of it: load, swap, rollback, refusal.

All loading happens on the caller's thread (the follower's, never a request
thread): check the signature (when the registry has a key), read and verify
the file (sha256), check the fingerprint, build and warm the session, check
the golden rows; only then is the slot's one reference swapped. Any failure
leaves the current model serving and is remembered, so a bad version is not
retried on every poll (only once its file or manifest signature changes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from loopline.contracts.errors import (
    FingerprintMismatchError,
    IntegrityError,
    LooplineError,
    ModelError,
)
from loopline.featurecore.features import FeatureSet
from loopline.registry.manifest import Manifest, ModelRegistry, UnservableError
from loopline.registry.signatures import REASONS, SignatureError
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import LoadedModel, load_model
from loopline.serving.model_slot import ModelSlot

log = logging.getLogger(__name__)
# Refusal reasons beyond the signature's (the refusal metric's ``reason`` label).
MANIFEST = "manifest"  # no usable Loopline manifest (a version registered by hand)
FINGERPRINT = "fingerprint"  # built for another feature set than the one served
INTEGRITY = "integrity"  # the file's sha256 is not the manifest's
INVALID = "invalid"  # unloadable, wrong inputs or outputs, golden scores not reproduced
MODEL_REASONS = (MANIFEST, FINGERPRINT, INTEGRITY, INVALID)


@dataclass(frozen=True)
class SwapOutcome:
    """What :meth:`ModelManager.ensure` did, for logs and tests."""

    version: str
    result: str  # "current" | "loaded" | "rolled_back" | "refused" | "integrity" | "failed" | ...
    error: str = ""


class ModelManager:
    """Keeps ``slot`` on the version the registry alias names, if that version is sound."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        model_name: str,
        alias: str,
        feature_set: FeatureSet,
        slot: ModelSlot,
        metrics: ServingMetrics,
        golden_tolerance: float,
        on_change: Callable[[LoadedModel], None] | None = None,
        adopt: Callable[[str, str], LoadedModel | None] | None = None,
        on_other_feature_set: Callable[[Manifest], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        self.alias = alias
        self.fs = feature_set
        self.slot = slot
        self.metrics = metrics
        self.golden_tolerance = golden_tolerance
        self.on_change = on_change
        # A loaded, checked model of (version, sha256) to take over instead of
        # loading it again: a promoted rollout candidate.
        self.adopt = adopt
        # Told of a model refused for its feature set (it may be another applied version).
        self.on_other_feature_set = on_other_feature_set
        # (version, sha256, signature) of versions that failed: not retried until
        # the file or the signature changes.
        self.refused: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        for reason in (*REASONS, *MODEL_REASONS):  # present at 0 from the start, for `increase()`
            metrics.model_refusals.labels(reason)

    def sync(self, announced: tuple[str, str] | None = None) -> SwapOutcome | None:
        """Serve what the alias names now (None when the alias names nothing).

        ``announced`` is the (version, sha256) of a model-updates message. Its
        sha256 is checked only when the alias still names that version: an
        announcement read late (after the alias moved on) says nothing of the
        version served now.
        """
        try:
            # The hot path: one small read; a version is read only when it changed.
            version = self.registry.aliases(self.model_name).get(self.alias)
        except LooplineError as e:
            log.warning("cannot resolve %s@%s: %s", self.model_name, self.alias, e)
            return None
        if version is None:
            return None
        expect = announced[1] if announced is not None and announced[0] == version else ""
        return self.ensure(version, expect)

    def ensure(self, version: str, expect_sha256: str = "") -> SwapOutcome:
        """Serve ``version``: keep it, roll back to it, or load it; never raises."""
        with self._lock:
            current, previous = self.slot.models()
            if current is not None and current.version == version:
                return SwapOutcome(version, "current")
            if previous is not None and previous.version == version:
                self.slot.rollback()
                self.metrics.swaps.labels("rolled_back").inc()
                self._announce(previous, current)
                log.info("%s: rolled back to v%s (kept loaded)", self.model_name, version)
                return SwapOutcome(version, "rolled_back")
            return self._load(version, expect_sha256, current)

    def rollback(self) -> SwapOutcome | None:
        """Swap back to the previous version at once (None when there is none)."""
        with self._lock:
            current, previous = self.slot.models()
            if previous is None or not self.slot.rollback():
                return None
            self.metrics.swaps.labels("rolled_back").inc()
            self._announce(previous, current)
            return SwapOutcome(previous.version, "rolled_back")

    def _load(self, version: str, expect_sha256: str, current: LoadedModel | None) -> SwapOutcome:
        try:
            mv = self.registry.get(self.model_name, version)
        except UnservableError as e:
            # Registered without a usable manifest: it never serves as registered.
            if (version, "", "") in self.refused:
                return SwapOutcome(version, "skipped", str(e))
            self.metrics.model_refusals.labels(MANIFEST).inc()
            return self._refuse((version, "", ""), "refused", e, current)
        except LooplineError as e:
            self.metrics.swaps.labels("failed").inc()
            return SwapOutcome(version, "failed", str(e))
        key = (version, mv.manifest.sha256, mv.manifest.signature)
        if key in self.refused:
            return SwapOutcome(version, "skipped", self.refused[key])
        if expect_sha256 and expect_sha256 != mv.manifest.sha256:
            # The announcement is refused, not the registry's version: keyed by
            # the announced sha256, so a sound announcement of it still loads.
            announced = (version, expect_sha256, "announced")
            if announced in self.refused:
                return SwapOutcome(version, "skipped", self.refused[announced])
            self.metrics.model_refusals.labels(INTEGRITY).inc()
            error = IntegrityError(
                f"{self.model_name} v{version}: announced sha256 {expect_sha256[:12]}... "
                f"differs from the registry's {mv.manifest.sha256[:12]}..."
            )
            return self._refuse(announced, "integrity", error, current)
        t0 = time.perf_counter()
        adopted = None
        try:
            adopted = self.adopt(version, mv.manifest.sha256) if self.adopt else None
            model = adopted or load_model(mv, self.fs, self.golden_tolerance)
        except SignatureError as e:
            self.metrics.model_refusals.labels(e.reason).inc()
            return self._refuse(key, "integrity", e, current)
        except FingerprintMismatchError as e:
            if self.on_other_feature_set is not None and self.on_other_feature_set(mv.manifest):
                return self._refuse(key, "refused", e, current)  # another applied version
            self.metrics.model_refusals.labels(FINGERPRINT).inc()
            return self._refuse(key, "refused", e, current)
        except IntegrityError as e:
            self.metrics.model_refusals.labels(INTEGRITY).inc()
            return self._refuse(key, "integrity", e, current)
        except (ModelError, OSError) as e:
            self.metrics.model_refusals.labels(INVALID).inc()
            return self._refuse(key, "failed", e, current)
        if adopted is None:
            self.metrics.load_seconds.observe(time.perf_counter() - t0)
        self.slot.install(model)
        self.metrics.swaps.labels("loaded").inc()
        self._announce(model, current)
        log.info(
            "%s: now serving v%s (loaded in %.0f ms)",
            self.model_name,
            version,
            (time.perf_counter() - t0) * 1000,
        )
        return SwapOutcome(version, "loaded")

    def _refuse(
        self,
        key: tuple[str, str, str],
        result: str,
        error: Exception,
        current: LoadedModel | None,
    ) -> SwapOutcome:
        self.refused[key] = str(error)
        self.metrics.swaps.labels(result).inc()
        serving = f"still serving v{current.version}" if current else "no model is served"
        log.error("%s: %s; %s", self.model_name, error, serving)
        return SwapOutcome(key[0], result, str(error))

    def _announce(self, now: LoadedModel, before: LoadedModel | None) -> None:
        info = self.metrics.model_info
        if before is not None:
            info.labels(before.name, before.version, before.manifest.fingerprint[:12]).set(0)
        info.labels(now.name, now.version, now.manifest.fingerprint[:12]).set(1)
        if self.on_change is not None:
            self.on_change(now)
