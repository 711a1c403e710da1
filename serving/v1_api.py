"""Loopline's own API (``loopline.v1.Inference``) over the core: protos in, protos out.

Handlers raise domain errors; :mod:`loopline.serving.grpc_server` turns them
into status codes. Responses are filled from a per-model template (names
and statuses preset), which costs a third of building 20 feature messages.
Concurrent ``Predict`` calls are scored in batches
(:mod:`~loopline.serving.call_batcher`, ``serving.batch_max_calls``).
"""

from __future__ import annotations

from collections.abc import Sequence

from loopline.contracts.errors import LooplineError
from loopline.serving.call_batcher import CallBatcher
from loopline.serving.core import InferenceCore
from loopline.serving.features import FeatureStatus
from loopline.serving.model import LoadedModel
from loopline.serving.requests import (
    PredictInput,
    Prediction,
    check_ids,
    check_rows,
    check_size,
)
from loopline.serving.status import status_for
from loopline.v1 import inference_pb2 as pb

STATUS_TO_PROTO = {
    FeatureStatus.OK: pb.FEATURE_STATUS_OK,
    FeatureStatus.MISSING: pb.FEATURE_STATUS_MISSING,
    FeatureStatus.STALE: pb.FEATURE_STATUS_STALE,
    FeatureStatus.DEFAULTED: pb.FEATURE_STATUS_DEFAULTED,
}


class V1Handlers:
    """``Predict`` and ``PredictBatch`` as plain functions of a request."""

    def __init__(self, core: InferenceCore, max_message_bytes: int) -> None:
        self.core = core
        self.max_message_bytes = max_message_bytes
        # model -> a response with every feature name filled in, status OK
        self._templates: dict[int, tuple[LoadedModel, pb.PredictResponse]] = {}
        conf = core.settings
        self.batcher: CallBatcher[PredictInput, Prediction] | None = (
            CallBatcher(
                self._score,
                max_batch=conf.batch_max_calls,
                max_wait_s=conf.batch_max_wait_us / 1e6,
            )
            if conf.batch_max_calls > 1
            else None
        )

    def predict(self, request: pb.PredictRequest, budget_s: float | None) -> pb.PredictResponse:
        check_size(request.ByteSize(), self.max_message_bytes)
        inp = self._input(request)
        if self.batcher is None:
            return self._response(self.core.predict(inp, budget_s))
        # Admitted now: a shutdown that begins while it waits in a batch lets it finish.
        self.core.models.admit()
        return self._response(self.batcher.submit(inp, budget_s))

    def _score(
        self, inputs: Sequence[PredictInput], budget_s: float | None
    ) -> Sequence[Prediction | LooplineError]:
        """A batch of calls' predictions; one alone takes the single-call path."""
        if len(inputs) > 1:
            return self.core.predict_many(inputs, budget_s, admitted=True)
        try:
            return [self.core.predict(inputs[0], budget_s, admitted=True)]
        except LooplineError as e:
            return [e]

    def predict_batch(
        self, request: pb.PredictBatchRequest, budget_s: float | None
    ) -> pb.PredictBatchResponse:
        check_size(request.ByteSize(), self.max_message_bytes)
        check_rows(len(request.requests), self.core.settings.max_batch_size, "requests")
        inputs: list[PredictInput | LooplineError] = []
        for r in request.requests:
            try:
                inputs.append(self._input(r))
            except LooplineError as e:
                inputs.append(e)
        valid = [x for x in inputs if isinstance(x, PredictInput)]
        scored = iter(self.core.predict_many(valid, budget_s) if valid else [])
        out = pb.PredictBatchResponse()
        for x in inputs:
            result = next(scored) if isinstance(x, PredictInput) else x
            item = out.results.add()
            if isinstance(result, Prediction):
                item.response.CopyFrom(self._response(result))
            else:
                item.error.code = status_for(result).name
                item.error.message = str(result)
        return out

    def _input(self, request: pb.PredictRequest) -> PredictInput:
        # Before the model lookup, whose refusal echoes the name.
        check_ids(self.core.settings.max_entity_id_length, model=request.model, arm=request.arm)
        return PredictInput(
            entities=request.entities,
            fields=request.fields,
            event_time_ms=request.event_time_ms,
            request_id=request.request_id,
            event_id=request.event_id,
            model=request.model,
            arm=request.arm,
        )

    def _response(self, p: Prediction) -> pb.PredictResponse:
        resp = pb.PredictResponse()
        resp.CopyFrom(self._template(p.model))
        resp.request_id = p.request_id
        resp.score = p.score
        if p.arm != "champion":
            resp.arm = p.arm
        features = resp.features
        for fv, value in zip(features, p.features, strict=True):
            fv.value = value
        if p.degraded:
            resp.degraded = True
            for fv, status in zip(features, p.statuses, strict=True):
                if status is not FeatureStatus.OK:
                    fv.status = STATUS_TO_PROTO[status]
        return resp

    def _template(self, model: LoadedModel) -> pb.PredictResponse:
        entry = self._templates.get(id(model))
        if entry is None or entry[0] is not model:
            template = pb.PredictResponse(
                model_name=model.name,
                model_version=model.version,
                arm="champion",
                features=[
                    pb.FeatureValue(name=n, status=pb.FEATURE_STATUS_OK)
                    for n in model.manifest.feature_names
                ],
            )
            # Keep only live models' templates (at most three).
            live = {id(m) for m in self.core.live_models()}
            self._templates = {k: v for k, v in self._templates.items() if k in live}
            entry = self._templates[id(model)] = (model, template)
        return entry[1]
