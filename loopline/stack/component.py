"""What Kafka and Redis have in common: reuse, start, wait, record, stop.

Each server follows one rule set:

* a process recorded in this state directory's pid file and still alive is
  "ours": ``up`` just waits for it to answer, ``down`` stops it;
* anything else already answering at the address is *reused*: ``up`` leaves
  it alone and ``down`` never touches it;
* otherwise ``up`` starts one, waits until it answers (or fails with the
  tail of its log) and records it.
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loopline.contracts.errors import StackError
from loopline.stack import locks, process
from loopline.stack.paths import StackPaths
from loopline.stack.process import ProcessRecord

Progress = Callable[[str], None]
# Covers another process's cold first start (Maven download included).
LOCK_TIMEOUT_S = 900.0


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ComponentStatus:
    """One server as ``status`` sees it."""

    name: str
    up: bool
    address: str
    version: str | None
    # True when this state directory's `up` started it (and `down` will stop it).
    managed: bool
    pid: int | None
    # Human words: "started", "already running", "reused", why it is down...
    detail: str
    # True only in the result of the `up` call that started the process.
    started_now: bool = False

    def describe(self) -> str:
        state = "up" if self.up else "down"
        version = self.version or "?"
        return f"{self.name:<6} {state:<5} {self.address:<22} {version:<9} {self.detail}"


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class Component(ABC):
    """A server the stack can reuse, start, wait for and stop."""

    name: str

    def __init__(
        self, paths: StackPaths, startup_timeout_s: float, progress: Progress | None = None
    ) -> None:
        self.paths = paths
        self.startup_timeout_s = startup_timeout_s
        # How long to wait for another process that is starting the same server.
        self.lock_timeout_s = LOCK_TIMEOUT_S + 2 * startup_timeout_s
        self.progress = progress or _quiet

    # -- what each server defines -------------------------------------------------
    @property
    @abstractmethod
    def address(self) -> str:
        """host:port clients use."""

    @abstractmethod
    def ports(self) -> list[int]:
        """Local ports the server binds (all must be free before a start)."""

    @abstractmethod
    def probe(self) -> bool:
        """Whether the server answers a real request now (not just TCP)."""

    @abstractmethod
    def running_version(self) -> str | None:
        """Version of whatever answers at the address, when it can be told."""

    @abstractmethod
    def can_start(self) -> str | None:
        """None if this machine may start the server here, else why not."""

    @abstractmethod
    def prepare(self) -> None:
        """Everything before the first start: tools, downloads, config, formatting."""

    @abstractmethod
    def command(self) -> list[str]:
        """argv of the server process."""

    @abstractmethod
    def expected_version(self) -> str:
        """Version the started server will report (recorded in the pid file)."""

    # -- shared behaviour ---------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.paths.pid_file(self.name)

    @property
    def log_file(self) -> Path:
        return self.paths.log_file(self.name)

    def record(self) -> ProcessRecord | None:
        """Our live process, if any; a stale pid file is removed on sight."""
        rec = process.read_record(self.pid_file)
        if rec is None:
            return None
        if process.is_running(rec):
            return rec
        self.pid_file.unlink(missing_ok=True)
        return None

    def status(self) -> ComponentStatus:
        rec = self.record()
        up = self.probe()
        if rec is not None:
            detail = f"started by loopline (pid {rec.pid})"
            if not up:
                detail += ", not answering"
            return ComponentStatus(self.name, up, self.address, rec.version, True, rec.pid, detail)
        if up:
            return ComponentStatus(
                self.name,
                True,
                self.address,
                self.running_version(),
                False,
                None,
                "reused (not started by this loopline state dir)",
            )
        return ComponentStatus(self.name, False, self.address, None, False, None, "not running")

    def up(self) -> ComponentStatus:
        """Reuse, wait for, or start the server; returns how it ended up running."""
        with locks.ports(self.ports(), self.lock_timeout_s):
            return self._up()

    def _up(self) -> ComponentStatus:
        rec = self.record()
        if rec is not None and rec.address != self.address:
            raise StackError(
                f"{self.name}: this state dir ({self.paths.root}) already runs {self.name} at "
                f"{rec.address} (pid {rec.pid}), not at {self.address} as configured; "
                "stop it with `loopline down` or use another state dir"
            )
        if rec is not None:
            self.progress(f"{self.name}: already running (pid {rec.pid}), waiting until it answers")
            self._wait_ready(rec, started_now=False)
            return ComponentStatus(
                self.name,
                True,
                self.address,
                rec.version,
                True,
                rec.pid,
                f"already running, started by loopline (pid {rec.pid})",
            )
        if self.probe():
            self.progress(f"{self.name}: reusing the server answering at {self.address}")
            return ComponentStatus(
                self.name,
                True,
                self.address,
                self.running_version(),
                False,
                None,
                "reused (not started by this loopline state dir; `down` leaves it)",
            )
        why_not = self.can_start()
        if why_not is not None:
            raise StackError(f"{self.name} at {self.address} does not answer and {why_not}")
        busy = [p for p in self.ports() if port_open("127.0.0.1", p)]
        if busy:
            raise StackError(
                f"{self.name}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use by "
                f"something that is not a working {self.name}; stop it or choose other ports"
            )
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.prepare()
        argv = self.command()
        self.progress(f"{self.name}: starting (log: {self.log_file})")
        started = time.monotonic()
        pid = process.spawn(argv, log_path=self.log_file, cwd=self.paths.root)
        rec = process.record_for(self.name, pid, argv, self.expected_version(), self.address)
        # Recorded before waiting, so even a killed `up` leaves it findable by `down`.
        process.write_record(self.pid_file, rec)
        try:
            self._wait_ready(rec, started_now=True)
        except BaseException:
            # Failed, timed out or interrupted (Ctrl-C): leave no half-started
            # server behind, so the next `up` starts clean.
            process.stop(rec, grace_s=10.0)
            self.pid_file.unlink(missing_ok=True)
            raise
        self.progress(f"{self.name}: up at {self.address} in {time.monotonic() - started:.1f} s")
        return ComponentStatus(
            self.name, True, self.address, rec.version, True, pid, f"started (pid {pid})", True
        )

    def down(self) -> str | None:
        """Stop our process; returns a message, or None when there was nothing of ours."""
        rec = self.record()
        if rec is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        self.progress(f"{self.name}: stopping pid {rec.pid}")
        process.stop(rec)
        self.pid_file.unlink(missing_ok=True)
        return f"{self.name}: stopped (pid {rec.pid})"

    def _wait_ready(self, rec: ProcessRecord, *, started_now: bool) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.05
        while True:
            if process.exited(rec.pid) if started_now else not process.is_running(rec):
                self.pid_file.unlink(missing_ok=True)
                raise StackError(self._failure(f"{self.name} exited during startup"))
            if self.probe():
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise StackError(
            self._failure(
                f"{self.name} did not answer at {self.address} "
                f"within {self.startup_timeout_s:.0f} s"
            )
        )

    def _failure(self, headline: str) -> str:
        last = process.tail(self.log_file, 25)
        where = f"(full log: {self.log_file})"
        if not last:
            return f"{headline}; its log is empty {where}"
        return f"{headline} {where}; last log lines:\n{last}"
