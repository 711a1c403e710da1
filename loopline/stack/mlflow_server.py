"""An MLflow tracking server for the local stack (``loopline up --mlflow``).

Its state lives under the stack's state directory: ``mlflow/mlflow.db``
(SQLite: experiments, runs, the Model Registry) and ``mlflow/artifacts``
(what runs log, models included), served by the server itself, so clients
need no access to the folder. It listens on 127.0.0.1:``stack.mlflow_port``;
point ``registry.mlflow_tracking_uri`` at :attr:`MlflowServer.url`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import urllib.error
import urllib.request
from importlib import metadata

from loopline.contracts.settings import Settings
from loopline.stack.component import Component, Progress
from loopline.stack.paths import StackPaths
from loopline.stack.ports import free_port

HOST = "127.0.0.1"


class MlflowServer(Component):
    """``mlflow server`` with a SQLite backend and a local artifact root."""

    name = "mlflow"

    def __init__(
        self,
        settings: Settings,
        paths: StackPaths,
        progress: Progress | None = None,
        *,
        port: int | None = None,
    ) -> None:
        super().__init__(paths, settings.stack.startup_timeout_s, progress)
        configured = settings.stack.mlflow_port if port is None else port
        # Port 0: the port of the server this state dir runs, else a free one.
        self.port = configured or self._recorded_port() or free_port(HOST)

    def _recorded_port(self) -> int:
        rec = self.record()
        return 0 if rec is None else int(rec.address.rsplit(":", 1)[1])

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The tracking URI clients use (``registry.mlflow_tracking_uri``)."""
        return f"http://{self.address}"

    def ports(self) -> list[int]:
        return [self.port]

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=2.0) as r:
                return r.read().decode().strip()
        except (urllib.error.URLError, OSError):
            return None

    def probe(self) -> bool:
        return self._get("/health") == "OK"

    def running_version(self) -> str | None:
        return self._get("/version")

    def can_start(self) -> str | None:
        try:
            metadata.version("mlflow")
        except metadata.PackageNotFoundError:
            return "MLflow is not installed: pip install 'loopline[mlflow]'"
        return None

    def prepare(self) -> None:
        (self.paths.root / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        state = self.paths.root / "mlflow"
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{state / 'mlflow.db'}",
            "--artifacts-destination",
            str(state / "artifacts"),
            "--workers",
            "1",
        ]

    def expected_version(self) -> str:
        return metadata.version("mlflow")

    def down(self) -> str | None:
        rec = self.record()
        if rec is not None:
            # `mlflow server` runs its web server as a child: stop its whole session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(rec.pid, signal.SIGTERM)
        return super().down()
