"""HTTP/1.1 load-generator processes, shaped like :class:`support.clients.Load` for gRPC.

Each process keeps ``concurrency`` keep-alive connections, one request in
flight on each (HTTP/1.1 has no multiplexing), and posts pre-encoded JSON
bodies in a loop for ``seconds``. The client is a few lines of asyncio
streams, so its per-call cost stays small next to the server's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from typing import Any

import numpy as np

from support.clients import CLIENT_TIMEOUT_S


def http_request(port: int, path: str, body: bytes) -> bytes:
    """One POST of a JSON body, ready to write on a keep-alive connection."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request and read its response (status, body); Content-Length framing."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError("response without Content-Length (chunked replies are not read)")
    return status, await reader.readexactly(length)


def _http_process(spec: tuple[int, str, list[bytes], int, float], results: Any) -> None:
    port, path, bodies, concurrency, seconds = spec
    requests = [http_request(port, path, b) for b in bodies]

    async def main() -> None:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
        for reader, writer in conns:  # connect and warm up before the measured window
            await _exchange(reader, writer, requests[0])
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        begin = time.perf_counter()
        end = begin + seconds

        async def worker(k: int) -> None:
            reader, writer = conns[k]
            i = k * 97
            while time.perf_counter() < end:
                t = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(
                        _exchange(reader, writer, requests[i % len(requests)]), CLIENT_TIMEOUT_S
                    )
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                    errors[f"{type(e).__name__}: {e}"[:120]] += 1
                    # The connection is out of step (a reply may still come): a new one.
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    conns[k] = reader, writer
                    continue
                finally:
                    i += 1
                if status != 200:
                    errors[f"HTTP {status}: {body[:100]!r}"] += 1
                    continue
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        window = time.perf_counter() - begin
        for _, w in conns:
            w.close()
        results.put((np.asarray(latencies).tobytes(), dict(errors), window))

    asyncio.run(main())


class HttpLoad:
    """Several HTTP load processes started together; results when they end."""

    def __init__(
        self,
        port: int,
        path: str,
        bodies: list[bytes],
        *,
        processes: int,
        concurrency: int,
        seconds: float,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_http_process,
                args=((port, path, bodies[i::processes], concurrency, seconds), self.results),
            )
            for i in range(processes)
        ]
        self.rate = 0.0

    def start(self) -> HttpLoad:
        for p in self.procs:
            p.start()
        return self

    def finish(self) -> tuple[np.ndarray, Counter[str]]:
        """Latencies (s) and errors of all processes, once each ran out its time."""
        got = [self.results.get(timeout=3600) for _ in self.procs]
        for p in self.procs:
            p.join(30)
        self.rate = sum(len(g[0]) / 8 / g[2] for g in got if g[2] > 0)
        lat = np.concatenate([np.frombuffer(g[0]) for g in got]) if got else np.array([])
        errors: Counter[str] = Counter()
        for g in got:
            errors.update(g[1])
        return lat, errors
