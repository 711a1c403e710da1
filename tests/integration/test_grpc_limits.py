"""Input limits on a real gRPC server: over-limit calls are refused, the server keeps answering."""

from __future__ import annotations

import concurrent.futures

import grpc
import model_factory
import numpy as np
import pytest
from serving_requests import fp32_tensor_request, predict_request
from serving_support import fresh_serving_settings, running_server

from loopline.oip import grpc_predict_v2_pb2 as oip
from loopline.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc

MAX_BYTES = 64 * 1024
MAX_ROWS = 32


@pytest.fixture
def server(isolated_settings, redis_client, redis_prefix, tmp_path):
    registry = tmp_path / "registry"
    settings = fresh_serving_settings(
        isolated_settings,
        redis_client,
        redis_prefix,
        registry,
        max_message_bytes=MAX_BYTES,
        max_batch_size=MAX_ROWS,
    )
    model_factory.publish(registry)
    with running_server(settings) as running:
        yield running


def refusal(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=5)
    return err.value


def still_answers(v1, infer) -> None:
    assert v1.Predict(predict_request(), timeout=5).model_version == "1"
    resp = infer.ModelInfer(fp32_tensor_request(np.zeros((2, 20), dtype=np.float32)), timeout=5)
    assert list(resp.outputs[0].shape) == [2, 2]


def test_over_limit_calls_are_refused_and_the_server_keeps_answering(server) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    v1 = pb_grpc.InferenceStub(channel)
    infer = oip_grpc.GRPCInferenceServiceStub(channel)
    still_answers(v1, infer)

    # Over the limit: the handler refuses it, naming the setting.
    err = refusal(v1.Predict, predict_request(event_id="e" * (MAX_BYTES + 10)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"the limit is {MAX_BYTES} (raise serving.max_message_bytes)" in err.details()
    # Far over it: gRPC itself refuses the message before any handler runs.
    err = refusal(v1.Predict, predict_request(event_id="e" * (3 * MAX_BYTES)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # Rows: a batch over the limit, and a tensor declaring 10^9 rows with one sent.
    batch = pb.PredictBatchRequest(requests=[predict_request()] * (MAX_ROWS + 1))
    err = refusal(v1.PredictBatch, batch)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{MAX_ROWS + 1} requests exceed the batch limit {MAX_ROWS}" in err.details()
    declared = fp32_tensor_request(np.zeros((1, 20), dtype=np.float32))
    declared.inputs[0].shape[0] = 10**9
    err = refusal(infer.ModelInfer, declared)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"1000000000 rows exceed the batch limit {MAX_ROWS}" in err.details()
    assert "serving.max_batch_size" in err.details()

    # An over-long entity id and raw contents that do not match the shape.
    err = refusal(v1.Predict, predict_request(entities={"card_id": "c" * 300, "merchant_id": "m"}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "serving.max_entity_id_length" in err.details()
    short = fp32_tensor_request(np.zeros((4, 20), dtype=np.float32))
    short.raw_input_contents[0] = b"\0" * 8
    err = refusal(infer.ModelInfer, short)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "8 raw bytes" in err.details()

    # Bytes that are no ModelInferRequest at all.
    garbage = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=None,
        response_deserializer=None,
    )
    err = refusal(garbage, b"\xff" * 64)
    assert err.code() != grpc.StatusCode.OK

    # Many refusals at once leave the server as it was.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        refused = list(pool.map(lambda _: refusal(infer.ModelInfer, declared).code(), range(40)))
    assert set(refused) == {grpc.StatusCode.INVALID_ARGUMENT}
    still_answers(v1, infer)
    channel.close()


def test_a_too_large_model_infer_is_refused_by_size(server) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    infer = oip_grpc.GRPCInferenceServiceStub(channel)
    rows = np.zeros((MAX_ROWS, 20), dtype=np.float32)
    big = fp32_tensor_request(rows, id="r" * 10)
    big.parameters["pad"].string_param = "p" * MAX_BYTES
    err = refusal(infer.ModelInfer, big)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "serving.max_message_bytes" in err.details()
    assert infer.ServerReady(oip.ServerReadyRequest(), timeout=5).ready
    channel.close()
