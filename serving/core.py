"""The transport-agnostic inference core: inputs in, scored predictions out.

Request -> validation (:mod:`~loopline.serving.requests`) -> the answering
model (:mod:`~loopline.serving.model_slot`, or the rollout's candidate,
:mod:`~loopline.serving.rollout`) -> one store round trip and the vector
(:mod:`~loopline.serving.online_features`) -> one onnxruntime run per model
-> predictions with a status per feature, logged off the response path
(:mod:`~loopline.serving.prediction_log`; shadow scores in
:mod:`~loopline.serving.shadow`). gRPC servicers (Loopline v1, Open
Inference Protocol v2) are thin adapters over :class:`InferenceCore`; errors
are the domain errors of :mod:`loopline.contracts.errors`, mapped to status
codes in one table (:mod:`loopline.serving.status`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from loopline.contracts.errors import InvalidRequestError, LooplineError
from loopline.contracts.settings import ServingSettings
from loopline.featurecore.features import FeatureSet
from loopline.rollout.plan import CANDIDATE, CHAMPION
from loopline.serving.feature_store import FeatureStore
from loopline.serving.features import LookupPlan
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import LoadedModel
from loopline.serving.model_slot import ModelSlot, ServedModels
from loopline.serving.online_features import OnlineFeatures
from loopline.serving.prediction_log import PredictionRecorder, PredictionSink
from loopline.serving.requests import (
    FeatureRow,
    PredictInput,
    Prediction,
    RequestCheck,
    check_matrix,
)
from loopline.serving.rollout import NO_ROLLOUT, Arms, RolloutFollower
from loopline.serving.shadow import ShadowScorer


class InferenceCore:
    """Scores requests with the model in ``slot`` and features from ``store``."""

    def __init__(
        self,
        *,
        settings: ServingSettings,
        feature_set: FeatureSet,
        key_prefix: str,
        store: FeatureStore,
        cluster: bool = False,
        slot: ModelSlot,
        metrics: ServingMetrics,
        sink: PredictionSink | None = None,
        rollout: RolloutFollower | None = None,
    ) -> None:
        self.settings = settings
        self.fs = feature_set
        self.plan = LookupPlan(feature_set, key_prefix, cluster=cluster)
        self.store = store
        self.slot = slot
        self.metrics = metrics
        self.rollout = rollout
        self.models = ServedModels(
            slot, model_name=feature_set.name, alias=settings.alias, candidate=self._candidate
        )
        self.features = OnlineFeatures(settings, feature_set, self.plan, store, metrics)
        self.check = RequestCheck(self.plan, settings.max_entity_id_length)
        self.recorder = PredictionRecorder(sink)
        self.shadow: ShadowScorer | None = None
        if rollout is not None:
            self.shadow = ShadowScorer(
                rollout, log_prediction=sink.log if sink is not None else None, metrics=metrics
            )

    @property
    def sink(self) -> PredictionSink | None:
        """Where answers are logged (None: nowhere)."""
        return self.recorder.sink

    @sink.setter
    def sink(self, sink: PredictionSink | None) -> None:
        self.recorder.sink = sink

    def model(self, name: str = "", version: str = "", *, admitted: bool = False) -> LoadedModel:
        """The model answering for ``name``/``version`` (empty: the default, current).

        ``admitted``: the call was admitted on arrival (:meth:`ServedModels.admit`).
        """
        return self.models.pick(name, version, admitted=admitted)

    def live_models(self) -> list[LoadedModel]:
        """Every model a request may be answered by now (current, previous, candidate)."""
        return self.models.live()

    # -- online lookup path -------------------------------------------------
    def predict(
        self, inp: PredictInput, budget_s: float | None = None, *, admitted: bool = False
    ) -> Prediction:
        """Score one request; raises a :class:`LooplineError` for the caller to map.

        The hot path: the same steps as :meth:`predict_many` without its
        bookkeeping for several requests. ``admitted``: see :meth:`model`.
        """
        t0 = time.perf_counter()
        model = self.model(inp.model, inp.model_version, admitted=admitted)
        arms = self._arms()
        ids = self.check(inp)
        candidate = self._route(inp, arms, ids[0])
        t = inp.time_s()
        lookups = self.features.lookup(self.features.keys(ids), budget_s, (t,))
        t1 = time.perf_counter()
        self.metrics.feature_fetch.observe(t1 - t0)
        row = self.features.assemble(inp, lookups, t)
        answers = self._answer_candidate(candidate, [inp], [row]) if candidate is not None else None
        if answers is None:
            answers = self._answer(model, [inp], [row], arms)
        self.metrics.inference.observe(time.perf_counter() - t1)
        return answers[0]

    def predict_many(
        self,
        inputs: Sequence[PredictInput],
        budget_s: float | None = None,
        *,
        admitted: bool = False,
    ) -> list[Prediction | LooplineError]:
        """Score several requests with one store round trip and one run per model.

        Each request succeeds or fails on its own (a bad one does not fail the
        others); a missing model fails them all with :class:`UnavailableError`.
        ``admitted``: see :meth:`model`.
        """
        t0 = time.perf_counter()
        results: list[Prediction | LooplineError | None] = [None] * len(inputs)
        models: list[LoadedModel | None] = [None] * len(inputs)
        answering: list[LoadedModel | None] = [None] * len(inputs)
        arms = self._arms()
        keys: list[bytes] = []
        todo: list[int] = []
        for i, inp in enumerate(inputs):
            try:
                models[i] = self.model(inp.model, inp.model_version, admitted=admitted)
                ids = self.check(inp)
                answering[i] = self._route(inp, arms, ids[0]) or models[i]
            except LooplineError as e:
                results[i] = e
                continue
            todo.append(i)
            keys += self.features.keys(ids)
        if not todo:
            return results  # type: ignore[return-value]
        times = [inputs[i].time_s() for i in todo]
        lookups = self.features.lookup(keys, budget_s, times)
        t1 = time.perf_counter()
        self.metrics.feature_fetch.observe(t1 - t0)

        n = len(self.plan.entities)
        rows: dict[int, FeatureRow] = {}
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
            group = [inputs[i] for i in members], [rows[i] for i in members]
            if model is arms.candidate and model is not models[members[0]]:
                answers = self._answer_candidate(model, *group)
                if answers is None:
                    fallback += members  # the champion answers these instead
                    continue
            else:
                answers = self._answer(model, *group, arms)
            for i, answer in zip(members, answers, strict=True):
                results[i] = answer
        for i in fallback:
            model = models[i]
            assert model is not None
            results[i] = self._answer(model, [inputs[i]], [rows[i]], arms)[0]
        self.metrics.inference.observe(time.perf_counter() - t1)
        return results  # type: ignore[return-value]

    def _answer(
        self,
        model: LoadedModel,
        inputs: Sequence[PredictInput],
        rows: Sequence[FeatureRow],
        arms: Arms,
    ) -> list[Prediction]:
        """``model`` (the champion, or a pinned version) answers ``inputs`` in one run."""
        matrix = [model.order(row[0]) for row in rows]
        x = np.array(matrix, dtype=np.float32)
        if arms.plan is None:
            # No plan compares the arms: skip the timing only its evidence needs.
            scores, wall, cpu = model.probabilities(x), 0.0, 0.0
        else:
            scores, wall, cpu = model.timed_probabilities(x)
        arm = CANDIDATE if model is arms.candidate else CHAMPION  # pinned to the candidate
        if self.rollout is not None:
            self.rollout.record_answers(arms, arm, scores, wall, cpu)
        answers = []
        for inp, row, ordered, score in zip(inputs, rows, matrix, scores, strict=True):
            answer = self.recorder.answer(inp, model, float(score), row, arm=arm, ordered=ordered)
            if self.shadow is not None:
                self.shadow.offer(arms, row, answer, inp)
            answers.append(answer)
        return answers

    def _answer_candidate(
        self, candidate: LoadedModel, inputs: Sequence[PredictInput], rows: Sequence[FeatureRow]
    ) -> list[Prediction] | None:
        """The rollout candidate's answers; None when its run fails (the champion answers)."""
        assert self.rollout is not None
        scores = self.rollout.run_candidate(candidate, [candidate.order(row[0]) for row in rows])
        if scores is None:
            return None
        return [
            self.recorder.answer(inp, candidate, score, row, arm=CANDIDATE)
            for inp, score, row in zip(inputs, scores, rows, strict=True)
        ]

    # -- raw feature path (OIP tensors) -------------------------------------
    def score_matrix(
        self, model: LoadedModel, matrix: np.ndarray, request_id: str = ""
    ) -> np.ndarray:
        """Probabilities ``[n, 2]`` for a float32 matrix already in the model's order.

        Each row is logged as a prediction with no entities (the caller
        supplied the features).
        """
        check_matrix(matrix, model.manifest.feature_names, self.settings.max_batch_size)
        t0 = time.perf_counter()
        positive = model.probabilities(matrix).astype(np.float32)
        self.metrics.inference.observe(time.perf_counter() - t0)
        self.recorder.matrix(model, matrix, positive, request_id, self.features.all_ok)
        return np.stack([1.0 - positive, positive], axis=1)

    # -- rollout ------------------------------------------------------------
    def _arms(self) -> Arms:
        """The rollout arms for one request, read once (the follower swaps them)."""
        return self.rollout.arms if self.rollout is not None else NO_ROLLOUT

    def _route(self, inp: PredictInput, arms: Arms, entity_id: str) -> LoadedModel | None:
        """The candidate when it answers ``inp`` (canary share or override), else None."""
        if inp.model_version:
            return None  # a pinned version answers itself
        if self.rollout is None:
            if inp.arm == CANDIDATE:
                raise InvalidRequestError("arm 'candidate' requested, but no rollout is running")
            return None
        return self.rollout.route(arms, entity_id, inp.arm)

    def _candidate(self) -> LoadedModel | None:
        return self._arms().candidate

    def close(self) -> None:
        """Finish queued shadow scores (their logs go to the sink, still open)."""
        if self.shadow is not None:
            self.shadow.close()
