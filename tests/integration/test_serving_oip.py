"""Open Inference Protocol v2 through an unmodified client: tritonclient[grpc].

tritonclient ships its own ``inference.*`` protos, which clash with ours in
one protobuf pool, so the client runs in a subprocess and reports JSON.
"""

from __future__ import annotations

import json
import textwrap

import model_factory
import numpy as np
import pytest
from serving_support import fresh_serving_settings, run_client_script, running_server

from loopline.serving.requests import PredictInput

CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    url, rows = sys.argv[1], np.array(json.loads(sys.argv[2]), dtype=np.float32)
    c = tc.InferenceServerClient(url)
    out = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": c.is_model_ready("fraud"),
        "other_ready": c.is_model_ready("other"),
        "server": c.get_server_metadata(as_json=True),
        "model": c.get_model_metadata("fraud", as_json=True),
    }
    x = tc.InferInput("input", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    res = c.infer("fraud", [x], outputs=[tc.InferRequestedOutput("probabilities")],
                  request_id="t1")
    out["tensor"] = {"id": res.get_response().id, "version": res.get_response().model_version,
                     "probabilities": res.as_numpy("probabilities").tolist()}

    ids = {"card_id": [b"c1", b"c-unknown"], "merchant_id": [b"m1", b"m1"]}
    inputs = []
    for name, values in ids.items():
        t = tc.InferInput(name, [2], "BYTES")
        t.set_data_from_numpy(np.array(values, dtype=np.object_))
        inputs.append(t)
    amount = tc.InferInput("amount", [2], "FP64")
    amount.set_data_from_numpy(np.array([42.0, 7.0], dtype=np.float64))
    inputs.append(amount)
    res = c.infer("fraud", inputs)
    out["entities"] = {
        "probabilities": res.as_numpy("probabilities").tolist(),
        "features": res.as_numpy("features").tolist(),
        "feature_status": [[s.decode() for s in row] for row in res.as_numpy("feature_status")],
    }
    bad = tc.InferInput("input", [1, 19], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 19), dtype=np.float32))
    try:
        c.infer("fraud", [bad])
        out["bad"] = "accepted"
    except InferenceServerException as e:
        out["bad"] = [e.status(), e.message()]
    print(json.dumps(out))
    """
)


@pytest.fixture
def env(isolated_settings, redis_client, redis_prefix, tmp_path):
    model_factory.publish(tmp_path / "reg")
    return fresh_serving_settings(isolated_settings, redis_client, redis_prefix, tmp_path / "reg")


def test_tritonclient_talks_to_the_server_unchanged(env) -> None:
    with running_server(env) as server:
        model = server.slot.current
        rows = np.asarray(model.manifest.golden_inputs[:3], dtype=np.float32)
        out = run_client_script(CLIENT, f"127.0.0.1:{server.port}", json.dumps(rows.tolist()))
        # The same prediction through Loopline's own path, for comparison.
        own = server.core.predict(
            PredictInput({"card_id": "c1", "merchant_id": "m1"}, {"amount": 42.0})
        )

    assert out["live"] and out["ready"] and out["model_ready"] and not out["other_ready"]
    assert out["server"]["name"] == "loopline"
    assert out["model"]["versions"] == ["1"]
    assert out["model"]["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": ["-1", "20"]}

    tensor = out["tensor"]
    assert tensor["id"] == "t1" and tensor["version"] == "1"
    probs = np.array(tensor["probabilities"])
    assert probs.shape == (3, 2)
    assert probs[:, 1] == pytest.approx(model.manifest.golden_scores[:3], abs=1e-5)

    ent = out["entities"]
    assert ent["probabilities"][0][1] == pytest.approx(own.score, abs=1e-5)
    assert ent["features"][0][:19] == pytest.approx(own.features[:19])
    assert ent["feature_status"][0] == ["ok"] * 20
    assert ent["feature_status"][1][0] == "missing" and ent["feature_status"][1][16] == "ok"

    status, message = out["bad"]
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "shape [1, 19]; expected [n, 20]" in message
