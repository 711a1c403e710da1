"""The features flow on the real stack, run as real processes.

Online values in Redis must equal the offline replay (``final_values``) over
the same accepted events, byte for byte, whatever happens: bad input, late
events, a ``kill -9`` mid-stream, two workers, two processes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from fraud_repo import FRAUD_FEATURES as FS
from fraud_repo import changed_fraud_features
from prometheus_client.parser import text_string_to_metric_families

from loopline.contracts.redis_layout import RedisLayout, pack
from loopline.contracts.schemas import DeadLetter, decode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurecore.entity_state import final_values
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.state import AppliedState
from loopline.stack.ports import free_port

BASE_MS = 1_700_000_000_000
# Every test's events span less than the shortest tile expiry (9 min): no
# refresh moves a value past its last event, so final_values is the exact truth.
SPAN_MS = 5 * 60_000


def _events(n: int, seed: int, part: tuple[int, int] = (0, 1)) -> list[dict[str, Any]]:
    """``n`` events in the ``part[0]``-th of ``part[1]`` consecutive slices of the span."""
    rng = random.Random(seed)
    width = SPAN_MS // 2 // part[1]
    out = [
        {
            "event_id": f"e{seed}-{i}",
            "card_id": f"c{rng.randrange(1500)}",
            "merchant_id": f"m{rng.randrange(120)}",
            "amount": round(rng.lognormvariate(3.3, 0.9), 2),
            "event_time": BASE_MS + part[0] * width + rng.randrange(width),
        }
        for i in range(n)
    ]
    # Roughly increasing, out of order by far less than the allowed lateness (60 s).
    out.sort(key=lambda e: e["event_time"] + rng.randrange(20_000))
    return out


def _produce(settings: Settings, topic: str, docs: list[Any], rate: float | None = None) -> None:
    p = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    failures: list[str] = []
    started = time.monotonic()
    for i, doc in enumerate(docs):
        if isinstance(doc, tuple):
            key, raw = doc
        else:
            key, raw = doc["card_id"].encode(), json.dumps(doc).encode()
        p.produce(topic, raw, key=key, on_delivery=lambda e, _m: e and failures.append(str(e)))
        if rate and i % 500 == 0:
            p.poll(0)
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    assert p.flush(60) == 0 and not failures, failures


def _env(settings: Settings, key_prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LOOPLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "LOOPLINE_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
            "LOOPLINE_REDIS__HOST": settings.redis.host,
            "LOOPLINE_REDIS__PORT": str(settings.redis.port),
            "LOOPLINE_STREAMS__REDIS_KEY_PREFIX": key_prefix,
            "LOOPLINE_STREAMS__FEATURES_SNAPSHOT_INTERVAL_S": "1",
            "LOOPLINE_STREAMS__SHARDS": "16",
        }
    )
    return env


class Flow:
    """``python -m loopline.streams run features ...`` as a child process."""

    def __init__(
        self,
        settings: Settings,
        key_prefix: str,
        log: Path,
        *args: str,
        metrics_port: int = 0,
        start_from: str = "beginning",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        cmd = [sys.executable, "-m", "loopline.streams", "run", "features", *args]
        env = {**_env(settings, key_prefix), **(extra_env or {})}
        env["LOOPLINE_STREAMS__START_FROM"] = start_from
        # Never the repository's .loopline/recovery, even without --recovery-dir.
        env["LOOPLINE_STREAMS__RECOVERY_DIR"] = str(log.parent / "recovery-default")
        if metrics_port:
            env["LOOPLINE_STREAMS__METRICS_PORT"] = str(metrics_port)
        else:
            cmd.append("--no-metrics")
        self._out = open(log, "ab")  # noqa: SIM115 - closed in wait/kill
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait(self, timeout_s: float = 120.0) -> None:
        try:
            code = self.proc.wait(timeout_s)
        finally:
            self._out.close()
        assert code == 0, f"flow exited {code}:\n{self.log.read_text()[-3000:]}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._out.close()

    def alive(self) -> None:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The flow's samples; empty while its endpoint is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except urllib.error.URLError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _until(check, what: str, flow: Flow, timeout_s: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        flow.alive()
        time.sleep(0.2)


def _end_offsets(settings: Settings, topic: str) -> list[TopicPartition]:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "unused"})
    ends = [
        TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
        for p in range(settings.topics.partitions)
    ]
    c.close()
    return ends


def _store(client: redis.Redis, key_prefix: str) -> dict[bytes, bytes]:
    keys = list(client.scan_iter(match=f"{key_prefix}:f:*", count=1000))
    return dict(zip(keys, client.mget(keys), strict=True)) if keys else {}


def _expected(
    events: list[dict[str, Any]], key_prefix: str, fs: FeatureSet = FS
) -> dict[bytes, bytes]:
    layout = RedisLayout(key_prefix)
    return {
        layout.feature_key(fs, entity, eid).encode(): pack(at, values)
        for (entity, eid), (at, values) in final_values(fs, events).items()
    }


def _dead_letters(settings: Settings, topic: str) -> list[DeadLetter]:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "unused",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, 0, -2)])
    out: list[DeadLetter] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            raise AssertionError(msg.error())
        out.append(decode(DeadLetter, msg.value()))
    c.close()
    return out


@pytest.fixture
def key_prefix(redis_prefix: str) -> str:
    return redis_prefix.rstrip(":")


def test_bad_and_late_events_go_to_dead_letters_and_nothing_else_is_lost(
    isolated_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    good = _events(6000, seed=1)
    bad = [
        (b"c1", b"{this is not json"),
        (b"c2", b'["a", "list"]'),
        (b"c3", json.dumps({**good[0], "event_id": "bad-amount", "amount": "12"}).encode()),
        (b"c4", json.dumps({**good[1], "event_id": "neg", "amount": -5}).encode()),
        (b"c5", json.dumps({k: v for k, v in good[2].items() if k != "card_id"}).encode()),
    ]
    # Late: 10 min before anything else, sent after each card's partition moved on.
    late = [
        {**e, "event_id": f"late-{i}", "event_time": BASE_MS - 600_000}
        for i, e in enumerate(good[-40:])
    ]
    mixed: list[Any] = good[:3000] + bad[:3] + good[3000:] + bad[3:] + late
    _produce(isolated_settings, topics.events, mixed)

    port = free_port()
    log = tmp_path / "flow.log"
    flow = Flow(isolated_settings, key_prefix, log, "--no-recovery", metrics_port=port)
    expected = _expected(good, key_prefix)
    _until(lambda: _store(redis_client, key_prefix) == expected, "the values", flow)
    dead = ("loopline_features_dead_letters_total",)
    _until(
        lambda: sum(v for k, v in _metrics(port).items() if k[0] in dead) == 45,
        "45 dead letters",
        flow,
    )
    m = _metrics(port)
    flow.proc.terminate()
    flow.proc.wait(30)

    assert m[("loopline_features_records_total", ())] == len(mixed)
    assert m[("loopline_features_events_total", ())] == len(good)
    for reason, n in (("malformed", 2), ("invalid", 3), ("late", 40)):
        assert m[("loopline_features_dead_letters_total", (("reason", reason),))] == n
    assert m[("loopline_features_late_events_total", ())] == 40
    assert m[("loopline_features_freshness_seconds_count", ())] > 0
    assert m[("loopline_features_redis_write_seconds_count", ())] > 0
    assert m[("loopline_features_redis_keys_total", (("outcome", "written"),))] >= len(expected)
    lag = [v for k, v in m.items() if k[0] == "loopline_features_consumer_lag"]
    assert len(lag) == 4 and set(lag) == {0.0}

    letters = _dead_letters(isolated_settings, topics.dead_letters)
    by_reason: dict[str, list[DeadLetter]] = {}
    for dl in letters:
        by_reason.setdefault(dl.reason, []).append(dl)
    assert sorted(by_reason) == ["invalid", "late", "malformed"]
    assert len(by_reason["malformed"]) == 2 and len(by_reason["invalid"]) == 3
    assert len(by_reason["late"]) == len(late)
    assert {dl.original_value() for dl in by_reason["malformed"]} == {bad[0][1], bad[1][1]}
    assert {json.loads(dl.original_value())["event_id"] for dl in by_reason["late"]} == {
        e["event_id"] for e in late
    }
    for dl in letters:
        assert dl.source_topic == topics.events and 0 <= dl.partition < 4 and dl.offset >= 0
        assert dl.error
    assert len({(dl.partition, dl.offset) for dl in letters}) == len(letters)


def test_kill_9_mid_stream_then_restart_equals_one_clean_run(
    isolated_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    first, second = _events(20_000, seed=2, part=(0, 2)), _events(60_000, seed=3, part=(1, 2))
    recovery = str(tmp_path / "recovery")
    log = tmp_path / "flow.log"
    _produce(isolated_settings, topics.events, first)
    flow = Flow(isolated_settings, key_prefix, log, "--recovery-dir", recovery)
    expected_first = _expected(first, key_prefix)
    deadline = time.monotonic() + 90
    while _store(redis_client, key_prefix) != expected_first:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        assert flow.proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(2.5)  # at least one snapshot (interval 1 s) covers the first part
    first_end = _end_offsets(isolated_settings, topics.events)
    # The second part arrives at a steady pace; the flow dies in the middle of it.
    producer = threading.Thread(
        target=_produce, args=(isolated_settings, topics.events, second, 15_000.0)
    )
    producer.start()
    time.sleep(1.5)
    flow.kill9()
    producer.join()
    expected = _expected(first + second, key_prefix)
    assert _store(redis_client, key_prefix) != expected, "the kill came too late to test anything"
    # Drop the first part from the topic: only a restart that really resumes from
    # its snapshot (state and offsets together) can still get every value right.
    admin = AdminClient({"bootstrap.servers": isolated_settings.kafka.bootstrap_servers})
    for future in admin.delete_records(first_end).values():
        future.result(30)

    Flow(isolated_settings, key_prefix, log, "--recovery-dir", recovery, "--drain", "2").wait()

    assert _store(redis_client, key_prefix) == expected
    assert not _dead_letters(isolated_settings, topics.dead_letters)


def test_two_workers_and_two_processes_equal_one_worker(
    isolated_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    events = _events(15_000, seed=4)
    _produce(isolated_settings, topics.events, events)
    runs = {
        "one": ("--workers", "1"),
        "two-workers": ("--workers", "2"),
        "two-processes": ("--processes", "2"),
    }
    stores = {}
    for name, args in runs.items():
        prefix = f"{key_prefix}-{name}"
        flow = Flow(
            isolated_settings,
            prefix,
            tmp_path / f"{name}.log",
            *args,
            "--drain",
            "2",
            "--recovery-dir",
            str(tmp_path / f"recovery-{name}"),
        )
        flow.wait()
        store = _store(redis_client, prefix)
        stores[name] = {k[len(prefix) :]: v for k, v in store.items()}
        if store:
            redis_client.delete(*store)
    expected = {k[len(key_prefix) :]: v for k, v in _expected(events, key_prefix).items()}
    assert stores["one"] == expected
    assert stores["two-workers"] == stores["one"]
    assert stores["two-processes"] == stores["one"]


def test_start_from_end_ignores_history(
    isolated_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    old, new = _events(2000, seed=5, part=(0, 2)), _events(2000, seed=6, part=(1, 2))
    _produce(isolated_settings, topics.events, old)
    port = free_port()
    env_flow = Flow(
        isolated_settings,
        key_prefix,
        tmp_path / "flow.log",
        "--no-recovery",
        metrics_port=port,
        start_from="end",
    )
    lag = "loopline_features_consumer_lag"
    _until(lambda: sum(k[0] == lag for k in _metrics(port)) == 4, "all partitions", env_flow)
    _produce(isolated_settings, topics.events, new)
    expected = _expected(new, key_prefix)
    _until(lambda: _store(redis_client, key_prefix) == expected, "only the new values", env_flow)
    env_flow.proc.terminate()
    env_flow.proc.wait(30)


def test_an_applied_earlier_version_runs_beside_the_definitions_own(
    isolated_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    """`run features --feature-set-version 1` keeps the old computation's keys fresh."""
    old = changed_fraud_features()
    registry = tmp_path / "registry"
    state = AppliedState(registry)
    state.record("fraud", old.fingerprint, old.describe(), now_ms=1)
    state.record("fraud", FS.fingerprint, FS.describe(), now_ms=2)
    events = _events(4_000, seed=9)
    _produce(isolated_settings, topics.events, events)
    env = {"LOOPLINE_REGISTRY__PATH": str(registry)}
    for name, args in {"v1": ("--feature-set-version", "1"), "own": ()}.items():
        flow = Flow(
            isolated_settings,
            key_prefix,
            tmp_path / f"{name}.log",
            *args,
            "--drain",
            "2",
            "--recovery-dir",
            str(tmp_path / f"recovery-{name}"),
            extra_env=env,
        )
        flow.wait()
    # Both versions side by side: each under its own fingerprint, each exact.
    expected = {**_expected(events, key_prefix, old), **_expected(events, key_prefix)}
    assert _store(redis_client, key_prefix) == expected
    bad = Flow(
        isolated_settings, key_prefix, tmp_path / "v9.log", "--feature-set-version", "9",
        extra_env=env,
    )  # fmt: skip
    assert bad.proc.wait(60) == 2
    assert "no applied feature-set version 9 (applied: [1, 2])" in (tmp_path / "v9.log").read_text()
