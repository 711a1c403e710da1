"""Run the server on every core: N processes sharing one port with SO_REUSEPORT.

One Python process uses one core (the GIL), so ``serving.processes`` worker
processes (``run serve --replicas``) each run a full
:class:`~loopline.serving.grpc_server.InferenceServer` (own model session,
Redis connection, Kafka producer) bound to the same port; the kernel
spreads connections across them. This supervisor process holds the port
(bound, not listening, so it takes no connections), serves the one
``/metrics`` endpoint aggregating the workers (Prometheus multiprocess
mode), restarts a worker that dies, and on SIGTERM/SIGINT stops them
gracefully (each: NOT_SERVING, in-flight calls finish, prediction log
flushed). TLS and tokens need nothing here: every worker reads the same
certificate and tokens files, and re-reads them when they change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

from loopline.contracts.errors import ConfigError, LooplineError
from loopline.contracts.settings import Settings
from loopline.featurerepo.loader import model_of

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A worker dying more often than this is not restarted again (a crash loop).
MAX_RESTARTS_PER_MINUTE = 5
READY_TIMEOUT_S = 60.0


def serve(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``); returns an exit code."""
    stop = stop or _signal_event()
    if settings.serving.processes <= 1:
        return _serve_in_process(settings, stop, on_ready)
    return Supervisor(settings).run(stop, on_ready)


def _serve_in_process(
    settings: Settings, stop: threading.Event, on_ready: Callable[[str], None] | None
) -> int:
    from prometheus_client import CollectorRegistry

    from loopline.serving.grpc_server import InferenceServer
    from loopline.serving.metrics import ServingMetrics

    registry = CollectorRegistry()
    server = InferenceServer(settings, metrics=ServingMetrics(registry))
    server.start()
    metrics_port = _start_metrics(settings, registry)
    _announce(on_ready, server.address, 1, metrics_port, settings)
    switched = _wait(stop, server)
    server.stop()
    if switched:
        # One process cannot swap its feature-set version in place: whoever runs it
        # (Kubernetes, systemd, the supervisor of `serving.processes` > 1) starts it again.
        log.warning("exiting so a restart serves the new champion's feature-set version")
        return EXIT_RESTART
    return 0


# Exit code of a serving process that must be restarted on another feature-set version.
EXIT_RESTART = 75


def _wait(stop: threading.Event, server: Any, baton: Any = None) -> bool:
    """Until ``stop`` (False) or a feature-set version switch (True).

    With several workers, a switching worker first takes the ``baton``, which
    the supervisor hands back only once that worker's replacement is ready: the
    workers restart one at a time, however long a start takes, so the port
    always has a worker answering.
    """
    switch = server.version_switch.requested
    while not stop.wait(0.2):
        if not switch.is_set():
            continue
        if baton is None:
            return True
        while not stop.is_set():
            if baton.acquire(timeout=0.2):
                return True
        return False
    return False


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.n = settings.serving.processes
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: dict[int, BaseProcess] = {}
        self._restarts: list[float] = []
        self._ready: Any = self._ctx.Queue()
        self._baton: Any = self._ctx.Semaphore(1)
        # Workers restarting on a new feature-set version whose replacement is not ready yet.
        self._switching: set[int] = set()
        self._metrics_dir = ""

    def run(self, stop: threading.Event, on_ready: Callable[[str], None] | None = None) -> int:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        conf = self.settings.serving
        with contextlib.ExitStack() as cleanup:
            holder = _reserve_port(conf.host, conf.port)
            cleanup.callback(holder.close)
            port = holder.getsockname()[1]
            self.settings = dataclasses.replace(
                self.settings, serving=dataclasses.replace(conf, port=port)
            )
            self._metrics_dir = tempfile.mkdtemp(prefix="loopline-serving-metrics-")
            cleanup.callback(shutil.rmtree, self._metrics_dir, True)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self._metrics_dir)
            metrics_port = _start_metrics(self.settings, registry)
            cleanup.callback(self._stop_all)
            for index in range(self.n):
                self._start(index)
            self._wait_ready()
            _announce(on_ready, f"{conf.host}:{port}", self.n, metrics_port, self.settings)
            while not stop.wait(0.5):
                self._restart_dead()
                self._hand_back_baton()
        return 0

    def _start(self, index: int) -> None:
        # Workers pick multiprocess metrics up from the environment at import;
        # only they get it (the supervisor's own metrics stay in-process).
        with _environ(MULTIPROC_ENV, self._metrics_dir):
            proc = self._ctx.Process(
                target=_worker_main,
                args=(self.settings, index, self._ready, self._baton),
                name=f"loopline-serve-{index}",
                daemon=False,
            )
            proc.start()
        self._workers[index] = proc

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready: set[int] = set()
        while len(ready) < self.n:
            left = deadline - time.monotonic()
            dead = [i for i, p in self._workers.items() if not p.is_alive() and i not in ready]
            if dead or left <= 0:
                raise LooplineError(
                    f"serving worker(s) {dead or sorted(set(self._workers) - ready)} did not "
                    f"start (see their log above)"
                )
            try:
                kind, index, detail = self._ready.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if kind != "ready":
                raise LooplineError(f"serving worker {index} failed to start: {detail}")
            ready.add(index)

    def _restart_dead(self) -> None:
        from prometheus_client import multiprocess

        for index, proc in list(self._workers.items()):
            if proc.is_alive():
                continue
            multiprocess.mark_process_dead(proc.pid, self._metrics_dir)
            if proc.exitcode == EXIT_RESTART:  # asked for: a feature-set version switch
                log.info("serving worker %d restarts on the new feature-set version", index)
                self._switching.add(index)
                self._start(index)
                continue
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < 60] + [now]
            if len(self._restarts) > MAX_RESTARTS_PER_MINUTE:
                raise LooplineError(
                    f"serving workers keep dying ({len(self._restarts)} restarts in a minute)"
                )
            log.error(
                "serving worker %d (pid %s) exited %s; restarting it",
                index,
                proc.pid,
                proc.exitcode,
            )
            self._start(index)

    def _hand_back_baton(self) -> None:
        """Release the switch baton once a restarted worker says it is ready (or failed:
        the crash-loop guard handles it, and the other workers must not wait forever)."""
        while True:
            try:
                _kind, index, _detail = self._ready.get_nowait()
            except queue.Empty:
                return
            if index in self._switching:
                self._switching.discard(index)
                self._baton.release()

    def _stop_all(self) -> None:
        from prometheus_client import multiprocess

        for proc in self._workers.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        grace = self.settings.serving.shutdown_grace_s + 10.0
        deadline = time.monotonic() + grace
        for proc in self._workers.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.error(
                    "serving worker pid %s did not stop in %.0f s; killing it", proc.pid, grace
                )
                proc.kill()
                proc.join(5)
            if proc.pid is not None:
                multiprocess.mark_process_dead(proc.pid, self._metrics_dir)


def _worker_main(settings: Settings, index: int, ready: Any, baton: Any) -> None:
    """A worker process: one InferenceServer on the shared port until SIGTERM/SIGINT."""
    from loopline.serving.grpc_server import InferenceServer

    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s worker{index} %(levelname)s %(name)s: %(message)s"
    )
    stop = _signal_event()
    _stop_when_orphaned(stop, os.getppid())
    try:
        server = InferenceServer(settings, reuse_port=True)
        server.start()
    except Exception as e:
        ready.put(("failed", index, f"{type(e).__name__}: {e}"))
        raise
    ready.put(("ready", index, os.getpid()))
    switched = _wait(stop, server, baton)
    server.stop()
    if switched:  # the supervisor starts this worker again, on the new version
        sys.exit(EXIT_RESTART)


def _stop_when_orphaned(stop: threading.Event, parent: int, every_s: float = 1.0) -> None:
    """Stop (gracefully) when the supervisor is gone: a supervisor killed -9 would
    otherwise leave its workers answering on the port, unsupervised, forever."""

    def watch() -> None:
        while not stop.wait(every_s):
            if os.getppid() != parent:
                log.error("the serving supervisor (pid %d) is gone; stopping", parent)
                stop.set()

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) the serving port with SO_REUSEPORT, so port 0 picks one
    port for all workers and a port taken by something else fails here, clearly."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot bind the serving port {host}:{port}: {e}") from e
    return sock


def _start_metrics(settings: Settings, registry: Any) -> int:
    from prometheus_client import start_http_server

    port = settings.serving.metrics_port
    if port < 0:
        return -1  # metrics endpoint disabled
    server, _thread = start_http_server(port, addr=settings.serving.host, registry=registry)
    return int(server.server_port)


def _announce(
    on_ready: Callable[[str], None] | None,
    address: str,
    processes: int,
    metrics_port: int,
    settings: Settings,
) -> None:
    from loopline.serving.tls import describe

    metrics = (
        f"http://{settings.serving.host}:{metrics_port}/metrics" if metrics_port >= 0 else "off"
    )
    line = (
        f"serving {model_of(settings).name}@{settings.serving.alias} on {address} "
        f"({processes} process{'es' if processes > 1 else ''}, {describe(settings.serving)}); "
        f"metrics {metrics}"
    )
    log.info(line)
    if on_ready is not None:
        on_ready(line)


def _signal_event() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
    return stop


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
