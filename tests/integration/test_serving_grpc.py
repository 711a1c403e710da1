"""The gRPC server on the real stack: each RPC, health, reflection, errors, prediction log."""

from __future__ import annotations

import concurrent.futures
import gc
import math
import time

import grpc
import model_factory
import numpy as np
import pytest
from fraud_repo import FRAUD_FEATURES as FS
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from polling import wait_until
from serving_requests import fp32_tensor_request, predict_request
from serving_support import (
    card_values,
    consume,
    fresh_serving_settings,
    merchant_values,
    running_server,
    stalled_store,
)

from loopline.contracts.schemas import PredictionLog, decode
from loopline.contracts.topics import Topics
from loopline.oip import grpc_predict_v2_pb2 as oip
from loopline.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc


@pytest.fixture
def env(isolated_settings, redis_client, redis_prefix, tmp_path):
    registry = tmp_path / "registry"
    return fresh_serving_settings(isolated_settings, redis_client, redis_prefix, registry), registry


def stubs(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, pb_grpc.InferenceStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)


def test_predict_scores_with_store_features_and_logs_every_prediction(env) -> None:
    settings, registry = env
    model_factory.publish(registry)
    gc.unfreeze()
    with running_server(settings) as server:
        # What start-up loaded is out of the cyclic collector's reach (no 36 ms pauses).
        assert gc.get_freeze_count() > 10_000
        _, v1, _ = stubs(server.port)
        t_ms = int(time.time() * 1000)
        resp = v1.Predict(
            predict_request(request_id="req-1", event_id="ev-1", event_time_ms=t_ms), timeout=5
        )
        expected = FS.assemble(
            {"card": card_values(), "merchant": merchant_values()}, {"amount": 42.0}, t_ms / 1000
        )
        got = [f.value for f in resp.features]
        assert got[:19] == pytest.approx(expected[:19])
        assert {f.status for f in resp.features} == {pb.FEATURE_STATUS_OK}
        model = server.slot.current
        direct = model.probabilities(np.asarray([got], dtype=np.float32))[0]
        assert resp.score == pytest.approx(float(direct), abs=1e-6)
        assert (resp.request_id, resp.model_version, resp.degraded) == ("req-1", "1", False)

        batch = v1.PredictBatch(
            pb.PredictBatchRequest(
                requests=[predict_request(request_id="b1"), predict_request(entities={"x": "1"})]
            ),
            timeout=5,
        )
        assert batch.results[0].response.score == pytest.approx(resp.score, abs=1e-6)
        assert batch.results[1].error.code == "INVALID_ARGUMENT"

    logged = [decode(PredictionLog, v) for v in consume(settings, settings_topic(settings), 2)]
    by_id = {p.request_id: p for p in logged}
    assert set(by_id) == {"req-1", "b1"}
    first = by_id["req-1"]
    assert first.features == pytest.approx(got, rel=1e-12)
    assert first.score == pytest.approx(resp.score)
    assert (first.event_id, first.event_time, first.model_version) == ("ev-1", t_ms, "1")
    assert first.entities == {"card_id": "c1", "merchant_id": "m1"}
    assert first.fingerprint == FS.fingerprint and first.feature_status == {}
    assert server.sink.delivered == 2 and server.sink.failed == 0


def settings_topic(settings) -> str:
    return Topics(settings.kafka.topic_prefix).predictions


def test_bad_input_gets_invalid_argument_with_a_precise_message(env) -> None:
    settings, registry = env
    model_factory.publish(registry)
    with running_server(settings) as server:
        _, v1, infer = stubs(server.port)
        cases = [
            (predict_request(entities={"card_id": "c1", "merchant": "m1"}), "unknown entity field"),
            (predict_request(fields={"amount": math.nan}), "field 'amount' is nan"),
            (predict_request(fields={}), "field 'amount' is missing"),
            (predict_request(model="nope"), "unknown model 'nope'"),
            (predict_request(event_id="x" * 1_200_000), "the limit is 1048576"),
        ]
        for request, message in cases:
            with pytest.raises(grpc.RpcError) as err:
                v1.Predict(request, timeout=5)
            want = grpc.StatusCode.NOT_FOUND if "unknown model" in message else None
            assert err.value.code() == (want or grpc.StatusCode.INVALID_ARGUMENT)
            assert message in err.value.details()
        # Far beyond the limit gRPC itself refuses the message before any handler runs.
        with pytest.raises(grpc.RpcError) as err:
            v1.Predict(predict_request(event_id="x" * 2_200_000), timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        bad = fp32_tensor_request(np.zeros((1, 20), dtype=np.float32))
        bad.raw_input_contents[0] = b"\0" * 8
        with pytest.raises(grpc.RpcError) as err:
            infer.ModelInfer(bad, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "8 raw bytes" in err.value.details()
        # The server is fine afterwards.
        assert v1.Predict(predict_request(), timeout=5).model_version == "1"


def test_health_and_readiness_follow_the_model(env) -> None:
    settings, registry = env
    with running_server(settings) as server:
        channel, v1, infer = stubs(server.port)
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest
        assert health.Check(check(service=""), timeout=5).status == 2  # NOT_SERVING
        assert not infer.ServerReady(oip.ServerReadyRequest(), timeout=5).ready
        assert infer.ServerLive(oip.ServerLiveRequest(), timeout=5).live
        with pytest.raises(grpc.RpcError) as err:
            v1.Predict(predict_request(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no model loaded yet" in err.value.details()

        model_factory.publish(registry)  # picked up by the registry poll
        service = "loopline.v1.Inference"
        wait_until(
            lambda: health.Check(check(service=service), timeout=5).status == 1,
            what="SERVING after a model was published",
        )
        assert infer.ServerReady(oip.ServerReadyRequest(), timeout=5).ready
        assert infer.ModelReady(oip.ModelReadyRequest(name="fraud"), timeout=5).ready
        meta = infer.ServerMetadata(oip.ServerMetadataRequest(), timeout=5)
        assert meta.name == "loopline"
        mm = infer.ModelMetadata(oip.ModelMetadataRequest(name="fraud"), timeout=5)
        assert mm.versions == ["1"] and mm.inputs[0].shape == [-1, 20]
        assert v1.Predict(predict_request(), timeout=5).model_version == "1"


def test_reflection_lets_a_client_discover_and_call_predict(env) -> None:
    settings, registry = env
    model_factory.publish(registry)
    with running_server(settings) as server:
        channel, _, _ = stubs(server.port)
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert {"loopline.v1.Inference", "inference.GRPCInferenceService"} <= names
        assert "grpc.health.v1.Health" in names
        # Like grpcurl: build the messages from what reflection serves, then call.
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindServiceByName("loopline.v1.Inference").FindMethodByName("Predict")
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/loopline.v1.Inference/Predict",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        req = request_cls()
        req.entities["card_id"] = "c1"
        req.entities["merchant_id"] = "m1"
        req.fields["amount"] = 42.0
        resp = call(req, timeout=5)
        assert resp.model_version == "1" and 0 < resp.score < 1


def test_overload_is_refused_with_resource_exhausted(env) -> None:
    settings, registry = env
    model_factory.publish(registry)
    # Every call waits for the store's full timeout: calls pile up.
    with (
        stalled_store(
            settings,
            registry,
            settings.streams.redis_key_prefix,
            max_concurrent_rpcs=2,
            threads=2,
            feature_timeout_ms=300.0,
            default_deadline_ms=1000.0,
        ) as slow,
        running_server(slow) as server,
    ):
        _, v1, _ = stubs(server.port)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(v1.Predict, predict_request(), timeout=10) for _ in range(8)]
            codes = []
            for c in calls:
                try:
                    c.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert grpc.StatusCode.OK in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_deadline_is_honoured_when_the_store_hangs(env) -> None:
    settings, registry = env
    model_factory.publish(registry)
    with (
        stalled_store(
            settings, registry, settings.streams.redis_key_prefix, feature_timeout_ms=5000.0
        ) as hung,
        running_server(hung) as server,
    ):
        _, v1, infer = stubs(server.port)
        infer.ServerLive(oip.ServerLiveRequest(), timeout=5)  # connected
        t0 = time.perf_counter()
        # The store gets what is left of the caller's 200 ms (not its 5 s timeout):
        # the answer, degraded, arrives before the deadline instead of DEADLINE_EXCEEDED.
        resp = v1.Predict(predict_request(), timeout=0.2)
        took = time.perf_counter() - t0
        assert resp.degraded and 0.1 < took < 0.3
        assert resp.features[0].status == pb.FEATURE_STATUS_DEFAULTED
