"""Serving across a feature-set version change, with the real two-worker command.

The champion was trained on an earlier applied version: the workers serve it.
A model of the definitions' version becomes champion: each worker asks to be
restarted, one after the other, and comes back serving the new model on the
new version, while the port keeps answering.
"""

from __future__ import annotations

import json
import signal
import time

import grpc
import model_factory
from fraud_repo import FRAUD_FEATURES, changed_fraud_features
from polling import wait_until
from test_serving_shutdown import start_serve, workers_of

from loopline.featurerepo.state import AppliedState
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc

# What a client should do around any restart: retry UNAVAILABLE (a draining worker says it).
RETRY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "loopline.v1.Inference"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
REQUEST = pb.PredictRequest(entities={"card_id": "c1", "merchant_id": "m1"}, fields={"amount": 4.0})


def _versions(port: int, tries: int = 8) -> set[str]:
    """What answers ``tries`` fresh connections (any worker): model versions, or errors."""
    seen = set()
    for _ in range(tries):
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.service_config", RETRY)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            try:
                reply = pb_grpc.InferenceStub(channel).Predict(REQUEST, timeout=5)
            except grpc.RpcError as e:
                seen.add(f"error {e.code().name}")
                continue
            seen.add(reply.model_version)
    return seen


def test_workers_switch_to_the_new_champions_feature_set_version(
    isolated_settings, tmp_path
) -> None:
    old = changed_fraud_features()
    registry = tmp_path / "reg"
    model_factory.publish(registry, fs=old)  # v1, champion, trained on the old version
    state = AppliedState(registry)
    state.record("fraud", old.fingerprint, old.describe(), now_ms=1)
    state.record("fraud", FRAUD_FEATURES.fingerprint, FRAUD_FEATURES.describe(), now_ms=2)
    proc, lines, port, _ = start_serve(isolated_settings, "unused", tmp_path, registry_poll_s=0.5)
    try:
        assert _versions(port) == {"1"}, "".join(lines)  # the old version's champion serves
        first = workers_of(proc.pid)
        model_factory.publish(registry, fs=FRAUD_FEATURES, seed=3)  # v2 becomes champion

        def restarted() -> list[str]:
            return [line for line in lines if "restarts on the new feature-set version" in line]

        def switched() -> bool:
            workers = workers_of(proc.pid)  # an exited, unreaped worker is not listed
            return len(restarted()) == 2 and len(workers) == 2 and not workers & first

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not switched():
            # Every probe meanwhile is answered, by the old model or the new one.
            seen = _versions(port, tries=4)
            assert seen <= {"1", "2"}, (seen, "".join(lines))
            time.sleep(0.3)
        assert switched(), "".join(lines)  # both workers restarted, each once
        assert _versions(port, tries=12) == {"2"}, "".join(lines)
        assert not any("restarting it" in line for line in lines)  # no crash restarts
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    wait_until(lambda: proc.poll() is not None, what="the server to exit")
