"""A request's features online: one bounded store round trip, then the vector and statuses.

The store read leaves part of the request's deadline for the model run; when
the store fails or the deadline is too short, last-known or default values
answer, marked ``defaulted`` (and counted), never a hang. On a Redis Cluster
only the keys of a shard that failed fall back.
"""

from __future__ import annotations

from collections.abc import Sequence

from loopline.contracts.errors import FeatureError, InvalidRequestError
from loopline.contracts.settings import ServingSettings
from loopline.featurecore.features import FeatureSet
from loopline.serving.feature_store import FeatureStore, PartialStoreError
from loopline.serving.features import EntityLookup, FeatureStatus, LastKnown, LookupPlan, fetch
from loopline.serving.metrics import ServingMetrics
from loopline.serving.requests import FeatureRow, PredictInput

# Of the request's remaining time, the store read leaves this share (at least
# the minimum) for the model run, the response and scheduling noise.
RESERVE_SHARE = 0.1
MIN_RESERVE_S = 0.001


class OnlineFeatures:
    """Reads and assembles one server's feature set for requests."""

    def __init__(
        self,
        settings: ServingSettings,
        feature_set: FeatureSet,
        plan: LookupPlan,
        store: FeatureStore,
        metrics: ServingMetrics,
    ) -> None:
        self.settings = settings
        self.fs = feature_set
        self.plan = plan
        self.store = store
        self.metrics = metrics
        self.last_known = LastKnown(settings.last_known_capacity)
        self.all_ok = tuple(FeatureStatus.OK for _ in feature_set.model_features)
        self._feature_timeout_s = settings.feature_timeout_ms / 1000.0
        self._default_budget_s = settings.default_deadline_ms / 1000.0
        self._key_prefixes = plan.key_prefixes
        self._key_suffix = plan.key_suffix

    def keys(self, entity_ids: Sequence[str]) -> list[bytes]:
        """The store keys of one request's entity ids (in view order)."""
        if self._key_suffix:  # hash-tagged (Redis Cluster)
            s = self._key_suffix
            return [p + i.encode() + s for p, i in zip(self._key_prefixes, entity_ids, strict=True)]
        return [p + i.encode() for p, i in zip(self._key_prefixes, entity_ids, strict=True)]

    def lookup(
        self, keys: list[bytes], budget_s: float | None, times: Sequence[float]
    ) -> list[EntityLookup]:
        """Each request's entity lookups (``len(plan.entities)`` per time in ``times``)."""
        budget = self._default_budget_s if budget_s is None else budget_s
        timeout = min(self._feature_timeout_s, budget - max(MIN_RESERVE_S, RESERVE_SHARE * budget))
        if timeout <= 0:
            # Not even the store's timeout fits in the deadline: answer from memory.
            raws, reason, error = None, "deadline", None
        else:
            raws, error = fetch(self.store, keys, timeout)
            reason = error.reason if error is not None else ""
        if raws is None:
            self.metrics.store_errors.labels(reason).inc()
            if not isinstance(error, PartialStoreError):
                return self.plan.fallback(keys, self.last_known)
            # Some shards of a cluster answered: their keys are used, the others fall back.
            out = self._decode(error.values, keys, times)
            n = len(self.plan.entities)
            for i in error.failed:
                out[i] = self.plan.fallback_one(keys[i], i % n, self.last_known)
            return out
        return self._decode(raws, keys, times)

    def _decode(
        self, raws: list[bytes | None], keys: list[bytes], times: Sequence[float]
    ) -> list[EntityLookup]:
        n = len(self.plan.entities)
        out: list[EntityLookup] = []
        stale_after = self.settings.stale_after_s
        for j, t in enumerate(times):
            sl = slice(j * n, (j + 1) * n)
            out += self.plan.decode(raws[sl], t, stale_after, self.last_known, keys[sl])
        return out

    def assemble(self, inp: PredictInput, lookups: Sequence[EntityLookup], t: float) -> FeatureRow:
        """The feature-set vector, per-feature statuses (feature-set order), degraded."""
        stored = {e: lk.values for e, lk in zip(self.plan.entities, lookups, strict=True)}
        try:
            vector = self.fs.assemble(stored, inp.fields, t)
        except FeatureError as e:
            raise InvalidRequestError(str(e)) from e
        entity_status = [lk.status for lk in lookups]
        if all(s is FeatureStatus.OK for s in entity_status):
            return vector, self.all_ok, False
        for s in set(entity_status):
            if s is not FeatureStatus.OK:
                self.metrics.degraded.labels(s.value).inc()
        return vector, self.plan.feature_statuses(entity_status), True
