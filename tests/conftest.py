"""Shared fixtures: the real local stack (Kafka + Redis), unique topics, Redis access.

Nothing heavy happens at import or collection: the stack starts only when a
test first asks for ``stack_settings``.

Fixtures
--------
stack_settings (session)
    :class:`Settings` pointing at a running stack. A stack already answering
    at the configured ports (``loopline up``, another pytest session) is
    reused; otherwise one is started with its state under
    ``<repo>/.loopline/test-stack-<kafka port>-<redis port>`` and stopped
    when the last session using that state directory ends. Failing to start
    is a test *error*, never a skip (in CI and locally alike).
topics (function)
    :class:`Topics` with a unique prefix (``t<8 hex>.``), all created on the
    broker; deleted afterwards, best effort.
isolated_settings (function)
    ``stack_settings`` whose topic prefix is that of ``topics`` and whose
    consumer groups are unique too: hand it to a component under test.
redis_client (function)
    A ``redis.Redis`` on the stack's Redis (bytes responses). Nothing is
    flushed; use ``redis_prefix`` for keys.
redis_prefix (function)
    A unique key prefix (``t<8 hex>:``); keys under it are deleted afterwards.
key_prefix (function)
    ``redis_prefix`` without its colon: the ``streams.redis_key_prefix`` setting
    that puts a component's keys under it.

Environment: ``LOOPLINE_<SECTION>__<KEY>`` variables apply as everywhere, e.g.
``LOOPLINE_STACK__STATE_DIR`` to choose where a started stack keeps its files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from loopline.config.loader import load_settings
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics

TESTS_DIR = Path(__file__).resolve().parent
# Test directory -> marker applied to every test collected under it.
MARKER_BY_DIR = {"unit": "unit", "integration": "integration", "e2e": "e2e"}
STATE_DIR_ENV = "LOOPLINE_STACK__STATE_DIR"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            first = item.path.resolve().relative_to(TESTS_DIR).parts[0]
        except (ValueError, IndexError):
            continue
        marker = MARKER_BY_DIR.get(first)
        if marker is not None:
            item.add_marker(getattr(pytest.mark, marker))


def session_settings(rootpath: Path, environ: dict[str, str]) -> Settings:
    """Settings for the test session: the environment, with a test state dir.

    The state directory differs from the one `loopline up` uses by default
    (``.loopline``), so a session never stops a stack a developer started.
    It is named after the ports: sessions configured for other ports get
    their own stack instead of tripping over this one's pid files.
    """
    settings = load_settings(env=environ)
    if STATE_DIR_ENV not in environ:
        ports = f"{settings.stack.kafka_port}-{settings.redis.port}"
        state_dir = rootpath / ".loopline" / f"test-stack-{ports}"
        settings = replace(settings, stack=replace(settings.stack, state_dir=state_dir))
    return settings


def _live_progress(config: pytest.Config) -> Callable[[str], None]:
    """Print past pytest's output capture: a first start downloads jars for a
    while, and captured lines would only show up if a test failed."""
    capture = config.pluginmanager.getplugin("capturemanager")

    def progress(message: str) -> None:
        uncaptured = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with uncaptured:
            print(f"[loopline stack] {message}", file=sys.stderr, flush=True)

    return progress


@pytest.fixture(scope="session")
def stack_settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    from loopline.contracts.errors import LooplineError
    from loopline.stack import Stack

    settings = session_settings(request.config.rootpath, dict(os.environ))
    stack = Stack(settings, progress=_live_progress(request.config))
    with contextlib.ExitStack() as cleanup:
        try:
            cleanup.enter_context(stack.shared())
        except LooplineError as e:
            where = "in CI " if os.environ.get("CI") == "true" else ""
            pytest.fail(
                f"the local stack (Kafka + Redis) could not be started {where}"
                f"(state dir {stack.paths.root}):\n{e}",
                pytrace=False,
            )
        yield settings


def unique_prefix(separator: str) -> str:
    return f"t{uuid.uuid4().hex[:8]}{separator}"


@pytest.fixture
def topics(stack_settings: Settings) -> Iterator[Topics]:
    from loopline.stack import delete_topics, ensure_topics

    created = Topics(prefix=unique_prefix("."))
    ensure_topics(stack_settings, created)
    yield created
    # Best effort: a leftover topic only costs disk in the test state dir.
    with contextlib.suppress(Exception):
        delete_topics(stack_settings, created.all(), timeout_s=10)


@pytest.fixture
def isolated_settings(stack_settings: Settings, topics: Topics) -> Settings:
    kafka = replace(
        stack_settings.kafka,
        topic_prefix=topics.prefix,
        consumer_group_prefix=f"{topics.prefix}group-",
    )
    return replace(stack_settings, kafka=kafka)


@pytest.fixture
def redis_client(stack_settings: Settings) -> Iterator[redis.Redis]:
    conf = stack_settings.redis
    # Generous timeouts: a loaded 2-core CI machine stalls now and then.
    client = redis.Redis(
        host=conf.host, port=conf.port, db=conf.db, socket_timeout=10, socket_connect_timeout=10
    )
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = unique_prefix(":")
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def key_prefix(redis_prefix: str) -> str:
    return redis_prefix.rstrip(":")
