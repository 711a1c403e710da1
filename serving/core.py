"""The transport-agnostic inference core: inputs in, scored predictions out.

Request -> validation -> one store round trip (MGET of every entity key)
-> vector assembly with :meth:`FeatureSet.assemble` -> the model's input
order -> one onnxruntime run -> predictions with a status per feature ->
asynchronous prediction log. gRPC servicers (Loopline v1, Open Inference
Protocol v2) are thin adapters over :class:`InferenceCore`; errors are the
domain errors of :mod:`loopline.contracts.errors`, mapped to status codes in
one table (:mod:`loopline.serving.status`).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from loopline.contracts.errors import (
    FeatureError,
    InvalidRequestError,
    LooplineError,
    ModelNotFoundError,
    UnavailableError,
)
from loopline.contracts.features import FeatureSet
from loopline.contracts.settings import ServingSettings
from loopline.serving.feature_store import FeatureStore
from loopline.serving.features import (
    EntityLookup,
    FeatureStatus,
    LastKnown,
    LookupPlan,
    fetch,
)
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import LoadedModel
from loopline.serving.model_slot import ModelSlot

# Kept for the model run and the response when the store read is bounded by a deadline.
INFERENCE_RESERVE_S = 0.001


@dataclass(frozen=True, slots=True)
class PredictInput:
    """One scoring request, independent of the API it arrived through."""

    entities: Mapping[str, str]
    fields: Mapping[str, float]
    event_time_ms: int = 0
    request_id: str = ""
    event_id: str = ""
    model: str = ""
    model_version: str = ""


@dataclass(slots=True)
class Prediction:
    """A score with the exact vector (model order) and a status per feature."""

    request_id: str
    score: float
    model: LoadedModel
    features: list[float]
    statuses: Sequence[FeatureStatus]
    degraded: bool
    entities: Mapping[str, str] = field(default_factory=dict)


class PredictionSink(Protocol):
    """Where served predictions go (the Kafka predictions topic); must not block."""

    def log(
        self,
        prediction: Prediction,
        event_time_ms: int,
        event_id: str,
        feature_names: Sequence[str],
    ) -> None: ...


class RequestIds:
    """Unique request ids without the cost of a UUID per call.

    >>> ids = RequestIds("p1")
    >>> ids.next(), ids.next()
    ('p1-1', 'p1-2')
    """

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


class InferenceCore:
    """Scores requests with the model in ``slot`` and features from ``store``."""

    def __init__(
        self,
        *,
        settings: ServingSettings,
        feature_set: FeatureSet,
        key_prefix: str,
        store: FeatureStore,
        slot: ModelSlot,
        metrics: ServingMetrics,
        sink: PredictionSink | None = None,
    ) -> None:
        self.settings = settings
        self.fs = feature_set
        self.plan = LookupPlan(feature_set, key_prefix)
        self.store = store
        self.slot = slot
        self.metrics = metrics
        self.sink = sink
        self.last_known = LastKnown(settings.last_known_capacity)
        self.ids = RequestIds()
        # Set at the start of a graceful shutdown: new calls get UNAVAILABLE.
        self.draining = False
        self._key_fields = frozenset(self.plan.key_fields)
        self._request_fields = frozenset(self.plan.request_fields)
        self._all_ok = tuple(FeatureStatus.OK for _ in feature_set.model_features)
        self._feature_timeout_s = settings.feature_timeout_ms / 1000.0
        self._default_budget_s = settings.default_deadline_ms / 1000.0

    # -- models -------------------------------------------------------------
    def model(self, name: str = "", version: str = "") -> LoadedModel:
        """The model answering for ``name``/``version`` (empty: the default, current)."""
        if name and name != self.settings.model_name:
            raise ModelNotFoundError(
                f"unknown model {name!r}; this server serves {self.settings.model_name!r}"
            )
        if self.draining:
            raise UnavailableError("the server is shutting down; retry on another instance")
        current, previous = self.slot.models()
        if current is None:
            raise UnavailableError(
                f"no model loaded yet for {self.settings.model_name!r} "
                f"(following alias {self.settings.alias!r})"
            )
        if not version or version == current.version:
            return current
        if previous is not None and version == previous.version:
            return previous
        loaded = [current.version] + ([previous.version] if previous else [])
        raise ModelNotFoundError(
            f"model {current.name!r} version {version!r} is not loaded (loaded: {loaded})"
        )

    # -- online lookup path -------------------------------------------------
    def predict(self, inp: PredictInput, budget_s: float | None = None) -> Prediction:
        """Score one request; raises a :class:`LooplineError` for the caller to map."""
        result = self.predict_many([inp], budget_s)[0]
        if isinstance(result, LooplineError):
            raise result
        return result

    def predict_many(
        self, inputs: Sequence[PredictInput], budget_s: float | None = None
    ) -> list[Prediction | LooplineError]:
        """Score several requests with one store round trip and one model run.

        Each request succeeds or fails on its own (a bad one does not fail the
        others); a missing model fails them all with :class:`UnavailableError`.
        """
        t0 = time.perf_counter()
        results: list[Prediction | LooplineError | None] = [None] * len(inputs)
        models: list[LoadedModel | None] = [None] * len(inputs)
        ids_per_input: list[list[str] | None] = [None] * len(inputs)
        for i, inp in enumerate(inputs):
            try:
                models[i] = self.model(inp.model, inp.model_version)
                ids_per_input[i] = self._validate(inp)
            except LooplineError as e:
                results[i] = e
        todo = [i for i, r in enumerate(results) if r is None]
        if not todo:
            return results  # type: ignore[return-value]

        n_entities = len(self.plan.entities)
        keys: list[bytes] = []
        for i in todo:
            keys += self.plan.keys(ids_per_input[i])  # type: ignore[arg-type]
        times = [_request_time_s(inputs[i]) for i in todo]
        lookups = self._lookup(keys, budget_s, times)
        t1 = time.perf_counter()
        self.metrics.feature_fetch.observe(t1 - t0)

        rows: list[list[float]] = []
        statuses: list[Sequence[FeatureStatus]] = []
        degraded: list[bool] = []
        for j, i in enumerate(todo):
            inp = inputs[i]
            entity = lookups[j * n_entities : (j + 1) * n_entities]
            stored = {e: lk.values for e, lk in zip(self.plan.entities, entity, strict=True)}
            try:
                vector = self.fs.assemble(stored, inp.fields, times[j])
            except FeatureError as e:
                results[i] = InvalidRequestError(str(e))
                continue
            entity_status = [lk.status for lk in entity]
            if all(s is FeatureStatus.OK for s in entity_status):
                status: Sequence[FeatureStatus] = self._all_ok
                degraded.append(False)
            else:
                status = self.plan.feature_statuses(entity_status)
                degraded.append(True)
                for s in set(entity_status):
                    if s is not FeatureStatus.OK:
                        self.metrics.degraded.labels(s.value).inc()
            rows.append(vector)
            statuses.append(status)
        scored = [i for i in todo if results[i] is None]
        self._score(
            inputs=inputs,
            scored=scored,
            models=models,
            rows=rows,
            statuses=statuses,
            degraded=degraded,
            results=results,
        )
        self.metrics.inference.observe(time.perf_counter() - t1)
        return results  # type: ignore[return-value]

    # -- raw feature path (OIP tensors) -------------------------------------
    def score_matrix(
        self, model: LoadedModel, matrix: np.ndarray, request_id: str = ""
    ) -> np.ndarray:
        """Probabilities ``[n, 2]`` for a float32 matrix already in the model's order.

        Each row is logged as a prediction with no entities (the caller
        supplied the features).
        """
        if matrix.ndim != 2 or matrix.shape[1] != model.n_features:
            raise InvalidRequestError(
                f"expected a [n, {model.n_features}] FP32 tensor of features in the order "
                f"{model.manifest.feature_names}, got shape {list(matrix.shape)}"
            )
        n = matrix.shape[0]
        if n == 0:
            raise InvalidRequestError("the tensor has no rows")
        if n > self.settings.max_batch_size:
            raise InvalidRequestError(
                f"{n} rows exceed the batch limit {self.settings.max_batch_size}"
            )
        bad = np.argwhere(~np.isfinite(matrix))
        if len(bad):
            r, c = (int(x) for x in bad[0])
            raise InvalidRequestError(
                f"row {r} column {c} ({model.manifest.feature_names[c]}) is "
                f"{matrix[r, c]}; features must be finite"
            )
        t0 = time.perf_counter()
        positive = model.probabilities(matrix).astype(np.float32)
        self.metrics.inference.observe(time.perf_counter() - t0)
        if self.sink is not None:
            now_ms = int(time.time() * 1000)
            for r in range(n):
                rid = request_id if n == 1 else f"{request_id}-{r}" if request_id else ""
                prediction = Prediction(
                    request_id=rid or self.ids.next(),
                    score=float(positive[r]),
                    model=model,
                    features=[float(v) for v in matrix[r]],
                    statuses=self._all_ok,
                    degraded=False,
                )
                self.sink.log(prediction, now_ms, "", model.manifest.feature_names)
        return np.stack([1.0 - positive, positive], axis=1)

    # -- internals ----------------------------------------------------------
    def _validate(self, inp: PredictInput) -> list[str]:
        """Entity ids in view order; raises with a precise message on any fault."""
        limit = self.settings.max_entity_id_length
        for name in inp.entities:
            if name not in self._key_fields:
                raise InvalidRequestError(
                    f"unknown entity field {name!r}; expected {sorted(self._key_fields)}"
                )
        ids = []
        for name in self.plan.key_fields:
            value = inp.entities.get(name, "")
            if not value:
                raise InvalidRequestError(f"entity field {name!r} is missing or empty")
            if len(value) > limit:
                raise InvalidRequestError(
                    f"entity field {name!r} is {len(value)} characters long (limit {limit})"
                )
            ids.append(value)
        for name in inp.fields:
            if name not in self._request_fields:
                raise InvalidRequestError(
                    f"unknown field {name!r}; expected {sorted(self._request_fields)}"
                )
        for name in self.plan.request_fields:
            value = inp.fields.get(name)
            if value is None:
                raise InvalidRequestError(f"field {name!r} is missing")
            if not math.isfinite(value):
                raise InvalidRequestError(f"field {name!r} is {value}; it must be finite")
        if inp.event_time_ms < 0:
            raise InvalidRequestError(
                f"event_time_ms is {inp.event_time_ms}; use epoch milliseconds, or 0 for now"
            )
        return ids

    def _lookup(
        self, keys: list[bytes], budget_s: float | None, times: Sequence[float]
    ) -> list[EntityLookup]:
        budget = self._default_budget_s if budget_s is None else budget_s
        timeout = min(self._feature_timeout_s, budget - INFERENCE_RESERVE_S)
        if timeout <= 0:
            # Not even the store's timeout fits in the deadline: answer from memory.
            raws, reason = None, "deadline"
        else:
            raws, error = fetch(self.store, keys, timeout)
            reason = error.reason if error is not None else ""
        if raws is None:
            self.metrics.store_errors.labels(reason).inc()
            return self.plan.fallback(keys, self.last_known)
        n = len(self.plan.entities)
        out: list[EntityLookup] = []
        stale_after = self.settings.stale_after_s
        for j, t in enumerate(times):
            sl = slice(j * n, (j + 1) * n)
            out += self.plan.decode(raws[sl], t, stale_after, self.last_known, keys[sl])
        return out

    def _score(
        self,
        *,
        inputs: Sequence[PredictInput],
        scored: Sequence[int],
        models: Sequence[LoadedModel | None],
        rows: list[list[float]],
        statuses: list[Sequence[FeatureStatus]],
        degraded: list[bool],
        results: list[Prediction | LooplineError | None],
    ) -> None:
        if not scored:
            return
        # Requests pinned to different versions (OIP) run per model.
        by_model: dict[int, list[int]] = {}
        for j, i in enumerate(scored):
            by_model.setdefault(id(models[i]), []).append(j)
        for positions in by_model.values():
            model = models[scored[positions[0]]]
            assert model is not None
            ordered = [model.order(rows[j]) for j in positions]
            matrix = np.asarray(ordered, dtype=np.float32)
            scores = model.probabilities(matrix)
            for j, score, vector in zip(positions, scores, ordered, strict=True):
                i = scored[j]
                inp = inputs[i]
                status = statuses[j]
                if model.permutation is not None and status is not self._all_ok:
                    status = [status[k] for k in model.permutation]
                prediction = Prediction(
                    request_id=inp.request_id or self.ids.next(),
                    score=float(score),
                    model=model,
                    features=vector,
                    statuses=status,
                    degraded=degraded[j],
                    entities=inp.entities,
                )
                results[i] = prediction
                if self.sink is not None:
                    self.sink.log(
                        prediction,
                        inp.event_time_ms or int(time.time() * 1000),
                        inp.event_id,
                        model.manifest.feature_names,
                    )


def _request_time_s(inp: PredictInput) -> float:
    return inp.event_time_ms / 1000.0 if inp.event_time_ms else time.time()
