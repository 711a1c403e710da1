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
import logging
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
from loopline.contracts.rollout import ARMS, CANDIDATE, CHAMPION
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
from loopline.serving.rollout import NO_ROLLOUT, Arms, RolloutFollower
from loopline.serving.shadow import ShadowScorer

log = logging.getLogger(__name__)

# Of the request's remaining time, the store read leaves this share (at least
# the minimum) for the model run, the response and scheduling noise.
RESERVE_SHARE = 0.1
MIN_RESERVE_S = 0.001


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
    # Rollout arm override: "" (follow the plan), "champion" or "candidate".
    arm: str = ""


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
    arm: str = CHAMPION


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
        rollout: RolloutFollower | None = None,
    ) -> None:
        self.settings = settings
        self.fs = feature_set
        self.plan = LookupPlan(feature_set, key_prefix)
        self.store = store
        self.slot = slot
        self.metrics = metrics
        self.sink = sink
        self.rollout = rollout
        self.shadow: ShadowScorer | None = None
        if rollout is not None:
            self.shadow = ShadowScorer(
                record=rollout.record,
                current_plan_id=self._plan_id,
                log_prediction=sink.log if sink is not None else None,
                make_prediction=Prediction,
                metrics=metrics,
                queue_size=rollout.settings.shadow_queue_size,
            )
        self.last_known = LastKnown(settings.last_known_capacity)
        self.ids = RequestIds()
        # Set at the start of a graceful shutdown: new calls get UNAVAILABLE.
        self.draining = False
        self._key_fields = frozenset(self.plan.key_fields)
        self._key_prefixes = self.plan.key_prefixes
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
        candidate = self.rollout.arms.candidate if self.rollout is not None else None
        if candidate is not None and version == candidate.version:
            return candidate
        loaded = [current.version] + ([previous.version] if previous else [])
        loaded += [candidate.version] if candidate is not None else []
        raise ModelNotFoundError(
            f"model {current.name!r} version {version!r} is not loaded (loaded: {loaded})"
        )

    # -- online lookup path -------------------------------------------------
    def predict(self, inp: PredictInput, budget_s: float | None = None) -> Prediction:
        """Score one request; raises a :class:`LooplineError` for the caller to map.

        The hot path: the same steps as :meth:`predict_many` without its
        bookkeeping for several requests.
        """
        t0 = time.perf_counter()
        model = self.model(inp.model, inp.model_version)
        arms = self.rollout.arms if self.rollout is not None else NO_ROLLOUT
        ids = self._validate(inp)
        candidate = self._route(inp, arms, ids[0])
        keys = [p + i.encode() for p, i in zip(self._key_prefixes, ids, strict=True)]
        t = _request_time_s(inp)
        lookups = self._lookup(keys, budget_s, (t,))
        t1 = time.perf_counter()
        self.metrics.feature_fetch.observe(t1 - t0)
        vector, status, degraded = self._assemble(inp, lookups, t)
        row = (vector, status, degraded)
        prediction = None
        if candidate is not None:
            score = self._run_candidate(candidate, [candidate.order(vector)])
            if score is not None:
                prediction = self._prediction(inp, candidate, score[0], row, arm=CANDIDATE)
        if prediction is None:
            ordered = model.order(vector)
            if arms.plan is None:
                score = float(model.probabilities(np.array([ordered], dtype=np.float32))[0])
                if self.rollout is not None:
                    self.rollout.record_score(CHAMPION, score)
            else:
                out, wall, cpu = model.timed_probabilities(np.array([ordered], dtype=np.float32))
                score = float(out[0])
                self.rollout.record(  # type: ignore[union-attr]
                    CANDIDATE if model is arms.candidate else CHAMPION, "answer", wall, cpu, score
                )
            arm = CANDIDATE if model is arms.candidate else CHAMPION  # pinned to the candidate
            prediction = self._prediction(inp, model, score, row, arm=arm, ordered=ordered)
            self._shadow(arms, row, prediction, inp)
        self.metrics.inference.observe(time.perf_counter() - t1)
        return prediction

    def predict_many(
        self, inputs: Sequence[PredictInput], budget_s: float | None = None
    ) -> list[Prediction | LooplineError]:
        """Score several requests with one store round trip and one run per model.

        Each request succeeds or fails on its own (a bad one does not fail the
        others); a missing model fails them all with :class:`UnavailableError`.
        """
        t0 = time.perf_counter()
        results: list[Prediction | LooplineError | None] = [None] * len(inputs)
        models: list[LoadedModel | None] = [None] * len(inputs)
        answering: list[LoadedModel | None] = [None] * len(inputs)
        arms = self.rollout.arms if self.rollout is not None else NO_ROLLOUT
        keys: list[bytes] = []
        todo: list[int] = []
        for i, inp in enumerate(inputs):
            try:
                models[i] = self.model(inp.model, inp.model_version)
                ids = self._validate(inp)
                answering[i] = self._route(inp, arms, ids[0]) or models[i]
            except LooplineError as e:
                results[i] = e
                continue
            todo.append(i)
            keys += [p + x.encode() for p, x in zip(self._key_prefixes, ids, strict=True)]
        if not todo:
            return results  # type: ignore[return-value]
        times = [_request_time_s(inputs[i]) for i in todo]
        lookups = self._lookup(keys, budget_s, times)
        t1 = time.perf_counter()
        self.metrics.feature_fetch.observe(t1 - t0)

        n = len(self.plan.entities)
        rows: dict[int, tuple[list[float], Sequence[FeatureStatus], bool]] = {}
        # Rows per answering model: pinned versions (OIP) and canary arms run apart.
        groups: dict[int, list[int]] = {}
        for j, i in enumerate(todo):
            try:
                rows[i] = self._assemble(inputs[i], lookups[j * n : (j + 1) * n], times[j])
            except InvalidRequestError as e:
                results[i] = e
                continue
            groups.setdefault(id(answering[i]), []).append(i)
        fallback: list[int] = []
        for members in groups.values():
            model = answering[members[0]]
            assert model is not None
            matrix = [model.order(rows[i][0]) for i in members]
            if model is arms.candidate and model is not models[members[0]]:
                scores = self._run_candidate(model, matrix)
                if scores is None:
                    fallback += members  # the champion answers these instead
                    continue
                for i, score in zip(members, scores, strict=True):
                    results[i] = self._prediction(inputs[i], model, score, rows[i], arm=CANDIDATE)
                continue
            self._answer_champion(
                inputs,
                members=members,
                model=model,
                matrix=matrix,
                rows=rows,
                results=results,
                arms=arms,
            )
        for i in fallback:
            model = models[i]
            assert model is not None
            self._answer_champion(
                inputs,
                members=[i],
                model=model,
                matrix=[model.order(rows[i][0])],
                rows=rows,
                results=results,
                arms=arms,
            )
        self.metrics.inference.observe(time.perf_counter() - t1)
        return results  # type: ignore[return-value]

    def _answer_champion(
        self,
        inputs: Sequence[PredictInput],
        *,
        members: list[int],
        model: LoadedModel,
        matrix: list[list[float]],
        rows: Mapping[int, tuple[list[float], Sequence[FeatureStatus], bool]],
        results: list[Prediction | LooplineError | None],
        arms: Arms,
    ) -> None:
        scores, wall, cpu = model.timed_probabilities(np.array(matrix, dtype=np.float32))
        n = len(members)
        arm = CANDIDATE if model is arms.candidate else CHAMPION  # pinned to the candidate
        for i, ordered, score in zip(members, matrix, scores, strict=True):
            if self.rollout is not None and arms.plan is None:
                self.rollout.record_score(arm, float(score))
            elif self.rollout is not None:
                self.rollout.record(arm, "answer", wall / n, cpu / n, float(score))
            prediction = self._prediction(
                inputs[i], model, float(score), rows[i], arm=arm, ordered=ordered
            )
            results[i] = prediction
            self._shadow(arms, rows[i], prediction, inputs[i])

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
        for name in self.plan.key_fields:
            value = inp.entities.get(name, "")
            if not value:
                raise InvalidRequestError(f"entity field {name!r} is missing or empty")
            if len(value) > limit:
                raise InvalidRequestError(
                    f"entity field {name!r} is {len(value)} characters long (limit {limit})"
                )
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
        if inp.arm and inp.arm not in ARMS:
            raise InvalidRequestError(
                f"arm {inp.arm!r} is not one of {('', *ARMS)}; '' follows the rollout plan"
            )
        if inp.event_time_ms < 0:
            raise InvalidRequestError(
                f"event_time_ms is {inp.event_time_ms}; use epoch milliseconds, or 0 for now"
            )
        return self.plan.entity_ids(inp.entities)

    def _lookup(
        self, keys: list[bytes], budget_s: float | None, times: Sequence[float]
    ) -> list[EntityLookup]:
        budget = self._default_budget_s if budget_s is None else budget_s
        timeout = min(self._feature_timeout_s, budget - max(MIN_RESERVE_S, RESERVE_SHARE * budget))
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

    def _assemble(
        self, inp: PredictInput, lookups: Sequence[EntityLookup], t: float
    ) -> tuple[list[float], Sequence[FeatureStatus], bool]:
        """The feature-set vector, per-feature statuses (feature-set order), degraded."""
        stored = {e: lk.values for e, lk in zip(self.plan.entities, lookups, strict=True)}
        try:
            vector = self.fs.assemble(stored, inp.fields, t)
        except FeatureError as e:
            raise InvalidRequestError(str(e)) from e
        entity_status = [lk.status for lk in lookups]
        if all(s is FeatureStatus.OK for s in entity_status):
            return vector, self._all_ok, False
        for s in set(entity_status):
            if s is not FeatureStatus.OK:
                self.metrics.degraded.labels(s.value).inc()
        return vector, self.plan.feature_statuses(entity_status), True

    def _prediction(
        self,
        inp: PredictInput,
        model: LoadedModel,
        score: float,
        row: tuple[list[float], Sequence[FeatureStatus], bool],
        *,
        arm: str,
        ordered: list[float] | None = None,
    ) -> Prediction:
        """The prediction of ``model`` (the arm that answered), logged."""
        vector, status, degraded = row
        if ordered is None:
            ordered = model.order(vector)
        if degraded and model.permutation is not None:
            status = [status[k] for k in model.permutation]
        prediction = Prediction(
            request_id=inp.request_id or self.ids.next(),
            score=score,
            model=model,
            features=ordered,
            statuses=status,
            degraded=degraded,
            entities=inp.entities,
            arm=arm,
        )
        if self.sink is not None:
            self.sink.log(
                prediction,
                inp.event_time_ms or int(time.time() * 1000),
                inp.event_id,
                model.manifest.feature_names,
            )
        return prediction

    # -- rollout ------------------------------------------------------------
    def _route(self, inp: PredictInput, arms: Arms, entity_id: str) -> LoadedModel | None:
        """The candidate when it answers ``inp`` (canary share or override), else None."""
        if inp.model_version:
            return None  # a pinned version answers itself
        if self.rollout is None:
            if inp.arm == CANDIDATE:
                raise InvalidRequestError("arm 'candidate' requested, but no rollout is running")
            return None
        return self.rollout.route(arms, entity_id, inp.arm)

    def _run_candidate(
        self, candidate: LoadedModel, matrix: list[list[float]]
    ) -> list[float] | None:
        """The candidate's scores, or None when its run fails (the champion answers)."""
        assert self.rollout is not None
        n = len(matrix)
        try:
            out, wall, cpu = candidate.timed_probabilities(np.array(matrix, dtype=np.float32))
            scores: list[float] | None = [float(x) for x in out]
        except Exception as e:  # onnxruntime raises its own hierarchy
            log.warning("candidate v%s failed; the champion answers: %s", candidate.version, e)
            scores, wall, cpu = None, 0.0, 0.0  # a failed run's time is never compared
        if scores is None:
            for _ in matrix:
                self.rollout.record(CANDIDATE, "answer", wall / n, cpu / n, None)
            return None
        ok = [self.rollout.record(CANDIDATE, "answer", wall / n, cpu / n, x) for x in scores]
        return scores if all(ok) else None

    def _shadow(
        self,
        arms: Arms,
        row: tuple[list[float], Sequence[FeatureStatus], bool],
        answered: Prediction,
        inp: PredictInput,
    ) -> None:
        """Queue the candidate's shadow score of a champion answer, when the plan samples it."""
        if arms.plan is None or answered.arm != CHAMPION:
            return
        assert self.rollout is not None and self.shadow is not None
        if not self.rollout.shadows(arms, answered.request_id):
            return
        assert arms.candidate is not None
        self.shadow.submit(
            arms.plan.plan_id,
            arms.candidate,
            row,
            answered,
            event_time_ms=inp.event_time_ms or int(time.time() * 1000),
            event_id=inp.event_id,
        )

    def live_models(self) -> list[LoadedModel]:
        """Every model a request may be answered by now (current, previous, candidate)."""
        live = [m for m in self.slot.models() if m is not None]
        if self.rollout is not None and self.rollout.arms.candidate is not None:
            live.append(self.rollout.arms.candidate)
        return live

    def _plan_id(self) -> str:
        plan = self.rollout.arms.plan if self.rollout is not None else None
        return plan.plan_id if plan is not None else ""

    def close(self) -> None:
        """Finish queued shadow scores (their logs go to the sink, still open)."""
        if self.shadow is not None:
            self.shadow.close()


def _request_time_s(inp: PredictInput) -> float:
    return inp.event_time_ms / 1000.0 if inp.event_time_ms else time.time()
