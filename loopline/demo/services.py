"""Loopline's services as real processes, the way a deployment runs them.

Each service is ``python -m loopline.cli --config <run.toml> run <name>``:
the demo exercises exactly the commands the README documents.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from loopline.contracts.errors import LooplineError


class ServiceError(LooplineError):
    """A demo service failed to start or died."""


@dataclass
class Service:
    """One long-lived Loopline process, its log, and how to tell it is ready."""

    name: str
    argv: list[str]
    log_path: Path
    metrics_url: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loopline.cli", *self.argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the demo only
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the process answers on its metrics endpoint (or just runs)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServiceError(f"{self.name} exited early:\n{self.tail()}")
            if self.metrics_url is None:
                return
            # Not answering yet is the expected state while the process starts.
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.metrics_url, timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise ServiceError(f"{self.name} not ready within {timeout_s:.0f} s:\n{self.tail()}")

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        p = self.process
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                # A saturated machine can take a while to reap even a SIGKILLed group;
                # stopping must go on to the other services and the stack regardless.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(30)
        return p.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
