"""The local stack on the real servers: up, status, reuse, down."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from loopline import cli
from loopline.contracts.errors import StackError
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.stack import Stack, delete_topics, ensure_topics, existing_topics
from loopline.stack.component import port_open
from loopline.stack.paths import StackPaths
from loopline.stack.process import ProcessRecord, pid_alive, read_record
from loopline.stack.redis_server import RedisServer


def _config_file(settings: Settings, path: Path) -> Path:
    """A TOML file describing ``settings``' stack, for driving the CLI."""
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{settings.kafka.bootstrap_servers}"
topic_prefix = "{settings.kafka.topic_prefix}"

[redis]
host = "{settings.redis.host}"
port = {settings.redis.port}

[stack]
state_dir = "{settings.stack.state_dir}"
kafka_port = {settings.stack.kafka_port}
kafka_controller_port = {settings.stack.kafka_controller_port}
kafka_heap_mb = {settings.stack.kafka_heap_mb}
"""
    )
    return path


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a --config file the only source of settings for in-process CLI runs.

    LOOPLINE_* variables outrank the file; a developer's (or this session's)
    would otherwise point the CLI at another stack.
    """
    for name in list(os.environ):
        if name.startswith("LOOPLINE_"):
            monkeypatch.delenv(name)


def _pids(stack: Stack) -> dict[str, int | None]:
    return {c.name: c.pid for c in stack.status().components}


def test_session_stack_is_up_with_versions_and_topics(stack_settings: Settings) -> None:
    status = Stack(stack_settings).status()
    assert status.all_up, status.describe()
    assert status.kafka.version, status.describe()
    assert status.redis.version and status.redis.version[0].isdigit(), status.describe()
    assert set(status.present_topics) == set(status.expected_topics)


def test_up_again_is_harmless(stack_settings: Settings) -> None:
    stack = Stack(stack_settings)
    before = _pids(stack)
    again = stack.up()
    assert again.all_up, again.describe()
    assert not again.kafka.started_now and not again.redis.started_now
    assert _pids(stack) == before


def test_cli_status_exits_zero_when_all_up(
    stack_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_env: None
) -> None:
    config = _config_file(stack_settings, tmp_path / "loopline.toml")
    assert cli.main(["--config", str(config), "status"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "kafka  up" in out and "redis  up" in out, out


def test_ensure_topics_is_idempotent_and_delete_topics_removes_them(
    stack_settings: Settings,
) -> None:
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:8]}.")
    created = ensure_topics(stack_settings, topics)
    assert sorted(created) == sorted(topics.all())
    assert ensure_topics(stack_settings, topics) == []
    assert set(topics.all()) <= existing_topics(stack_settings)
    delete_topics(stack_settings, topics.all())
    deadline = time.monotonic() + 30
    while set(topics.all()) & existing_topics(stack_settings):
        assert time.monotonic() < deadline, "topics still listed 30 s after deletion"
        time.sleep(0.1)


def test_redis_round_trip(redis_client: redis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}entity:42"
    redis_client.set(key, b"\x00packed\xff", ex=60)
    assert redis_client.get(key) == b"\x00packed\xff"
    assert 0 < redis_client.ttl(key) <= 60
    with redis_client.pipeline(transaction=False) as pipe:
        for i in range(100):
            pipe.hset(f"{redis_prefix}h", f"f{i}", i)
        pipe.hgetall(f"{redis_prefix}h")
        *_, fields = pipe.execute()
    assert len(fields) == 100 and fields[b"f99"] == b"99"


def test_private_stack_up_twice_then_down_leaves_nothing_running(
    private_stack_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cli_env: None,
) -> None:
    settings = private_stack_settings(tmp_path / "state")
    stack = Stack(settings)
    paths = StackPaths.for_state_dir(settings.stack.state_dir)

    first = stack.up()
    assert first.all_up, first.describe()
    assert first.kafka.started_now and first.redis.started_now
    records: dict[str, ProcessRecord] = {}
    for name in ("kafka", "redis"):
        record = read_record(paths.pid_file(name))
        assert record is not None and pid_alive(record.pid), name
        records[name] = record

    second = stack.up()
    assert not second.kafka.started_now and not second.redis.started_now
    assert {c.name: c.pid for c in second.components} == {n: r.pid for n, r in records.items()}

    config = _config_file(settings, tmp_path / "loopline.toml")
    assert cli.main(["--config", str(config), "down"]) == cli.EXIT_OK
    assert "stopped" in capsys.readouterr().out

    for record in records.values():
        assert not pid_alive(record.pid), f"{record.name} pid {record.pid} still alive"
    assert not any(paths.pid_file(name).exists() for name in records)
    for port in (settings.stack.kafka_port, settings.stack.kafka_controller_port):
        assert not port_open("127.0.0.1", port)
    assert not port_open("127.0.0.1", settings.redis.port)

    # Idempotent: a second down has nothing to stop, and status says all is down.
    assert stack.down() == []
    assert cli.main(["--config", str(config), "status"]) == cli.EXIT_NOT_ALL_UP


def test_reused_redis_is_never_stopped(
    private_stack_settings: Callable[..., Settings],
    tmp_path: Path,
    redis_client: redis.Redis,
) -> None:
    settings = private_stack_settings(tmp_path / "state", reuse_session_redis=True)
    server = RedisServer(settings, StackPaths.for_state_dir(settings.stack.state_dir))
    status = server.up()
    assert status.up and not status.managed and status.pid is None
    assert server.down() is None
    assert redis_client.ping()


def test_failed_start_reports_the_log_and_stops_what_it_started(
    private_stack_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = private_stack_settings(tmp_path / "state")
    # 1 MB of heap: the JVM refuses to start, after Redis is already up.
    broken = replace(settings, stack=replace(settings.stack, kafka_heap_mb=1))
    paths = StackPaths.for_state_dir(settings.stack.state_dir)
    with pytest.raises(StackError) as failure:
        Stack(broken).up()
    message = str(failure.value)
    assert "kafka exited during startup" in message
    assert "heap" in message.lower(), message  # the JVM's own words, from the log tail
    # Redis, started by this failed `up`, was stopped again.
    deadline = time.monotonic() + 30
    while port_open("127.0.0.1", settings.redis.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_open("127.0.0.1", settings.redis.port)
    assert not paths.pid_file("redis").exists()
