"""Serving a regression model: loading with the golden check, the core, OIP v2 outputs."""

from __future__ import annotations

import time
from dataclasses import replace

import model_factory
import numpy as np
import pytest
from fraud_repo import FRAUD_FEATURES as FS
from serving_requests import (
    fp32_tensor_request,
    predict_request,
)
from serving_support import CoreKit, card_values, infer_by_entities, make_core, merchant_values

from loopline.contracts.errors import ModelError
from loopline.oip import grpc_predict_v2_pb2 as oip
from loopline.registry.directory import DirectoryRegistry, ModelVersion
from loopline.serving.model import load_model
from loopline.serving.oip_api import OipHandlers
from loopline.serving.v1_api import V1Handlers


@pytest.fixture
def kit(tmp_path) -> CoreKit:
    kit = make_core(tmp_path, publish=False)
    model_factory.publish_regression(kit.registry)
    kit.manager.sync()
    kit.store.put("card", "c1", card_values(), time.time())
    kit.store.put("merchant", "m1", merchant_values(), time.time())
    return kit


def test_a_regression_model_loads_and_scores_values(tmp_path) -> None:
    reg = DirectoryRegistry(tmp_path)
    version = model_factory.publish_regression(reg)
    model = load_model(version, FS, golden_tolerance=1e-4)
    assert model.task == "regression" and not model.binary
    rows = np.asarray(version.manifest.golden_inputs, dtype=np.float32)
    values = model.scores(rows)
    assert values.shape == (len(rows),)
    assert values.tolist() == pytest.approx(version.manifest.golden_scores, rel=1e-6)
    assert max(values) > 1.0  # values on the target's scale, not probabilities
    assert model.probabilities(rows).tolist() == values.tolist()  # the core's name
    out, wall, cpu = model.timed_probabilities(rows[:1])
    assert out.shape == (1,) and wall >= 0 and cpu >= 0


def test_golden_values_must_be_reproduced(tmp_path) -> None:
    reg = DirectoryRegistry(tmp_path)
    good = model_factory.publish_regression(reg, alias=None)
    wrong = [v * 1.01 for v in good.manifest.golden_scores]
    bad = model_factory.publish_regression(reg, alias=None, golden_scores=wrong)
    with pytest.raises(ModelError, match="golden row 0 scored"):
        load_model(bad, FS, golden_tolerance=1e-4)


def test_the_output_must_match_the_manifests_task(tmp_path) -> None:
    reg = DirectoryRegistry(tmp_path)

    def binary_model_claiming(task: str) -> ModelVersion:
        onnx = model_factory.train_onnx()
        return reg.publish("fraud", onnx, replace(model_factory.manifest_fields(onnx), task=task))

    # A binary model claiming to be a regression: its [n, 2] output is refused.
    v = binary_model_claiming("regression")
    with pytest.raises(ModelError, match=r"a regression model must answer \[n, 1\]"):
        load_model(v, FS, golden_tolerance=1e-4)
    odd = binary_model_claiming("ranking")
    with pytest.raises(ModelError, match="task 'ranking' is not one of"):
        load_model(odd, FS, golden_tolerance=1e-4)
    # Manifests written before the task field are binary, as they always were.
    assert load_model(model_factory.publish(reg, alias=None), FS, 1e-4).binary


def test_predict_score_carries_the_predicted_value(kit: CoreKit) -> None:
    req = predict_request(fields={"amount": 20.0})
    resp = V1Handlers(kit.core, 4096).predict(req, None)
    vector = np.asarray([[f.value for f in resp.features]], dtype=np.float32)
    assert resp.score == pytest.approx(float(kit.core.model().scores(vector)[0]), rel=1e-6)
    assert resp.score > 1.0  # the value itself, not a probability


def test_oip_tensor_input_answers_predictions(kit: CoreKit) -> None:
    h = OipHandlers(kit.core, 1 << 20)
    model = kit.core.model()
    rows = np.asarray(model.manifest.golden_inputs, dtype=np.float32)
    resp = h.model_infer(fp32_tensor_request(rows, id="q"), None)
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [
        ("predictions", "FP32", [len(rows)])
    ]
    values = np.frombuffer(resp.raw_output_contents[0], dtype="<f4")
    assert values.tolist() == pytest.approx(model.manifest.golden_scores, rel=1e-6)


def test_oip_entity_input_answers_predictions_and_features(kit: CoreKit) -> None:
    out = infer_by_entities(kit.core, [b"c1", b"c1"], [b"m1", b"m1"], [20.0, 30.0])
    assert set(out) == {"predictions", "features", "feature_status"}
    assert list(out["predictions"][0].shape) == [2]
    values = np.frombuffer(out["predictions"][1], dtype="<f4")
    feats = np.frombuffer(out["features"][1], dtype="<f4").reshape(2, -1)
    assert values.tolist() == pytest.approx(kit.core.model().scores(feats).tolist(), rel=1e-6)


def test_oip_metadata_lists_the_regression_output(kit: CoreKit) -> None:
    h = OipHandlers(kit.core, 1 << 20)
    meta = h.model_metadata(oip.ModelMetadataRequest(name="fraud"), None)
    outputs = [(o.name, o.datatype, list(o.shape)) for o in meta.outputs]
    assert outputs[0] == ("predictions", "FP32", [-1])
    assert "probabilities" not in [o[0] for o in outputs]
