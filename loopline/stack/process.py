"""Starting, recognising and stopping the server processes `loopline up` owns.

A pid alone is not proof of ownership: pids are reused, so a stale pid file
could make ``down`` kill an unrelated process. Each record therefore keeps the
process start time (``/proc/<pid>/stat`` field 22) and a record only counts as
running while the same pid still has the same start time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from loopline.contracts.errors import MissingToolError, StackError

# Popen objects of the servers this Python process started. Holding them lets
# ``stop`` reap the child (no zombie left behind in a long-lived test session)
# and keeps Python from warning about a still-running subprocess at exit.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says about a server loopline started."""

    name: str
    pid: int
    # Clock ticks since boot (Linux); None where /proc is unavailable.
    start_time: int | None
    argv: list[str]
    version: str
    address: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        raw = json.loads(text)
        return cls(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            start_time=None if raw.get("start_time") is None else int(raw["start_time"]),
            argv=[str(a) for a in raw.get("argv", [])],
            version=str(raw.get("version", "")),
            address=str(raw.get("address", "")),
        )


def write_record(path: Path, record: ProcessRecord) -> None:
    """Write atomically so a crash never leaves a half-written pid file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(record.to_json())
    tmp.replace(path)


def read_record(path: Path) -> ProcessRecord | None:
    """The record at ``path``, or None when absent or unreadable."""
    try:
        return ProcessRecord.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # A corrupt pid file cannot prove ownership of anything.
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return text[text.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if unknown/gone."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    # Field 3 (state) is fields[0]; field 22 (starttime) is fields[19].
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] in {"Z", "X"}


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child, so it stops being a zombie."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    _reap(pid)
    if Path("/proc").is_dir():
        return _proc_stat(pid) is not None and not _is_zombie(pid)
    try:  # Not Linux: the best a portable check can do.
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_running(record: ProcessRecord) -> bool:
    """Whether the very process ``record`` describes is still alive."""
    if not pid_alive(record.pid):
        return False
    if record.start_time is None:
        return True
    return process_start_time(record.pid) == record.start_time


def rotate_log(path: Path) -> None:
    """Keep the previous run's log as ``<name>.1`` and start a fresh one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.replace(path.with_name(path.name + ".1"))


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start a server detached from our terminal; stdout and stderr go to ``log_path``.

    A new session keeps Ctrl-C in the shell that ran ``loopline up`` from
    reaching the servers, which must outlive the command.
    """
    rotate_log(log_path)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[child.pid] = child
    return child.pid


def record_for(
    name: str, pid: int, argv: Sequence[str], version: str, address: str
) -> ProcessRecord:
    return ProcessRecord(
        name=name,
        pid=pid,
        start_time=process_start_time(pid),
        argv=list(argv),
        version=version,
        address=address,
    )


def stop(record: ProcessRecord, *, grace_s: float = 30.0) -> bool:
    """SIGTERM the recorded process, wait up to ``grace_s``, then SIGKILL.

    Returns False when the process was already gone (nothing to stop).
    """
    if not is_running(record):
        _reap(record.pid)
        return False
    _signal(record.pid, signal.SIGTERM)
    if _wait_gone(record, grace_s):
        return True
    _signal(record.pid, signal.SIGKILL)
    if not _wait_gone(record, 10.0):
        raise StackError(f"{record.name} (pid {record.pid}) survived SIGKILL")
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(record: ProcessRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(record):
            _reap(record.pid)
            return True
        time.sleep(0.05)
    return not is_running(record)


def exited(pid: int) -> bool:
    """Whether a process we spawned has exited (checked while waiting for readiness)."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is not None
    return not pid_alive(pid)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def require_tool(tool: str, how_to_install: str) -> str:
    """Absolute path of ``tool`` on PATH, or MissingToolError saying how to get it."""
    found = shutil.which(tool)
    if found is None:
        raise MissingToolError(tool, how_to_install)
    return found


def listening_pid(port: int) -> int | None:
    """Pid of the local process listening on TCP ``port``, if Linux lets us see it.

    Used only to describe a server loopline reuses (``status``), never to
    decide what to stop.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # cols[1] is local "ADDR:PORT" in hex, cols[3] the state (0A = LISTEN).
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(proc.name)
        except OSError:
            continue
    return None


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` ([] when unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
