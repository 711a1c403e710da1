"""The reuse/start/wait/stop rules every stack server follows, on a fake server.

The fake is a tiny Python process that "answers" by creating a file, so the
rules are checked with real processes and pid files but no sockets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loopline.config.loader import load_settings
from loopline.contracts.errors import MissingToolError, StackError
from loopline.stack import process
from loopline.stack.component import Component
from loopline.stack.kafka import KafkaBroker
from loopline.stack.paths import StackPaths
from loopline.stack.redis_server import RedisServer

SERVE = "open('ready', 'w').close(); import time; time.sleep(120)"


class FakeServer(Component):
    name = "fake"

    def __init__(
        self,
        root: Path,
        *,
        code: str = SERVE,
        elsewhere: bool = False,
        address: str = "127.0.0.1:1",
        startup_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(StackPaths.for_state_dir(root), startup_timeout_s)
        self.code = code
        # True: some other server already answers at the address.
        self.elsewhere = elsewhere
        self._address = address
        self.prepared = 0

    @property
    def address(self) -> str:
        return self._address

    def ports(self) -> list[int]:
        return []

    def probe(self) -> bool:
        if self.elsewhere:
            return True
        return self.record() is not None and (self.paths.root / "ready").exists()

    def running_version(self) -> str | None:
        return "9.9"

    def can_start(self) -> str | None:
        return None

    def prepare(self) -> None:
        self.prepared += 1
        (self.paths.root / "ready").unlink(missing_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.code]

    def expected_version(self) -> str:
        return "1.0"


def test_up_starts_records_and_down_stops(tmp_path: Path) -> None:
    server = FakeServer(tmp_path)
    first = server.up()
    assert first.up and first.managed and first.started_now and first.version == "1.0"
    record = process.read_record(server.pid_file)
    assert record is not None and record.pid == first.pid and process.is_running(record)

    second = server.up()
    assert second.pid == first.pid and second.managed and not second.started_now
    assert server.prepared == 1
    status = server.status()
    assert status.up and status.managed and status.pid == first.pid

    assert server.down() == f"fake: stopped (pid {first.pid})"
    assert not process.pid_alive(first.pid)
    assert not server.pid_file.exists()
    assert server.down() is None


def test_a_server_answering_already_is_reused_and_never_stopped(tmp_path: Path) -> None:
    server = FakeServer(tmp_path, elsewhere=True)
    status = server.up()
    assert status.up and not status.managed and status.pid is None and status.version == "9.9"
    assert server.prepared == 0 and not server.pid_file.exists()
    assert server.down() is None
    assert "reused" in server.status().detail


def test_a_server_dying_at_startup_fails_with_its_log(tmp_path: Path) -> None:
    server = FakeServer(tmp_path, code="import sys; print('boom: bad config'); sys.exit(3)")
    with pytest.raises(StackError) as failure:
        server.up()
    assert "fake exited during startup" in str(failure.value)
    assert "boom: bad config" in str(failure.value)
    assert not server.pid_file.exists()


def test_a_server_never_answering_times_out_and_is_stopped(tmp_path: Path) -> None:
    silent = (
        "import os, time; open('pid', 'w').write(str(os.getpid())); "
        "print('starting...', flush=True); time.sleep(120)"
    )
    server = FakeServer(tmp_path, code=silent, startup_timeout_s=1.0)
    with pytest.raises(StackError, match=r"did not answer .* within 1 s") as failure:
        server.up()
    assert "starting..." in str(failure.value)
    assert not server.pid_file.exists()
    assert not process.pid_alive(int((tmp_path / "pid").read_text()))


def test_a_stale_pid_file_is_dropped_and_a_new_server_started(tmp_path: Path) -> None:
    server = FakeServer(tmp_path)
    pid = server.up().pid
    assert pid is not None
    # Simulate a crash: kill the process behind up's back; the pid file stays.
    record = process.read_record(server.pid_file)
    assert record is not None
    process.stop(record)
    assert server.pid_file.exists()
    assert server.record() is None and not server.pid_file.exists()
    restarted = server.up()
    assert restarted.started_now and restarted.pid != pid
    server.down()


def test_a_server_recorded_at_another_address_is_an_error(tmp_path: Path) -> None:
    FakeServer(tmp_path, address="127.0.0.1:1").up()
    moved = FakeServer(tmp_path, address="127.0.0.1:2")
    try:
        with pytest.raises(StackError, match=r"already runs fake at 127\.0\.0\.1:1"):
            moved.up()
    finally:
        assert moved.down() is not None  # down stops what the state dir recorded


def _only_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    """Make PATH hold nothing but the given executable shell scripts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


JAVA_17 = "echo 'openjdk version \"17.0.15\" 2025' >&2"


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        pytest.param({}, "openjdk-17-jre-headless", id="missing java names the debian package"),
        pytest.param(
            {"java": "echo 'openjdk version \"11.0.2\" 2019' >&2"},
            r"java 17\+ \(found java 11\)",
            id="old java is refused",
        ),
        pytest.param(
            {"java": JAVA_17}, "apt-get install maven", id="missing maven names the debian package"
        ),
    ],
)
def test_fetching_kafka_needs_java_17_and_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tools: dict[str, str], message: str
) -> None:
    _only_on_path(tmp_path, monkeypatch, **tools)
    broker = KafkaBroker(load_settings(env={}), StackPaths.for_state_dir(tmp_path / "s"))
    with pytest.raises(MissingToolError, match=message):
        broker.fetch()


def test_jars_already_fetched_need_no_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_on_path(tmp_path, monkeypatch, java=JAVA_17)
    settings = load_settings(env={})
    paths = StackPaths.for_state_dir(tmp_path / "s")
    lib = paths.kafka_lib(settings.stack.kafka_version)
    lib.mkdir(parents=True)
    (lib / f"kafka_2.13-{settings.stack.kafka_version}.jar").touch()
    assert KafkaBroker(settings, paths).fetch() == lib


def test_missing_redis_server_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_on_path(tmp_path, monkeypatch)
    server = RedisServer(load_settings(env={}), StackPaths.for_state_dir(tmp_path / "s"))
    with pytest.raises(MissingToolError, match="apt-get install redis-server"):
        server.prepare()
