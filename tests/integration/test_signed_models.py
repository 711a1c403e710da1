"""Signed models on the real stack: a forged champion is refused while the old one answers."""

from __future__ import annotations

import logging
from dataclasses import replace

import model_factory
import pytest
from polling import wait_until
from predict_load import PredictLoad
from serving_requests import predict_request
from serving_support import announce, fresh_features, running_server, serving_settings

from loopline.registry.directory import DirectoryRegistry, open_registry
from loopline.v1 import inference_pb2 as pb

REQUEST = predict_request()
SECRET = b"integration-signing-key-0123456789abcdef"


class Load(PredictLoad):
    """Predict for card c1 without pause; counts the answering versions."""

    def __init__(self, port: int) -> None:
        super().__init__(port, clients=2)
        self.answers: dict[str, int] = {}

    def request(self, client: int, call: int) -> pb.PredictRequest:
        return REQUEST

    def record(self, request: pb.PredictRequest, response: pb.PredictResponse) -> None:
        self.answers[response.model_version] = self.answers.get(response.model_version, 0) + 1

    def keeps_answering(self, version: str, calls: int = 50) -> None:
        before = self.answers.get(version, 0)
        wait_until(
            lambda: self.answers.get(version, 0) >= before + calls, what=f"v{version} answering"
        )


@pytest.fixture
def env(isolated_settings, redis_client, redis_prefix, tmp_path):
    key_file = tmp_path / "signing.key"
    key_file.write_bytes(SECRET)
    key_prefix = fresh_features(redis_client, redis_prefix)
    base = replace(
        isolated_settings,
        registry=replace(isolated_settings.registry, signing_key_file=key_file),
    )
    settings = serving_settings(base, tmp_path / "registry", key_prefix, registry_poll_s=0.3)
    # The trainer's registry (it signs) and one written by someone without the key.
    return settings, open_registry(settings.registry), DirectoryRegistry(tmp_path / "registry")


def test_a_forged_champion_is_refused_while_the_signed_one_keeps_answering(env, caplog) -> None:
    settings, trainer_registry, intruder = env
    signed = model_factory.publish(trainer_registry, seed=0)
    assert signed.manifest.signature
    caplog.set_level(logging.ERROR, logger="loopline.serving.model_manager")
    with running_server(settings) as server, Load(server.port) as load:
        load.keeps_answering("1")
        sample = server.metrics.registry.get_sample_value

        def refused(reason: str) -> float | None:
            return sample("loopline_serving_model_refusals_total", {"reason": reason})

        # Written into the registry without the key, made champion and announced.
        unsigned = model_factory.publish(intruder, seed=1)
        announce(settings, unsigned)
        wait_until(lambda: refused("unsigned") == 1, what="the unsigned v2 refused")
        load.keeps_answering("1")

        # A signed version whose model is swapped afterwards, sha256 recomputed:
        # picked up by the registry poll alone.
        tampered = model_factory.publish(trainer_registry, seed=2, alias=None)
        model_factory.tamper(tampered)
        intruder.set_alias("fraud", "champion", tampered.manifest.version)
        wait_until(lambda: refused("bad_signature") == 1, what="the tampered v3 refused")
        load.keeps_answering("1")
        assert server.slot.current.version == "1"

        # The next version the key holder publishes serves.
        good = model_factory.publish(trainer_registry, seed=4)
        announce(settings, good)
        wait_until(lambda: load.answers.get("4", 0) > 20, what="the signed v4 answering")
        assert refused("unsigned") == 1 and refused("bad_signature") == 1

    assert load.failures == []
    assert set(load.answers) == {"1", "4"}
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("model_manager")]
    assert any("fraud v2 is unsigned" in line and "still serving v1" in line for line in lines)
    assert any("fraud v3 has a bad signature" in line for line in lines)
    assert len(lines) == 2  # once each, not on every poll
    for line in lines:
        assert SECRET.decode() not in line and tampered.manifest.signature not in line
