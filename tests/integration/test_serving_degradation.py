"""Degradation on the real stack: Redis down, Redis dying mid-way, Kafka down for the log."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import model_factory
import pytest
import redis
from polling import wait_until
from prometheus_client import CollectorRegistry
from serving_requests import predict_request
from serving_support import (
    CoreKit,
    card_values,
    make_core,
    merchant_values,
    running_server,
    serving_settings,
    write_features,
)

from loopline.contracts.settings import KafkaSettings
from loopline.serving.metrics import ServingMetrics
from loopline.serving.prediction_log import KafkaPredictionLog
from loopline.serving.requests import PredictInput
from loopline.stack.ports import free_port
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc

STORED = [i for i in range(20) if i != 16]  # every feature but the request's amount
REQUEST = predict_request()


def predict(port: int, timeout: float = 5.0) -> pb.PredictResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return pb_grpc.InferenceStub(channel).Predict(REQUEST, timeout=timeout)


def statuses(resp: pb.PredictResponse) -> set[int]:
    return {resp.features[i].status for i in STORED}


def test_redis_down_answers_with_defaults_quickly(isolated_settings, tmp_path) -> None:
    model_factory.publish(tmp_path)
    dead = replace(isolated_settings, redis=replace(isolated_settings.redis, port=free_port()))
    settings = serving_settings(dead, tmp_path, "unused")
    with running_server(settings) as server:
        for _ in range(3):
            t0 = time.perf_counter()
            resp = predict(server.port)
            assert time.perf_counter() - t0 < 1.0
            assert resp.degraded and statuses(resp) == {pb.FEATURE_STATUS_DEFAULTED}
            assert resp.features[16].status == pb.FEATURE_STATUS_OK
            assert resp.features[0].value == 0.0  # the default
        sample = server.metrics.registry.get_sample_value
        errors = sum(
            sample("loopline_serving_store_errors_total", {"reason": r}) or 0
            for r in ("down", "backoff")
        )
        assert errors == 3
        assert sample("loopline_serving_degraded_answers_total", {"status": "defaulted"}) == 3


@pytest.fixture
def own_redis(tmp_path):
    """A private redis-server we may kill (never the shared one)."""
    port = free_port()
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed"
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(tmp_path)]

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port, socket_timeout=5)
        wait_until(lambda: _pings(client), what="private redis-server up")
        return proc

    procs = [start()]
    yield port, procs, start
    for p in procs:
        p.kill()
        p.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_dying_serves_last_known_values_then_recovers(
    isolated_settings, tmp_path, own_redis
) -> None:
    port, procs, start = own_redis
    client = redis.Redis(port=port, socket_timeout=5)
    now = time.time()
    write_features(client, "own", "card", "c1", values=card_values(), t=now)
    write_features(client, "own", "merchant", "m1", values=merchant_values(), t=now)
    model_factory.publish(tmp_path / "reg")
    base = replace(isolated_settings, redis=replace(isolated_settings.redis, port=port))
    settings = serving_settings(base, tmp_path / "reg", "own", store_retry_ms=100.0)
    with running_server(settings) as server:
        fresh = predict(server.port)
        assert not fresh.degraded

        procs[0].kill()
        procs[0].wait(10)
        stale = predict(server.port)
        assert stale.degraded and statuses(stale) == {pb.FEATURE_STATUS_DEFAULTED}
        # Last known values, not defaults: the same vector as before (age aside).
        assert [f.value for f in stale.features][:19] == [f.value for f in fresh.features][:19]
        assert stale.score == pytest.approx(fresh.score, abs=0.05)

        procs.append(start())  # back, empty: the entities are now unknown
        write_features(client, "own", "card", "c1", values=card_values(5.0), t=time.time())
        wait_until(
            lambda: predict(server.port).features[0].status != pb.FEATURE_STATUS_DEFAULTED,
            what="answers from the store again",
        )
        back = predict(server.port)
        assert back.features[0].status == pb.FEATURE_STATUS_OK
        assert back.features[0].value == card_values(5.0)[0]
        assert back.features[13].status == pb.FEATURE_STATUS_MISSING  # merchant not rewritten


def logging_nowhere(tmp_path: Path, **producer: Any) -> tuple[CoreKit, KafkaPredictionLog]:
    """A core whose prediction log talks to a broker that is not there."""
    sink = KafkaPredictionLog(
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
        "nowhere.predictions",
        feature_set="fraud",
        metrics=ServingMetrics(CollectorRegistry()),
        queue_size=10_000,
        **{"enable.idempotence": False, **producer},
    )
    kit = make_core(tmp_path)
    kit.core.sink = sink
    return kit, sink


def test_kafka_down_never_blocks_and_failures_are_counted(tmp_path) -> None:
    kit, sink = logging_nowhere(tmp_path, **{"message.timeout.ms": 1500})
    kit.store.put("card", "c1", card_values(), time.time())
    t0 = time.perf_counter()
    for _ in range(200):
        kit.core.predict(PredictInput({"card_id": "c1", "merchant_id": "m1"}, {"amount": 5.0}))
    assert time.perf_counter() - t0 < 2.0  # no call waited for Kafka
    wait_until(lambda: sink.failed == 200, timeout_s=30, what="delivery failures reported")
    assert sink.delivered == 0
    assert (
        sink.metrics.registry.get_sample_value(
            "loopline_serving_prediction_log_total", {"result": "failed"}
        )
        == 200
    )
    assert sink.close(timeout_s=2) == 0


def test_a_full_producer_queue_drops_and_counts(tmp_path) -> None:
    limits = {"queue.buffering.max.messages": 5, "message.timeout.ms": 1000}
    kit, sink = logging_nowhere(tmp_path, **limits)
    for _ in range(50):
        kit.core.predict(PredictInput({"card_id": "c1", "merchant_id": "m1"}, {"amount": 5.0}))
    wait_until(lambda: sink.dropped + sink.failed == 50, timeout_s=30, what="all accounted for")
    assert sink.dropped >= 40
    sink.close(timeout_s=2)
