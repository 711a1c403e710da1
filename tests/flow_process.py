"""A dataflow run as a real child process: ``python -m loopline.streams run <flow> ...``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from polling import wait_until


class FlowProcess:
    """The flow's output goes to ``log`` (appended: restarts share one log)."""

    def __init__(self, flow: str, env: dict[str, str], log: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "loopline.streams", "run", flow, *args]
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in wait/kill9
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=self._out, stderr=subprocess.STDOUT
        )

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def wait(self, timeout_s: float = 180.0) -> None:
        """Until the flow exits by itself (``--drain``); it must exit cleanly."""
        try:
            code = self.proc.wait(timeout_s)
        finally:
            self._out.close()
        assert code == 0, f"flow exited {code}:\n{self.tail()}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._out.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._out.close()

    def alive(self) -> None:
        assert self.proc.poll() is None, self.tail()

    def until(
        self,
        check: Callable[[], object],
        what: str,
        timeout_s: float = 90.0,
        interval_s: float = 0.2,
    ) -> None:
        """Wait for ``check()``; the flow dying meanwhile fails the test with its log."""

        def done() -> object:
            self.alive()
            return check()

        wait_until(done, timeout_s, lambda: f"{what}\n{self.tail()}", interval_s=interval_s)
