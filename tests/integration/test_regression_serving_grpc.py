"""A regression model served over real gRPC, Redis and Kafka: Predict and OIP v2 outputs."""

from __future__ import annotations

import grpc
import model_factory
import numpy as np
import pytest
from serving_requests import fp32_tensor_request, oip_entity_request, predict_request
from serving_support import consume, fresh_serving_settings, running_server

from loopline.contracts.schemas import PredictionLog, decode
from loopline.contracts.topics import Topics
from loopline.oip import grpc_predict_v2_pb2 as oip
from loopline.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from loopline.v1 import inference_pb2_grpc as pb_grpc


@pytest.fixture
def env(isolated_settings, redis_client, redis_prefix, tmp_path):
    model_factory.publish_regression(tmp_path / "registry")
    return fresh_serving_settings(
        isolated_settings, redis_client, redis_prefix, tmp_path / "registry"
    )


def test_regression_model_answers_values_over_grpc(env) -> None:
    with running_server(env) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        v1 = pb_grpc.InferenceStub(channel)
        infer = oip_grpc.GRPCInferenceServiceStub(channel)
        model = server.slot.current
        assert model.task == "regression"

        meta = infer.ModelMetadata(oip.ModelMetadataRequest(name="fraud"), timeout=5)
        assert (meta.outputs[0].name, list(meta.outputs[0].shape)) == ("predictions", [-1])

        rows = np.asarray(model.manifest.golden_inputs[:3], dtype=np.float32)
        resp = infer.ModelInfer(fp32_tensor_request(rows), timeout=5)
        assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [
            ("predictions", "FP32", [3])
        ]
        values = np.frombuffer(resp.raw_output_contents[0], dtype="<f4")
        assert values.tolist() == pytest.approx(model.manifest.golden_scores[:3], rel=1e-6)

        ent = oip_entity_request([b"c1"], [b"m1"], [42.0])
        out = infer.ModelInfer(ent, timeout=5)
        assert [o.name for o in out.outputs] == ["predictions", "features", "feature_status"]
        by_entities = float(np.frombuffer(out.raw_output_contents[0], dtype="<f4")[0])

        p = v1.Predict(predict_request(request_id="reg-1"), timeout=5)
        vector = np.asarray([[f.value for f in p.features]], dtype=np.float32)
        assert p.score == pytest.approx(float(model.scores(vector)[0]), rel=1e-6)
        assert p.score > 1.0 and by_entities == pytest.approx(p.score, rel=1e-5)
        channel.close()

    # The prediction log carries the predicted value as the score.
    topic = Topics(env.kafka.topic_prefix).predictions
    logged = [decode(PredictionLog, v) for v in consume(env, topic, 5)]
    by_id = {x.request_id: x for x in logged}
    assert by_id["reg-1"].score == pytest.approx(p.score)
