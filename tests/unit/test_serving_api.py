"""The API adapters over the core: Loopline v1 and OIP v2 messages (no sockets)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fraud_repo import FRAUD_FEATURES as FS
from serving_requests import (
    fp32_tensor_request,
    predict_request,
)
from serving_support import CoreKit, card_values, infer_by_entities, make_core, merchant_values

from loopline.contracts.errors import InvalidRequestError, ModelNotFoundError
from loopline.oip import grpc_predict_v2_pb2 as oip
from loopline.serving.oip_api import OipHandlers, decode_bytes_tensor
from loopline.serving.v1_api import V1Handlers
from loopline.v1 import inference_pb2 as pb

Tensor = oip.ModelInferRequest.InferInputTensor


@pytest.fixture
def kit(tmp_path) -> CoreKit:
    kit = make_core(tmp_path, max_message_bytes=4096)
    kit.store.put("card", "c1", card_values(), time.time())
    kit.store.put("merchant", "m1", merchant_values(), time.time())
    return kit


def v1_request(**kw) -> pb.PredictRequest:
    return predict_request(**{"fields": {"amount": 20.0}, **kw})


def test_predict_response_carries_vector_statuses_and_version(kit: CoreKit) -> None:
    h = V1Handlers(kit.core, 4096)
    resp = h.predict(v1_request(request_id="abc"), None)
    assert resp.request_id == "abc" and resp.model_name == "fraud" and resp.model_version == "1"
    assert [f.name for f in resp.features] == list(FS.model_features)
    assert {f.status for f in resp.features} == {pb.FEATURE_STATUS_OK}
    assert not resp.degraded and resp.arm == "champion"
    assert 0.0 < resp.score < 1.0
    # A second answer reuses the template without leaking values or statuses.
    resp2 = h.predict(v1_request(entities={"card_id": "zz", "merchant_id": "m1"}), None)
    assert resp2.degraded and resp2.request_id != "abc"
    assert resp2.features[0].status == pb.FEATURE_STATUS_MISSING
    assert resp2.features[0].value == 0.0
    assert h.predict(v1_request(), None).features[0].status == pb.FEATURE_STATUS_OK


def test_oversized_request_and_inactive_arm_are_invalid(kit: CoreKit) -> None:
    h = V1Handlers(kit.core, 4096)
    big = v1_request(event_id="e" * 5000)
    with pytest.raises(InvalidRequestError, match=r"request is \d+ bytes; the limit is 4096"):
        h.predict(big, None)
    with pytest.raises(InvalidRequestError, match="arm 'candidate' requested, but no rollout"):
        h.predict(v1_request(arm="candidate"), None)


def test_predict_batch_answers_each_item_on_its_own(kit: CoreKit) -> None:
    h = V1Handlers(kit.core, 1 << 20)
    batch = pb.PredictBatchRequest(
        requests=[v1_request(), v1_request(arm="x"), v1_request(fields={"amount": float("nan")})]
    )
    resp = h.predict_batch(batch, None)
    kinds = [r.WhichOneof("result") for r in resp.results]
    assert kinds == ["response", "error", "error"]
    assert resp.results[1].error.code == "INVALID_ARGUMENT"
    assert "nan" in resp.results[2].error.message
    too_many = pb.PredictBatchRequest(requests=[v1_request()] * 513)
    with pytest.raises(InvalidRequestError, match="513 requests exceed the batch limit 512"):
        h.predict_batch(too_many, None)


@pytest.mark.parametrize("raw", [True, False])
def test_model_infer_with_a_feature_tensor(kit: CoreKit, raw: bool) -> None:
    h = OipHandlers(kit.core, 1 << 20)
    model = kit.core.model()
    rows = np.asarray(model.manifest.golden_inputs, dtype=np.float32)
    resp = h.model_infer(fp32_tensor_request(rows, raw=raw, id="q1"), None)
    assert resp.id == "q1" and resp.model_version == "1"
    assert [o.name for o in resp.outputs] == ["probabilities"]
    probs = np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(-1, 2)
    assert probs[:, 1] == pytest.approx(model.manifest.golden_scores, abs=1e-5)


def test_model_infer_with_entity_ids_looks_features_up(kit: CoreKit) -> None:
    out = infer_by_entities(kit.core, [b"c1", b"c-unknown"], [b"m1", b"m1"], [20.0, 30.0])
    assert set(out) == {"probabilities", "features", "feature_status"}
    probs = np.frombuffer(out["probabilities"][1], dtype="<f4").reshape(2, 2)
    one = V1Handlers(kit.core, 1 << 20).predict(v1_request(), None)
    assert probs[0, 1] == pytest.approx(one.score, abs=1e-6)
    status = decode_bytes_tensor(out["feature_status"][1], 40)
    assert status[:20] == [b"ok"] * 20 and status[20] == b"missing"
    feats = np.frombuffer(out["features"][1], dtype="<f4").reshape(2, 20)
    assert feats[0, 16] == 20.0 and feats[1, 16] == 30.0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: setattr(r.inputs[0], "datatype", "FP64"), "datatype FP64; the model takes FP32"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 19), r"shape \[1, 19\]; expected \[n, 20\]"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 12), "12 raw bytes"),
        (lambda r: setattr(r, "model_name", "other"), "unknown model 'other'"),
        (lambda r: r.outputs.add(name="nope"), r"unknown requested output\(s\) \['nope'\]"),
    ],
)
def test_model_infer_refuses_bad_tensors(kit: CoreKit, mutate, message: str) -> None:
    h = OipHandlers(kit.core, 1 << 20)
    req = fp32_tensor_request(np.zeros((1, 20), dtype=np.float32))
    mutate(req)
    with pytest.raises((InvalidRequestError, ModelNotFoundError), match=message):
        h.model_infer(req, None)


def test_model_infer_refuses_nan_and_unknown_inputs(kit: CoreKit) -> None:
    h = OipHandlers(kit.core, 1 << 20)
    rows = np.zeros((2, 20), dtype=np.float32)
    rows[1, 5] = np.inf
    with pytest.raises(InvalidRequestError, match="element 25 is inf"):
        h.model_infer(fp32_tensor_request(rows), None)
    req = oip.ModelInferRequest(
        model_name="fraud",
        inputs=[
            Tensor(name="card_id", datatype="BYTES", shape=[1]),
            Tensor(name="color", datatype="FP32", shape=[1]),
        ],
    )
    with pytest.raises(InvalidRequestError, match=r"unknown input\(s\) \['color'\]"):
        h.model_infer(req, None)


def test_metadata_and_readiness(kit: CoreKit) -> None:
    h = OipHandlers(kit.core, 1 << 20)
    meta = h.model_metadata(oip.ModelMetadataRequest(name="fraud"), None)
    assert meta.versions == ["1"] and meta.platform == "onnxruntime_onnx"
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs][:2] == [
        ("input", "FP32", [-1, 20]),
        ("card_id", "BYTES", [-1]),
    ]
    assert h.server_ready(oip.ServerReadyRequest(), None).ready
    assert h.model_ready(oip.ModelReadyRequest(name="fraud", version="1"), None).ready
    assert not h.model_ready(oip.ModelReadyRequest(name="fraud", version="7"), None).ready
    assert not h.model_ready(oip.ModelReadyRequest(name="x"), None).ready
    h.shutting_down = True
    assert not h.server_ready(oip.ServerReadyRequest(), None).ready
