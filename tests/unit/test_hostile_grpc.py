"""Hostile requests against both gRPC APIs, through the servicers in-process (no sockets).

Requests are built from random field values (declared shapes of 10^9 rows,
raw contents of the wrong length, NaN, unknown inputs, over-long ids) and
from random bytes parsed as the request message. Every call answers, or
aborts with a mapped status and a message saying why: never INTERNAL,
never an escaping exception, never slowly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from serving_requests import fp32_tensor_request, predict_request
from serving_support import CoreKit, make_core

from loopline.contracts.errors import InvalidRequestError
from loopline.oip import grpc_predict_v2_pb2 as oip
from loopline.serving.grpc_server import _Calls, _OipServicer, _V1Servicer
from loopline.serving.metrics import ServingMetrics
from loopline.serving.oip_api import OipHandlers
from loopline.serving.v1_api import V1Handlers
from loopline.v1 import inference_pb2 as pb

HOSTILE = settings(
    derandomize=True,
    deadline=1000,
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# What a refusal may answer: the caller's fault or the server's state, never a bug.
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
}
MAX_BYTES = 64 * 1024
MAX_DETAILS_CHARS = 600
Tensor = oip.ModelInferRequest.InferInputTensor


class AbortedError(Exception):
    """What ``context.abort`` raises in gRPC, with the status and details it was given."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class Context:
    """The two things a servicer asks of a gRPC context."""

    def time_remaining(self) -> float:
        return 5.0

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AbortedError(code, details)


class Servicers:
    def __init__(self, kit: CoreKit) -> None:
        calls = _Calls(kit.metrics)
        self.v1 = _V1Servicer(V1Handlers(kit.core, MAX_BYTES), calls)
        self.oip = _OipServicer(OipHandlers(kit.core, MAX_BYTES), calls)


@pytest.fixture(scope="module")
def servicers(tmp_path_factory: pytest.TempPathFactory) -> Servicers:
    kit = make_core(Path(tmp_path_factory.mktemp("registry")), max_batch_size=64)
    kit.store.put("card", "c1", [1.0] * 10, time.time())
    return Servicers(kit)


def answer(call: Callable[[Any, Any], Any], request: Any) -> Any:
    """The call's response, or its refusal (checked: mapped, explained, short)."""
    t0 = time.perf_counter()
    try:
        return call(request, Context())
    except AbortedError as e:
        assert e.code in REFUSALS, str(e)[:500]
        assert e.details and len(e.details) <= MAX_DETAILS_CHARS, e.details[:500]
        return e
    finally:
        assert time.perf_counter() - t0 < 0.5


ids = st.text(max_size=10) | st.text(min_size=250, max_size=300) | st.just("x" * 70_000)
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e39, -3.5e38])
predict_requests = st.builds(
    pb.PredictRequest,
    entities=st.dictionaries(st.sampled_from(["card_id", "merchant_id", "x"]) | ids, ids),
    fields=st.dictionaries(st.sampled_from(["amount", "tip"]) | st.text(max_size=5), numbers),
    event_time_ms=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    request_id=ids,
    event_id=ids,
    model=st.sampled_from(["", "fraud", "other"]) | ids,
    arm=st.sampled_from(["", "champion", "candidate"]) | ids,
)


def _parsed(kind: type, raw: bytes) -> Any:
    try:
        return kind.FromString(raw)
    except DecodeError:
        return kind()  # gRPC refuses what does not parse before any handler runs


@HOSTILE
@given(predict_requests | st.binary(max_size=200).map(lambda b: _parsed(pb.PredictRequest, b)))
def test_predict_answers_or_refuses_with_a_reason(servicers: Servicers, request: Any) -> None:
    answer(servicers.v1.Predict, request)


@HOSTILE
@given(st.lists(predict_requests, max_size=80) | st.integers(min_value=65, max_value=3000))
def test_predict_batch_answers_each_item_or_refuses_the_batch(
    servicers: Servicers, items: list[pb.PredictRequest] | int
) -> None:
    if isinstance(items, int):
        items = [predict_request()] * items
    resp = answer(servicers.v1.PredictBatch, pb.PredictBatchRequest(requests=items))
    if isinstance(resp, AbortedError):
        return
    assert len(resp.results) == len(items)
    for result in resp.results:
        if result.WhichOneof("result") == "error":
            assert result.error.code in {c.name for c in REFUSALS}
            assert result.error.message


dims = st.sampled_from([0, 1, 2, 20, 64, 65, 10**9, 2**62, -1])
datatypes = st.sampled_from(["FP32", "FP64", "INT64", "INT32", "BYTES", "BOOL", "x" * 500])


@st.composite
def tensors(draw: st.DrawFn) -> tuple[Tensor, bytes | None]:
    name = draw(
        st.sampled_from(["input", "card_id", "merchant_id", "amount", "event_time_ms", "event_id"])
        | ids
    )
    shape = draw(st.lists(dims, min_size=0, max_size=3))
    t = Tensor(name=name, datatype=draw(datatypes), shape=shape)
    t.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=40)))
    t.contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)))
    t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=300), max_size=4)))
    raw = draw(st.none() | st.binary(max_size=200) | st.just(b"\xff\xff\xff\x7f" + b"a" * 8))
    return t, raw


@st.composite
def infer_requests(draw: st.DrawFn) -> oip.ModelInferRequest:
    drawn = draw(st.lists(tensors(), max_size=7))
    req = oip.ModelInferRequest(
        model_name=draw(st.sampled_from(["fraud", "", "other"]) | ids),
        model_version=draw(st.sampled_from(["", "1", "7"]) | ids),
        id=draw(ids),
        inputs=[t for t, _ in drawn],
    )
    if drawn and all(raw is not None for _, raw in drawn):
        req.raw_input_contents.extend(raw for _, raw in drawn)  # type: ignore[misc]
    for name in draw(st.lists(st.sampled_from(["probabilities", "features", "nope"]) | ids)):
        req.outputs.add(name=name)
    return req


def _tensor_rows(n: int) -> oip.ModelInferRequest:
    """A tensor declaring ``n`` rows with one row of contents."""
    req = fp32_tensor_request(np.zeros((1, 20), dtype=np.float32))
    req.inputs[0].shape[0] = n
    return req


@HOSTILE
@given(
    infer_requests()
    | st.binary(max_size=300).map(lambda b: _parsed(oip.ModelInferRequest, b))
    | st.sampled_from([10**9, 65, 2**62]).map(_tensor_rows)
)
def test_model_infer_answers_or_refuses_with_a_reason(servicers: Servicers, request: Any) -> None:
    answer(servicers.oip.ModelInfer, request)


@HOSTILE
@given(
    st.sampled_from(["ModelMetadata", "ModelReady", "ServerLive", "ServerMetadata"]),
    st.text(max_size=10) | st.just("m" * 70_000),
    st.text(max_size=10),
)
def test_metadata_calls_answer_any_name(
    servicers: Servicers, method: str, name: str, version: str
) -> None:
    request_type = getattr(oip, f"{method}Request")
    fields = {"name": name, "version": version} if method.startswith("Model") else {}
    answer(getattr(servicers.oip, method), request_type(**fields))


def test_declared_rows_are_refused_before_decoding(servicers: Servicers) -> None:
    refused = answer(servicers.oip.ModelInfer, _tensor_rows(10**9))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "1000000000 rows exceed the batch limit 64" in refused.details
    assert "serving.max_batch_size" in refused.details
    entities = oip.ModelInferRequest(
        model_name="fraud",
        inputs=[
            Tensor(name="card_id", datatype="BYTES", shape=[10**9]),
            Tensor(name="merchant_id", datatype="BYTES", shape=[10**9]),
        ],
    )
    refused = answer(servicers.oip.ModelInfer, entities)
    assert "1000000000 rows exceed the batch limit 64" in refused.details


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (predict_request(request_id="r" * 300), "request_id is 300 characters long (limit 256)"),
        (predict_request(model="m" * 300), "model is 300 characters long (limit 256)"),
        (predict_request(fields={"amount": 1e39}), "features are FP32"),
        (predict_request(entities={"c" * 5000: "x"}), "...' (5002 characters)"),
        (
            predict_request(event_id="e" * 70_000),
            "the limit is 65536 (raise serving.max_message_bytes)",
        ),
    ],
)
def test_refusals_name_the_limit_and_its_setting(
    servicers: Servicers, request_: pb.PredictRequest, message: str
) -> None:
    refused = answer(servicers.v1.Predict, request_)
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.details
    if "characters long" in message:
        assert "serving.max_entity_id_length" in refused.details


def test_a_normal_call_still_answers(servicers: Servicers) -> None:
    assert 0.0 <= answer(servicers.v1.Predict, predict_request()).score <= 1.0
    assert not math.isnan(answer(servicers.v1.Predict, predict_request()).score)


def test_calls_in_flight_are_counted_while_in_a_handler_and_released_on_errors() -> None:
    metrics = ServingMetrics(CollectorRegistry())
    calls = _Calls(metrics)
    seen: list[float] = []

    def handler(request: object, budget_s: float | None) -> str:
        seen.append(metrics.registry.get_sample_value("loopline_serving_in_flight"))
        if request == "bad":
            raise InvalidRequestError("bad request")
        return "ok"

    assert calls.run("Predict", handler, "good", Context()) == "ok"
    with pytest.raises(AbortedError):
        calls.run("Predict", handler, "bad", Context())
    calls.run("ServerLive", handler, "good", Context())  # not a scoring call
    assert seen == [1.0, 1.0, 0.0]
    assert metrics.registry.get_sample_value("loopline_serving_in_flight") == 0.0
