"""Graceful shutdown: NOT_SERVING first, in-flight calls finish, the prediction log is flushed.

The second test runs the real command (``python -m loopline.serving``, what
``loopline run serve`` calls) with two worker processes sharing the port.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import model_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polling import wait_until
from serving_requests import predict_request
from serving_support import (
    consume,
    fresh_features,
    stalled_store,
)

from loopline.contracts.schemas import PredictionLog, decode
from loopline.contracts.topics import Topics
from loopline.serving.grpc_server import InferenceServer
from loopline.stack.process import pid_alive
from loopline.v1 import inference_pb2_grpc as pb_grpc

REQUEST = predict_request()


def test_stop_lets_in_flight_calls_finish_and_flushes_the_log(isolated_settings, tmp_path):
    model_factory.publish(tmp_path / "reg")
    # Each call takes the store's full 400 ms timeout: easy to catch mid-way.
    with stalled_store(
        isolated_settings,
        tmp_path / "reg",
        "unused",
        feature_timeout_ms=400.0,
        default_deadline_ms=2000.0,
        threads=4,
    ) as settings:
        server = InferenceServer(settings)
        server.start()
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
            stub = pb_grpc.InferenceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                calls = [pool.submit(stub.Predict, REQUEST, timeout=10) for _ in range(3)]
                time.sleep(0.15)  # all three are inside the handler now
                stopper = threading.Thread(target=server.stop, kwargs={"grace_s": 5.0})
                stopper.start()
                # Health says NOT_SERVING as soon as the shutdown begins.
                assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
                answers = [c.result() for c in calls]
            stopper.join(30)
            assert all(a.degraded for a in answers)
            try:
                stub.Predict(REQUEST, timeout=2)
                raise AssertionError("a stopped server answered")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
            channel.close()
        finally:
            server.stop()
    # The log was flushed before stop returned: all three are on the topic.
    assert server.sink.delivered == 3 and server.sink.pending == 0
    logged = consume(settings, Topics(settings.kafka.topic_prefix).predictions, 3)
    ids = {decode(PredictionLog, v).request_id for v in logged}
    assert ids == {a.request_id for a in answers}


def test_the_serve_command_runs_two_processes_and_stops_cleanly_under_load(
    isolated_settings, redis_client, redis_prefix, tmp_path
):
    key_prefix = fresh_features(redis_client, redis_prefix)
    model_factory.publish(tmp_path / "reg")
    s = isolated_settings
    # 12 closed-loop clients may all land on one worker: room for all of them there
    # (this test is about stopping, not about shedding).
    proc, lines, port, metrics_port = start_serve(s, key_prefix, tmp_path, max_concurrent_rpcs=16)
    try:
        ok: list[str] = []
        failed: list[grpc.StatusCode] = []
        stop = threading.Event()

        def client() -> None:
            # One connection each (gRPC would share one between channels otherwise):
            # SO_REUSEPORT spreads connections over the workers.
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                stub = pb_grpc.InferenceStub(channel)
                while not stop.is_set():
                    try:
                        ok.append(stub.Predict(REQUEST, timeout=5).request_id)
                    except grpc.RpcError as e:
                        failed.append(e.code())
                        return

        # The kernel hashes each connection to a worker: with 12 connections
        # the chance that all land on one of two workers is 2 ** -11.
        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        wait_until(
            lambda: len(ok) > 300 and len({r.rsplit("-", 1)[0] for r in list(ok)}) == 2,
            what="load on both workers",
        )
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        text = metrics.read().decode()
        assert re.search(r'loopline_serving_requests_total\{code="OK",method="Predict"\} \d+', text)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    # Answers came from both workers (request ids carry a per-process prefix).
    assert len({r.rsplit("-", 1)[0] for r in ok}) == 2
    # Calls after the shutdown were refused, never broken mid-way.
    assert set(failed) <= {grpc.StatusCode.UNAVAILABLE}, failed
    # Every answered prediction reached the log before the workers exited.
    logged = consume(s, Topics(s.kafka.topic_prefix).predictions, len(ok), timeout_s=60)
    assert {decode(PredictionLog, v).request_id for v in logged} >= set(ok)


def start_serve(
    s, key_prefix: str, tmp_path, **serving: object
) -> tuple[subprocess.Popen, list[str], int, int]:
    """``python -m loopline.serving`` with two workers; returns once it says it serves.

    ``serving`` adds settings of the ``[serving]`` section.
    """
    config = tmp_path / "loopline.toml"
    config.write_text(
        f"""
[kafka]
bootstrap_servers = "{s.kafka.bootstrap_servers}"
topic_prefix = "{s.kafka.topic_prefix}"
[redis]
port = {s.redis.port}
[streams]
redis_key_prefix = "{key_prefix}"
[registry]
path = "{tmp_path / "reg"}"
[serving]
port = 0
metrics_port = 0
processes = 2
threads = 2
"""
        + "".join(f"{k} = {v!r}\n" for k, v in serving.items())
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopline.serving", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = None
    deadline = time.monotonic() + 60
    while ready is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        ready = re.search(r"^serving fraud@champion on [\d.]+:(\d+) .*:(\d+)/metrics", line)
    if ready is None:
        proc.kill()
        raise AssertionError("".join(lines))
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return proc, lines, int(ready.group(1)), int(ready.group(2))


def workers_of(pid: int) -> set[int]:
    """Worker processes of the supervisor ``pid`` (not multiprocessing's resource tracker)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            out.add(int(entry.name))
    return out


def test_a_dead_worker_is_replaced(isolated_settings, tmp_path) -> None:
    model_factory.publish(tmp_path / "reg")
    proc, lines, port, _ = start_serve(isolated_settings, "unused", tmp_path)
    try:
        first = workers_of(proc.pid)
        assert len(first) == 2, "".join(lines)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(workers_of(proc.pid) - first) == 1, what="a replacement worker")
        # Whichever worker a new connection lands on answers.
        for _ in range(8):
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                wait_until(lambda h=health: _serving(h), what="SERVING on a fresh connection")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
        assert any("restarting it" in line for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_workers_stop_when_their_supervisor_is_killed(isolated_settings, tmp_path) -> None:
    model_factory.publish(tmp_path / "reg")
    proc, lines, _port, _ = start_serve(isolated_settings, "unused", tmp_path)
    workers = workers_of(proc.pid)
    try:
        assert len(workers) == 2, "".join(lines)
        proc.kill()  # kill -9: no chance to stop the workers itself
        proc.wait(10)
        wait_until(
            lambda: not any(pid_alive(pid) for pid in workers),
            timeout_s=30,
            what="the orphaned workers to stop",
        )
    finally:
        for pid in workers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _serving(health) -> bool:
    try:
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
    except grpc.RpcError:
        return False
    return status == health_pb2.HealthCheckResponse.SERVING
