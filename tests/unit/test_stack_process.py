"""Pid bookkeeping, stopping and locks: real (tiny) processes, no sockets."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from loopline.contracts.errors import MissingToolError, StackError
from loopline.stack import locks, process
from loopline.stack.process import ProcessRecord

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# Ignores SIGTERM, so only the SIGKILL fallback can stop it.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)",
]


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _spawn(tmp_path: Path, argv: list[str]) -> ProcessRecord:
    pid = process.spawn(argv, log_path=tmp_path / "logs" / "p.log", cwd=tmp_path)
    return process.record_for("p", pid, argv, "1.0", "127.0.0.1:1")


def test_record_round_trips_through_its_pid_file(tmp_path: Path) -> None:
    rec = ProcessRecord("kafka", 123, 456, ["java", "-cp", "x"], "4.3.1", "127.0.0.1:19092")
    path = tmp_path / "pids" / "kafka.json"
    process.write_record(path, rec)
    assert process.read_record(path) == rec
    assert not list(path.parent.glob("*.tmp"))


def test_missing_or_corrupt_pid_file_reads_as_none(tmp_path: Path) -> None:
    assert process.read_record(tmp_path / "absent.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert process.read_record(bad) is None
    bad.write_text('{"name": "x"}')
    assert process.read_record(bad) is None


def test_own_process_is_running_only_with_its_true_start_time() -> None:
    me = process.record_for("me", os.getpid(), [], "", "")
    assert me.start_time is not None
    assert process.is_running(me)
    # Same pid, other start time: a recycled pid must not count as ours.
    assert not process.is_running(replace(me, start_time=me.start_time + 1))


def test_a_pid_that_does_not_exist_is_not_running() -> None:
    # pid_max is at most 2**22 on Linux.
    assert not process.is_running(ProcessRecord("x", 2**22 + 1, None, [], "", ""))


def test_spawned_process_is_stopped_with_sigterm(tmp_path: Path) -> None:
    rec = _spawn(tmp_path, SLEEPER)
    assert process.is_running(rec)
    assert process.stop(rec, grace_s=30) is True
    assert not process.is_running(rec) and not process.pid_alive(rec.pid)
    # Stopping again is a no-op.
    assert process.stop(rec) is False


def test_process_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    rec = _spawn(tmp_path, STUBBORN)
    log = tmp_path / "logs" / "p.log"
    _wait_for(lambda: "ready" in process.tail(log))  # its SIGTERM handler is installed
    started = time.monotonic()
    assert process.stop(rec, grace_s=0.5) is True
    assert not process.pid_alive(rec.pid)
    assert time.monotonic() - started < 15


def test_exited_sees_a_child_that_died(tmp_path: Path) -> None:
    rec = _spawn(tmp_path, [sys.executable, "-c", "print('bye')"])
    _wait_for(lambda: process.exited(rec.pid))
    assert "bye" in process.tail(tmp_path / "logs" / "p.log")


def test_spawn_rotates_the_previous_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "p.log"
    log.parent.mkdir()
    log.write_text("previous run\n")
    rec = _spawn(tmp_path, [sys.executable, "-c", "print('this run')"])
    _wait_for(lambda: process.exited(rec.pid))
    assert (tmp_path / "logs" / "p.log.1").read_text() == "previous run\n"
    assert process.tail(log) == "this run"


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.tail(log, 3) == "line 97\nline 98\nline 99"
    assert process.tail(tmp_path / "none.log") == ""


def test_missing_tool_names_the_package_to_install() -> None:
    with pytest.raises(MissingToolError) as failure:
        process.require_tool("no-such-tool-loopline", "apt-get install no-such-tool")
    assert failure.value.tool == "no-such-tool-loopline"
    assert "apt-get install no-such-tool" in str(failure.value)


def test_users_lock_knows_when_the_last_user_leaves(tmp_path: Path) -> None:
    path = tmp_path / "users.lock"
    # flock locks belong to open files, so two objects act like two processes.
    first, second = locks.UsersLock(path), locks.UsersLock(path)
    first.hold()
    second.hold()
    assert first.release_and_check_last() is False
    assert second.release_and_check_last() is True


def test_exclusive_lock_times_out_with_a_stack_error(tmp_path: Path) -> None:
    path = tmp_path / "stack.lock"
    with (
        locks.exclusive(path, 1.0),
        pytest.raises(StackError, match="another loopline process"),
        locks.exclusive(path, 0.2),
    ):
        pass
    with locks.exclusive(path, 1.0):  # released again
        pass
