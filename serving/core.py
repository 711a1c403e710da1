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

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from loopline.contracts.errors import (
    InvalidRequestError,
    LooplineError,
    ModelNotFoundError,
    UnavailableError,
)
from loopline.contracts.settings import ServingSettings
from loopline.featurecore.features import FeatureSet
from loopline.rollout.plan import CANDIDATE, CHAMPION
from loopline.serving.feature_store import FeatureStore
from loopline.serving.features import (
    FeatureStatus,
    LookupPlan,
)
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import LoadedModel
from loopline.serving.model_slot import ModelSlot
from loopline.serving.online_features import OnlineFeatures
from loopline.serving.requests import (
    PredictInput,
    Prediction,
    PredictionSink,
    RequestCheck,
    RequestIds,
)
from loopline.serving.rollout import NO_ROLLOUT, Arms, RolloutFollower
from loopline.serving.shadow import ShadowScorer

log = logging.getLogger(__name__)


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
        self.features = OnlineFeatures(settings, feature_set, self.plan, store, metrics)
        self.check = RequestCheck(self.plan, settings.max_entity_id_length)
        self.ids = RequestIds()
        # Set at the start of a graceful shutdown: new calls get UNAVAILABLE.
        self.draining = False
        self._key_prefixes = self.plan.key_prefixes
        self._all_ok = self.features.all_ok

    # -- models -------------------------------------------------------------
    def model(self, name: str = "", version: str = "") -> LoadedModel:
        """The model answering for ``name``/``version`` (empty: the default, current)."""
        if name and name != self.fs.name:
            raise ModelNotFoundError(f"unknown model {name!r}; this server serves {self.fs.name!r}")
        if self.draining:
            raise UnavailableError("the server is shutting down; retry on another instance")
        current, previous = self.slot.models()
        if current is None:
            raise UnavailableError(
                f"no model loaded yet for {self.fs.name!r} "
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
        ids = self.check(inp)
        candidate = self._route(inp, arms, ids[0])
        keys = [p + i.encode() for p, i in zip(self._key_prefixes, ids, strict=True)]
        t = _request_time_s(inp)
        lookups = self.features.lookup(keys, budget_s, (t,))
        t1 = time.perf_counter()
        self.metrics.feature_fetch.observe(t1 - t0)
        vector, status, degraded = self.features.assemble(inp, lookups, t)
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
                ids = self.check(inp)
                answering[i] = self._route(inp, arms, ids[0]) or models[i]
            except LooplineError as e:
                results[i] = e
                continue
            todo.append(i)
            keys += [p + x.encode() for p, x in zip(self._key_prefixes, ids, strict=True)]
        if not todo:
            return results  # type: ignore[return-value]
        times = [_request_time_s(inputs[i]) for i in todo]
        lookups = self.features.lookup(keys, budget_s, times)
        t1 = time.perf_counter()
        self.metrics.feature_fetch.observe(t1 - t0)

        n = len(self.plan.entities)
        rows: dict[int, tuple[list[float], Sequence[FeatureStatus], bool]] = {}
        # Rows per answering model: pinned versions (OIP) and canary arms run apart.
        groups: dict[int, list[int]] = {}
        for j, i in enumerate(todo):
            try:
                rows[i] = self.features.assemble(inputs[i], lookups[j * n : (j + 1) * n], times[j])
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
