"""Fixtures for integration tests beyond the shared stack (see tests/conftest.py).

unused_tcp_port_factory (function)
    Call it to get a TCP port on 127.0.0.1 that nothing listens on right now,
    never the same one twice in a test (for private servers a test starts).
private_stack_settings (function)
    Call it with a state dir to get settings for a second, separate stack on
    fresh ports (``reuse_session_redis=True`` keeps the session's Redis
    address instead, to test reuse); the Kafka jars of the session stack are linked in so it
    starts without Maven. Whatever such a stack started is stopped at teardown.
features_run (function)
    The features flow tests' FeaturesRun (tests/features_support.py): the
    test's settings and topics, the shared Redis, its key prefix, a temp dir.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from features_support import FeaturesRun

from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.stack import Stack
from loopline.stack.paths import StackPaths
from loopline.stack.ports import free_port


@pytest.fixture
def unused_tcp_port_factory() -> Callable[[], int]:
    handed_out: set[int] = set()

    def factory() -> int:
        while True:
            port = free_port()
            if port not in handed_out:
                handed_out.add(port)
                return port

    return factory


@pytest.fixture
def private_stack_settings(
    stack_settings: Settings, unused_tcp_port_factory: Callable[[], int]
) -> Iterator[Callable[..., Settings]]:
    made: list[Settings] = []

    def make(state_dir: Path, *, reuse_session_redis: bool = False) -> Settings:
        kafka_port = unused_tcp_port_factory()
        stack = replace(
            stack_settings.stack,
            state_dir=state_dir,
            kafka_port=kafka_port,
            kafka_controller_port=unused_tcp_port_factory(),
            # Small: a second JVM next to the session broker on a 2-core machine.
            kafka_heap_mb=256,
        )
        redis_settings = stack_settings.redis
        if not reuse_session_redis:
            port = unused_tcp_port_factory()
            redis_settings = replace(redis_settings, host="127.0.0.1", port=port)
        kafka = replace(stack_settings.kafka, bootstrap_servers=f"127.0.0.1:{kafka_port}")
        settings = replace(stack_settings, stack=stack, kafka=kafka, redis=redis_settings)
        _link_session_jars(stack_settings, settings)
        made.append(settings)
        return settings

    yield make
    for settings in made:
        Stack(settings).down()


def _link_session_jars(session: Settings, private: Settings) -> None:
    """Share the session state dir's jars: one Maven run per machine, not per test.

    The session stack may be a reused one whose state dir holds no jars yet,
    so fetch them there first (quick and offline once Maven's cache is warm).
    """
    version = private.stack.kafka_version
    source = Stack(session).fetch()
    target = StackPaths.for_state_dir(private.stack.state_dir).kafka_lib(version)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source, target_is_directory=True)


@pytest.fixture
def features_run(
    isolated_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> FeaturesRun:
    return FeaturesRun(isolated_settings, topics, redis_client, key_prefix, tmp_path)
