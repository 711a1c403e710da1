"""Hot swap on the real stack: new versions under concurrent load, refusals, rollback."""

from __future__ import annotations

from collections import Counter

import model_factory
import pytest
from polling import wait_until
from predict_load import PredictLoad
from serving_requests import predict_request
from serving_support import (
    announce,
    fresh_features,
    running_server,
    serving_settings,
)

from loopline.registry.directory import DirectoryRegistry
from loopline.v1 import inference_pb2 as pb

REQUEST = predict_request()


class Load(PredictLoad):
    """Calls for card c1 without pause: the answering versions and their scores."""

    def __init__(self, port: int, clients: int = 4) -> None:
        super().__init__(port, clients)
        self.versions: Counter[str] = Counter()
        self.scores: dict[str, set[float]] = {}
        self.last_version = ""

    def request(self, client: int, call: int) -> pb.PredictRequest:
        return REQUEST

    def record(self, request: pb.PredictRequest, response: pb.PredictResponse) -> None:
        self.versions[response.model_version] += 1
        self.scores.setdefault(response.model_version, set()).add(round(response.score, 6))
        self.last_version = response.model_version

    def wait_for(self, version: str) -> None:
        wait_until(lambda: self.last_version == version, what=f"answers from v{version}")
        # A few more answers, so the new version is really serving under load.
        seen = self.versions[version]
        wait_until(lambda: self.versions[version] >= seen + 20, what=f"load on v{version}")


@pytest.fixture
def env(isolated_settings, redis_client, redis_prefix, tmp_path):
    key_prefix = fresh_features(redis_client, redis_prefix)
    return isolated_settings, key_prefix, DirectoryRegistry(tmp_path / "registry")


def test_swaps_announced_on_the_topic_under_load_fail_no_call(env) -> None:
    base, key_prefix, registry = env
    model_factory.publish(registry, seed=0)
    # Topic only: the registry poll is off, so every swap here came from an announcement.
    settings = serving_settings(base, registry.root, key_prefix, registry_poll_s=0.0)
    with running_server(settings) as server, Load(server.port) as load:
        wait_until(lambda: load.versions["1"] > 50, what="load on v1")
        for seed in (1, 2):
            mv = model_factory.publish(registry, seed=seed)
            announce(settings, mv)
            load.wait_for(mv.manifest.version)

        # A model for another feature set: refused, v3 keeps serving.
        bad = model_factory.publish(registry, seed=3, fingerprint="e" * 64)
        announce(settings, bad)
        wait_until(lambda: server.manager.refused, what="the refusal of a foreign fingerprint")
        before = load.versions["3"]
        wait_until(lambda: load.versions["3"] > before + 50, what="v3 still serving")
        assert server.slot.current.version == "3"

        # Roll the alias back twice (4 -> 3 -> 2): v2 is still loaded, so it is instant.
        registry.rollback("fraud")
        registry.rollback("fraud")
        announce(settings, registry.get("fraud", "2"), action="rollback")
        load.wait_for("2")
        assert server.slot.previous.version == "3"

    assert load.failures == []
    assert set(load.versions) == {"1", "2", "3"}
    assert "4" not in load.versions
    # Each version answered with its own model.
    assert len({min(s) for s in load.scores.values()}) == 3
    sample = server.metrics.registry.get_sample_value
    assert sample("loopline_serving_model_swaps_total", {"result": "loaded"}) == 3
    assert sample("loopline_serving_model_swaps_total", {"result": "refused"}) == 1
    assert sample("loopline_serving_model_swaps_total", {"result": "rolled_back"}) == 1


def test_the_registry_poll_alone_follows_the_alias(env) -> None:
    base, key_prefix, registry = env
    model_factory.publish(registry, seed=0)
    settings = serving_settings(
        base, registry.root, key_prefix, registry_poll_s=0.2, follow_model_updates=False
    )
    with running_server(settings) as server, Load(server.port, clients=2) as load:
        model_factory.publish(registry, seed=1)
        load.wait_for("2")
        corrupt = model_factory.publish(registry, seed=2, alias=None)
        corrupt.model_path.write_bytes(b"not the published bytes")
        registry.set_alias("fraud", "champion", corrupt.manifest.version)
        wait_until(lambda: server.manager.refused, what="the sha256 refusal")
        assert server.slot.current.version == "2"
    assert load.failures == []
