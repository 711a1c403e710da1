"""The Open Inference Protocol v2 (``inference.GRPCInferenceService``) over the core.

``ModelInfer`` takes either

- the model's feature tensor: one FP32 input named as in the manifest
  (``input``), shape ``[n, k]``, features in the manifest's order; or
- entity ids: BYTES inputs named by the key fields of the feature set's
  views (e.g. ``user_id``), shape ``[n]``, plus the request fields
  (FP32, FP64 or INT64 ``[n]``) and optionally ``event_time_ms``
  (INT64 ``[n]``) and ``event_id`` (BYTES ``[n]``); features are then looked
  up online exactly as for ``Predict``.

Outputs: for a binary model ``probabilities`` (FP32 ``[n, 2]``), for a
regression model ``predictions`` (FP32 ``[n]``, the predicted values); for
entity inputs also ``features`` (FP32 ``[n, k]``, the vector the model saw)
and ``feature_status`` (BYTES ``[n, k]``: ok, missing, stale, defaulted).
Tensors travel as ``raw_input_contents``/``raw_output_contents`` or typed
contents, like Triton's clients send them.

>>> decode_bytes_tensor(b"\\x02\\x00\\x00\\x00c1\\x03\\x00\\x00\\x00c22", 2)
[b'c1', b'c22']
>>> encode_bytes_tensor([b"ok", b"stale"])
b'\\x02\\x00\\x00\\x00ok\\x05\\x00\\x00\\x00stale'
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from loopline import __version__
from loopline.contracts.errors import (
    InvalidRequestError,
    LooplineError,
    ModelNotFoundError,
)
from loopline.oip import grpc_predict_v2_pb2 as pb
from loopline.serving.core import InferenceCore
from loopline.serving.requests import (
    PredictInput,
    Prediction,
    check_ids,
    check_rows,
    check_size,
    shown,
)

NUMERIC = {
    "FP32": ("<f4", "fp32_contents"),
    "FP64": ("<f8", "fp64_contents"),
    "INT64": ("<i8", "int64_contents"),
    "INT32": ("<i4", "int_contents"),
}
PROBABILITIES, FEATURES, FEATURE_STATUS = "probabilities", "features", "feature_status"
PREDICTIONS = "predictions"
# Every output a model can answer (a binary model probabilities, a regression predictions).
OUTPUTS = (PROBABILITIES, PREDICTIONS, FEATURES, FEATURE_STATUS)
EVENT_TIME, EVENT_ID = "event_time_ms", "event_id"
_LEN = struct.Struct("<I")


def decode_bytes_tensor(raw: bytes, count: int) -> list[bytes]:
    """Triton's BYTES wire form: each element a 4-byte little-endian length, then the bytes."""
    out, pos = [], 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise InvalidRequestError(f"BYTES tensor ends before element {i} of {count}")
        (n,) = _LEN.unpack_from(raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise InvalidRequestError(f"BYTES tensor element {i} runs past the end")
        out.append(raw[pos : pos + n])
        pos += n
    if pos != len(raw):
        raise InvalidRequestError(f"BYTES tensor has {len(raw) - pos} bytes after {count} elements")
    return out


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(b)) + b for b in items)


class OipHandlers:
    """The six OIP v2 RPCs as plain functions of a request."""

    def __init__(self, core: InferenceCore, max_message_bytes: int) -> None:
        self.core = core
        self.max_message_bytes = max_message_bytes
        self.shutting_down = False

    # -- health and metadata ------------------------------------------------
    def server_live(self, request: pb.ServerLiveRequest, budget_s: float | None) -> Any:
        return pb.ServerLiveResponse(live=True)

    def server_ready(self, request: pb.ServerReadyRequest, budget_s: float | None) -> Any:
        ready = self.core.slot.current is not None and not self.shutting_down
        return pb.ServerReadyResponse(ready=ready)

    def model_ready(self, request: pb.ModelReadyRequest, budget_s: float | None) -> Any:
        try:
            self.core.model(request.name or "-", request.version)
        except LooplineError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self.shutting_down)

    def server_metadata(self, request: pb.ServerMetadataRequest, budget_s: float | None) -> Any:
        return pb.ServerMetadataResponse(name="loopline", version=__version__, extensions=[])

    def model_metadata(self, request: pb.ModelMetadataRequest, budget_s: float | None) -> Any:
        model = self.core.model(self._name(request.name, request.version), request.version)
        k = model.n_features
        tm = pb.ModelMetadataResponse.TensorMetadata
        plan = self.core.plan
        inputs = [tm(name=model.manifest.input_name, datatype="FP32", shape=[-1, k])]
        inputs += [tm(name=f, datatype="BYTES", shape=[-1]) for f in plan.key_fields]
        inputs += [tm(name=f, datatype="FP32", shape=[-1]) for f in plan.request_fields]
        inputs += [
            tm(name=EVENT_TIME, datatype="INT64", shape=[-1]),
            tm(name=EVENT_ID, datatype="BYTES", shape=[-1]),
        ]
        scores = (
            tm(name=PROBABILITIES, datatype="FP32", shape=[-1, 2])
            if model.binary
            else tm(name=PREDICTIONS, datatype="FP32", shape=[-1])
        )
        outputs = [
            scores,
            tm(name=FEATURES, datatype="FP32", shape=[-1, k]),
            tm(name=FEATURE_STATUS, datatype="BYTES", shape=[-1, k]),
        ]
        versions = [m.version for m in self.core.slot.models() if m is not None]
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=versions,
            platform="onnxruntime_onnx",
            inputs=inputs,
            outputs=outputs,
        )

    # -- inference ----------------------------------------------------------
    def model_infer(self, request: pb.ModelInferRequest, budget_s: float | None) -> Any:
        check_size(request.ByteSize(), self.max_message_bytes)
        check_ids(self.core.settings.max_entity_id_length, id=request.id)
        name = self._name(request.model_name, request.model_version)
        model = self.core.model(name, request.model_version)
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise InvalidRequestError(
                f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs"
            )
        # Entity inputs are the most a request may send; every one has a role.
        most = len(self._entity_inputs())
        if len(request.inputs) > most:
            raise InvalidRequestError(
                f"{len(request.inputs)} inputs; {model.name} takes at most {most}"
            )
        tensors = {}
        for i, t in enumerate(request.inputs):
            if t.name in tensors:
                raise InvalidRequestError(f"input {shown(t.name)} appears twice")
            tensors[t.name] = (t, raw[i] if raw else None)
        wanted = [o.name for o in request.outputs]
        if len(wanted) > len(OUTPUTS):
            raise InvalidRequestError(
                f"{len(wanted)} requested outputs; there are at most {len(OUTPUTS)}"
            )
        if model.manifest.input_name in tensors:
            outputs = self._infer_tensor(model, tensors, request.id)
        elif any(f in tensors for f in self.core.plan.key_fields):
            outputs = self._infer_entities(model, tensors, request.id, budget_s)
        else:
            raise InvalidRequestError(
                f"expected input {model.manifest.input_name!r} (FP32 [n, {model.n_features}]) "
                f"or entity inputs {list(self.core.plan.key_fields)} (BYTES [n]) with "
                f"{list(self.core.plan.request_fields)}; got {shown(sorted(tensors))}"
            )
        if wanted:
            unknown = [w for w in wanted if w not in outputs]
            if unknown:
                raise InvalidRequestError(
                    f"unknown requested output(s) {shown(unknown)}; available: {sorted(outputs)}"
                )
        resp = pb.ModelInferResponse(model_name=model.name, model_version=model.version)
        resp.id = request.id
        for name, (datatype, shape, data) in outputs.items():
            if wanted and name not in wanted:
                continue
            resp.outputs.add(name=name, datatype=datatype, shape=shape)
            resp.raw_output_contents.append(data)
        return resp

    def _infer_tensor(self, model: Any, tensors: dict[str, Any], request_id: str) -> dict:
        name = model.manifest.input_name
        if len(tensors) != 1:
            others = sorted(set(tensors) - {name})
            raise InvalidRequestError(f"input {name!r} must come alone; also got {shown(others)}")
        tensor, raw = tensors[name]
        if tensor.datatype != "FP32":
            kind = shown(tensor.datatype, quoted=False)
            raise InvalidRequestError(f"input {name!r} has datatype {kind}; the model takes FP32")
        shape = list(tensor.shape)
        if len(shape) != 2 or shape[1] != model.n_features:
            raise InvalidRequestError(
                f"input {name!r} has shape {shown(shape)}; expected [n, {model.n_features}]"
            )
        # The declared rows are refused before any decoding: a shape costs nothing to send.
        check_rows(shape[0], self.core.settings.max_batch_size)
        matrix = _numeric(tensor, raw).reshape(shape).astype(np.float32, copy=False)
        probs = self.core.score_matrix(model, matrix, request_id)
        if not model.binary:
            # The core answers [1 - score, score] per row; a regression's value is column 1.
            return _predictions(probs[:, 1])
        return {PROBABILITIES: ("FP32", list(probs.shape), probs.astype("<f4").tobytes())}

    def _infer_entities(
        self, model: Any, tensors: dict[str, Any], request_id: str, budget_s: float | None
    ) -> dict:
        plan = self.core.plan
        known = self._entity_inputs()
        unknown = sorted(set(tensors) - known)
        if unknown:
            raise InvalidRequestError(
                f"unknown input(s) {shown(unknown)}; expected {sorted(known)}"
            )
        n = _rows(tensors)
        if n == 0:
            raise InvalidRequestError("the inputs have no rows")
        check_rows(n, self.core.settings.max_batch_size)
        columns: dict[str, list[Any]] = {}
        for name, (tensor, raw) in tensors.items():
            if name in plan.key_fields or name == EVENT_ID:
                columns[name] = [b.decode("utf-8", "replace") for b in _bytes(tensor, raw)]
            elif name == EVENT_TIME:
                if tensor.datatype != "INT64":
                    raise InvalidRequestError(f"input {name!r} must be INT64 epoch milliseconds")
                columns[name] = [int(v) for v in _numeric(tensor, raw)]
            else:
                columns[name] = [float(v) for v in _numeric(tensor, raw)]
        inputs = []
        for r in range(n):
            inputs.append(
                PredictInput(
                    entities={f: columns[f][r] for f in plan.key_fields if f in columns},
                    fields={f: columns[f][r] for f in plan.request_fields if f in columns},
                    event_time_ms=columns[EVENT_TIME][r] if EVENT_TIME in columns else 0,
                    request_id=_row_id(request_id, r, n),
                    event_id=columns[EVENT_ID][r] if EVENT_ID in columns else "",
                    model=model.name,
                    model_version=model.version,
                )
            )
        results = self.core.predict_many(inputs, budget_s)
        for r, result in enumerate(results):
            if isinstance(result, LooplineError):
                if isinstance(result, InvalidRequestError):
                    raise InvalidRequestError(f"row {r}: {result}") from result
                raise result
        preds: list[Prediction] = results  # type: ignore[assignment]
        if model.binary:
            probs = np.array([[1.0 - p.score, p.score] for p in preds], dtype="<f4")
            scores = {PROBABILITIES: ("FP32", [n, 2], probs.tobytes())}
        else:
            scores = _predictions(np.array([p.score for p in preds]))
        feats = np.array([p.features for p in preds], dtype="<f4")
        status = encode_bytes_tensor([s.value.encode() for p in preds for s in p.statuses])
        k = model.n_features
        return {
            **scores,
            FEATURES: ("FP32", [n, k], feats.tobytes()),
            FEATURE_STATUS: ("BYTES", [n, k], status),
        }

    def _entity_inputs(self) -> set[str]:
        plan = self.core.plan
        return {*plan.key_fields, *plan.request_fields, EVENT_TIME, EVENT_ID}

    def _name(self, name: str, version: str) -> str:
        """``name``, refused before the lookup (which echoes it) when empty or over-long."""
        if not name:
            raise ModelNotFoundError("model_name is required")
        check_ids(self.core.settings.max_entity_id_length, model_name=name, model_version=version)
        return name


def _rows(tensors: dict[str, Any]) -> int:
    """The rows every entity input declares (``[n]``), checked before any is decoded."""
    n: int | None = None
    for name, (tensor, _) in tensors.items():
        shape = list(tensor.shape)
        if len(shape) != 1:
            raise InvalidRequestError(f"input {name!r} has shape {shown(shape)}; expected [n]")
        if shape[0] < 0:
            raise InvalidRequestError(f"input {name!r} has a negative dimension: {shape}")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise InvalidRequestError(f"input {name!r} has {shape[0]} rows, others {n}")
    assert n is not None  # the caller found an entity input
    return n


def _predictions(values: np.ndarray) -> dict[str, tuple[str, list[int], bytes]]:
    """A regression model's answer: ``predictions``, FP32 ``[n]``."""
    flat = np.asarray(values, dtype="<f4").reshape(-1)
    return {PREDICTIONS: ("FP32", [len(flat)], flat.tobytes())}


def _row_id(request_id: str, row: int, n: int) -> str:
    if not request_id:
        return ""
    return request_id if n == 1 else f"{request_id}-{row}"


def _count(tensor: Any) -> int:
    shape = list(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidRequestError(f"input {tensor.name!r} has a negative dimension: {shape}")
    return math.prod(shape)


def _numeric(tensor: Any, raw: bytes | None) -> np.ndarray:
    spec = NUMERIC.get(tensor.datatype)
    if spec is None:
        kind = shown(tensor.datatype, quoted=False)
        raise InvalidRequestError(
            f"input {tensor.name!r} has datatype {kind}; expected one of {sorted(NUMERIC)}"
        )
    dtype, field = spec
    count = _count(tensor)
    if raw is not None:
        width = np.dtype(dtype).itemsize
        if len(raw) != count * width:
            raise InvalidRequestError(
                f"input {tensor.name!r}: {len(raw)} raw bytes for shape {list(tensor.shape)} "
                f"of {tensor.datatype} (expected {count * width})"
            )
        values = np.frombuffer(raw, dtype=dtype)
    else:
        values = np.asarray(getattr(tensor.contents, field), dtype=dtype)
        if values.size != count:
            raise InvalidRequestError(
                f"input {tensor.name!r}: {values.size} values for shape {list(tensor.shape)}"
            )
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        i = int(np.argwhere(~np.isfinite(values))[0][0])
        raise InvalidRequestError(
            f"input {tensor.name!r} element {i} is {values[i]}; values must be finite"
        )
    return values


def _bytes(tensor: Any, raw: bytes | None) -> list[bytes]:
    if tensor.datatype != "BYTES":
        kind = shown(tensor.datatype, quoted=False)
        raise InvalidRequestError(
            f"input {tensor.name!r} has datatype {kind}; entity ids are BYTES"
        )
    count = _count(tensor)
    if raw is not None:
        return decode_bytes_tensor(raw, count)
    items = list(tensor.contents.bytes_contents)
    if len(items) != count:
        raise InvalidRequestError(
            f"input {tensor.name!r}: {len(items)} values for shape {list(tensor.shape)}"
        )
    return items
