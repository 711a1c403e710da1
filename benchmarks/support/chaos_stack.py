"""A chaos scenario's own servers and services, which it may kill at will.

:class:`PrivateStack` starts a Kafka broker and a Redis server on free ports,
each in its own state directory under the scenario's scratch folder (the
shared stack's jars linked in, so no download), with Loopline's topics under
a unique prefix; :meth:`PrivateStack.kill` sends SIGKILL to one of them and
:meth:`PrivateStack.restart` starts it again on the same state. The shared
``loopline up`` stack is never touched.

:class:`Service` runs one Loopline command (``run features``, ``run serve``)
as a child process on the private stack's settings, with ``kill9``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from loopline.config.loader import load_settings
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.stack import Stack, delete_topics, ensure_topics
from loopline.stack.component import Component, port_open
from loopline.stack.kafka import KafkaBroker
from loopline.stack.paths import StackPaths
from loopline.stack.ports import free_port
from loopline.stack.process import read_record
from loopline.stack.redis_server import RedisServer


class PrivateStack:
    """A broker and a Redis of a scenario's own, under ``work``."""

    def __init__(self, work: Path, *, redis_persistence: bool = False, partitions: int = 4) -> None:
        shared = load_settings()
        self.work = work
        self.key_prefix = f"chaos{uuid.uuid4().hex[:6]}"
        self.topics = Topics(f"{self.key_prefix}.")
        kafka_port = free_port()
        stack = replace(
            shared.stack,
            state_dir=work / "state",
            kafka_port=kafka_port,
            kafka_controller_port=free_port(),
            # Small: a second JVM beside the shared broker on a 2-core machine.
            kafka_heap_mb=384,
            # A JVM restarting on a loaded 2-core machine has taken over 2 minutes.
            startup_timeout_s=600.0,
            redis_persistence=redis_persistence,
            redis_maxmemory_mb=256,
        )
        self.settings: Settings = replace(
            shared,
            stack=stack,
            kafka=replace(
                shared.kafka,
                bootstrap_servers=f"127.0.0.1:{kafka_port}",
                topic_prefix=self.topics.prefix,
            ),
            redis=replace(shared.redis, port=free_port()),
            topics=replace(shared.topics, partitions=partitions),
            streams=replace(shared.streams, redis_key_prefix=self.key_prefix),
        )
        self.paths = StackPaths.for_state_dir(stack.state_dir)
        lib = self.paths.kafka_lib(stack.kafka_version)
        if not lib.exists():
            lib.parent.mkdir(parents=True, exist_ok=True)
            lib.symlink_to(Stack(shared).fetch(), target_is_directory=True)
        self.kafka = KafkaBroker(self.settings, self.paths)
        self.redis = RedisServer(self.settings, self.paths)
        # Loopline processes running on this stack: killed with it, whatever happened.
        self.services: list[Service] = []

    def __enter__(self) -> PrivateStack:
        self.redis.up()
        self.kafka.up()
        ensure_topics(self.settings, self.topics)
        return self

    def __exit__(self, *exc: object) -> None:
        for service in self.services:
            service.stop(timeout_s=10)
        for part in (self.kafka, self.redis):
            part.down()

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers

    def part(self, name: str) -> Component:
        return {"kafka": self.kafka, "redis": self.redis}[name]

    def kill(self, name: str) -> int:
        """SIGKILL the server ``name`` (``kafka`` or ``redis``); returns its pid."""
        part = self.part(name)
        rec = read_record(part.pid_file)
        if rec is None:
            raise RuntimeError(f"{name} of the scenario is not running")
        os.kill(rec.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while part.record() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        return rec.pid

    def restart(self, name: str) -> float:
        """Start ``name`` again on its state; returns the seconds until it answered."""
        started = time.monotonic()
        self.part(name).up()
        return time.monotonic() - started

    def store(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.settings.redis.port, socket_timeout=10)

    def env(self) -> dict[str, str]:
        """``LOOPLINE_*`` variables pointing a child process at this stack."""
        s = self.settings
        return {
            "LOOPLINE_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
            "LOOPLINE_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
            "LOOPLINE_REDIS__HOST": s.redis.host,
            "LOOPLINE_REDIS__PORT": str(s.redis.port),
            "LOOPLINE_STREAMS__REDIS_KEY_PREFIX": self.key_prefix,
            "LOOPLINE_TOPICS__PARTITIONS": str(s.topics.partitions),
            # Never the repository's own recovery folder.
            "LOOPLINE_STREAMS__RECOVERY_DIR": str(self.work / "recovery"),
        }

    def drop_topics(self) -> None:
        delete_topics(self.settings, self.topics.all(), timeout_s=20)


class Service:
    """``python -m <module> <args>`` (the ``loopline`` command by default) on a private
    stack, its output in ``log``."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log: Path,
        *,
        module: str = "loopline.cli",
        start: bool = True,
    ) -> None:
        self.args = args
        self.env = {**os.environ, **env}
        self.log = log
        self.module = module
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole process group (a supervisor and its workers alike)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(30)

    def tail(self, chars: int = 3000) -> str:
        return self.text()[-chars:]

    def text(self) -> str:
        """Its whole log so far ("" before it wrote any)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def poll_until(check: Callable[[], Any], timeout_s: float, every_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or None at the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every_s)
    return None


def wait_or_fail(
    what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.1
) -> Any:
    """:func:`poll_until`, raising TimeoutError naming ``what`` at the timeout."""
    got = poll_until(check, timeout_s, every_s)
    if not got:
        raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
    return got


def wait_for(check: Any, timeout_s: float, interval_s: float = 0.2) -> float | None:
    """Seconds until ``check()`` was true, or None when ``timeout_s`` passed first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(interval_s)
    return None


def wait_port(port: int, timeout_s: float = 60.0) -> float | None:
    return wait_for(lambda: port_open("127.0.0.1", port), timeout_s, 0.05)
