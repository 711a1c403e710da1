"""File locks that serialise stack changes across processes.

Several processes may act on one state directory at once (two terminals,
parallel pytest sessions or xdist workers). ``flock`` locks are released by
the kernel when a process dies, so a crashed holder never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from loopline.contracts.errors import StackError


def _open(path: Path, mode: int = 0o644) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    # The umask narrows the mode at creation; widen it again where wanted
    # (the port locks are shared by every user of the machine).
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, mode)
    return fd


@contextmanager
def exclusive(path: Path, timeout_s: float, *, mode: int = 0o644) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; StackError if not granted in time."""
    fd = _open(path, mode)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"another loopline process has held {path} for over {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def port_lock_path(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"loopline-port-{port}.lock"


@contextmanager
def ports(numbers: Sequence[int], timeout_s: float) -> Iterator[None]:
    """Hold machine-wide locks on TCP ports while deciding to reuse or start a server.

    Two state directories configured with the same ports (say `loopline up`
    in a terminal and a test session) would otherwise both see a free port
    and both start a server; one of them then dies on "address in use".
    Ports are machine-wide, so the locks live in the system temp directory.
    """
    with ExitStack() as held:
        for port in sorted(set(numbers)):  # one global order: no deadlock
            path = port_lock_path(port)
            try:
                held.enter_context(exclusive(path, timeout_s, mode=0o666))
            except PermissionError:
                # Another user's lock file we may not open: skip this port's
                # lock rather than refuse to work (the race stays unlikely).
                continue
        yield


class UsersLock:
    """A shared lock each user of a stack holds; the last one out can tell.

    ``hold`` takes a shared lock. ``release_and_check_last`` drops it and
    reports whether nobody else holds one (an exclusive lock was granted).
    Both must run under the stack's exclusive lock so joining and leaving
    cannot interleave.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def hold(self) -> None:
        if self._fd is not None:
            return
        fd = _open(self._path)
        # Shared locks never conflict with each other; exclusive holders only
        # exist briefly inside release_and_check_last under the stack lock.
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._fd = fd

    def release_and_check_last(self) -> bool:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        fd = _open(self._path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True
