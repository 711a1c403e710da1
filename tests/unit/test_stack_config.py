"""Generated configuration of the local stack: pure functions, no processes, no sockets."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings
from loopline.stack.component import ComponentStatus
from loopline.stack.kafka import (
    java_command,
    new_cluster_id,
    render_properties,
    server_properties,
    version_from_cmdline,
)
from loopline.stack.paths import StackPaths
from loopline.stack.redis_server import parse_server_version, redis_config
from loopline.stack.stack import StackStatus, check_bootstrap


def _settings(**env: str) -> Settings:
    return load_settings(env={f"LOOPLINE_{k.upper()}": v for k, v in env.items()})


def test_server_properties_single_node_kraft_on_configured_ports() -> None:
    s = _settings(stack__kafka_port="29092", stack__kafka_controller_port="29093")
    props = server_properties(s, Path("/state/kafka/data"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == "/state/kafka/data"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1", key


def test_render_properties_escapes_backslashes_and_keeps_order() -> None:
    text = render_properties({"a": "1", "log.dirs": r"C:\kafka\data"})
    lines = text.splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["a=1", r"log.dirs=C:\\kafka\\data"]


def test_cluster_id_has_kafkas_format() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_\-]{22}", i) and not i.startswith("-") for i in ids)


def test_java_command_sets_heap_log_config_and_classpath() -> None:
    s = _settings(stack__kafka_heap_mb="384")
    paths = StackPaths.for_state_dir(Path("/state"))
    argv = java_command(s, paths, "/usr/bin/java")
    assert argv[0] == "/usr/bin/java"
    assert "-Xmx384m" in argv
    assert f"-Dlog4j2.configurationFile={paths.kafka_log4j}" in argv
    assert argv[argv.index("-cp") + 1] == f"/state/kafka/lib-{s.stack.kafka_version}/*"
    assert argv[-2:] == ["kafka.Kafka", "/state/kafka/server.properties"]


@pytest.mark.parametrize(
    ("argv", "version"),
    [
        (["java", "-cp", "/opt/kafka/libs/kafka_2.13-3.9.0.jar:/x.jar", "kafka.Kafka"], "3.9.0"),
        (["java", "-cp", "/x/kafka-clients-4.3.1.jar", "kafka.Kafka"], "4.3.1"),
        (["java", "-cp", "/nonexistent/*", "kafka.Kafka"], None),
        ([], None),
    ],
)
def test_version_from_cmdline(argv: list[str], version: str | None) -> None:
    assert version_from_cmdline(argv) == version


def test_version_from_cmdline_globs_a_wildcard_classpath(tmp_path: Path) -> None:
    (tmp_path / "scala-library-2.13.18.jar").touch()
    (tmp_path / "kafka_2.13-4.3.1.jar").touch()
    assert version_from_cmdline(["java", "-cp", f"{tmp_path}/*", "kafka.Kafka"]) == "4.3.1"


def test_redis_config_without_persistence() -> None:
    s = _settings(redis__port="26379", stack__redis_maxmemory_mb="64")
    text = redis_config(s, Path("/state dir/redis"))
    lines = set(text.splitlines())
    assert {"port 26379", "bind 127.0.0.1", "daemonize no", "maxmemory 64mb"} <= lines
    assert {'save ""', "appendonly no"} <= lines
    assert 'dir "/state dir/redis"' in lines


def test_redis_config_with_persistence_uses_aof_not_snapshots() -> None:
    s = _settings(stack__redis_persistence="true")
    lines = set(redis_config(s, Path("/r")).splitlines())
    assert {"appendonly yes", 'save ""'} <= lines
    assert "appendonly no" not in lines


def test_parse_redis_server_version() -> None:
    text = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c"
    assert parse_server_version(text) == "7.0.15"
    assert parse_server_version("something else") is None


def test_paths_are_absolute_and_under_the_state_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = StackPaths.for_state_dir(Path(".loopline"))
    assert paths.root == tmp_path / ".loopline"
    assert paths.kafka_lib("4.3.1") == tmp_path / ".loopline/kafka/lib-4.3.1"
    assert paths.pid_file("kafka") == tmp_path / ".loopline/pids/kafka.json"
    assert paths.log_file("redis") == tmp_path / ".loopline/logs/redis.log"


@pytest.mark.parametrize(
    "bootstrap", ["127.0.0.1:19092", "localhost:19092", "other:9092,127.0.0.1:19092"]
)
def test_bootstrap_pointing_at_the_local_broker_is_accepted(bootstrap: str) -> None:
    check_bootstrap(_settings(kafka__bootstrap_servers=bootstrap))


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:9092", "kafka.example.com:19092"])
def test_bootstrap_elsewhere_is_a_config_error(bootstrap: str) -> None:
    with pytest.raises(ConfigError, match=r"stack\.kafka_port"):
        check_bootstrap(_settings(kafka__bootstrap_servers=bootstrap))


def _component(name: str, up: bool) -> ComponentStatus:
    return ComponentStatus(name, up, "127.0.0.1:1", "1.0" if up else None, False, None, "x")


def test_status_all_up_needs_both_servers_and_every_topic() -> None:
    expected = ("p.a", "p.b")
    full = StackStatus(_component("kafka", True), _component("redis", True), expected, expected, 3)
    assert full.all_up and full.missing_topics == ()
    assert "2/2 present" in full.describe() and "3 other topic(s)" in full.describe()
    partial = replace(full, present_topics=("p.a",))
    assert not partial.all_up and partial.missing_topics == ("p.b",)
    assert "missing: p.b" in partial.describe()
    down = replace(full, redis=_component("redis", False))
    assert not down.all_up
    no_kafka = StackStatus(_component("kafka", False), _component("redis", True), expected, (), 0)
    assert "unknown while Kafka is down" in no_kafka.describe()
