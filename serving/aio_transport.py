"""The asyncio transport (``serving.transport = "asyncio"``): grpc.aio on a loop thread.

``Predict`` is a coroutine: its calls are batched on the event loop
(:class:`~loopline.serving.loop_batcher.LoopBatcher`) and scored there,
without handing a batch from thread to thread. Every other RPC (PredictBatch,
the Open Inference Protocol, health, reflection's own servicer aside) keeps
its plain handler, which grpc.aio runs on ``serving.threads`` threads.

:class:`AioServer` gives the aio server the lifecycle the thread-pool server
has (``start``, ``stop(grace).wait()``), so :class:`~loopline.serving.grpc_server.InferenceServer`
runs either the same way; the loop lives on a thread of its own because the
rest of a serving process (model follower, prediction log) is threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

# How long start-up steps on the loop may take before the server gives up.
_START_TIMEOUT_S = 30.0


class AioServer:
    """A ``grpc.aio`` server whose event loop runs on its own thread."""

    def __init__(
        self,
        *,
        threads: int,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        rpc_limit: int,
        options: Sequence[tuple[str, Any]],
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio", daemon=True)
        self._thread.start()

        async def make() -> grpc.aio.Server:
            # Built on the loop: grpc.aio binds a server to the loop it is made on.
            return grpc.aio.server(
                futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
                interceptors=list(interceptors),
                maximum_concurrent_rpcs=rpc_limit,
                options=list(options),
            )

        self.server = self._run(make(), _START_TIMEOUT_S)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on the loop's thread (registering services, binding ports)."""

        async def call() -> T:
            return fn()

        return self._run(call(), _START_TIMEOUT_S)

    def start(self) -> None:
        self._run(self.server.start(), _START_TIMEOUT_S)

    def stop(self, grace: float | None) -> threading.Event:
        """New calls refused at once, running ones get ``grace`` s; then the loop ends.

        Returns a set event (the thread-pool server returns one to ``wait`` on).
        """
        done = threading.Event()
        try:
            self._run(self.server.stop(grace), None)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            if not self._loop.is_running():
                self._loop.close()
            done.set()
        return done

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)
