"""Predict clients: one sequential client, and load-generator processes (grpc.aio).

Requests are serialized once and sent as raw bytes, so the clients spend their
CPU on calls, not on protobuf; they share the machine's cores with the server.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections import Counter
from typing import Any

import grpc
import numpy as np

from loopline.v1 import inference_pb2 as pb

# Requests name cards c0..c9999 and merchants m0..m999; BenchRun writes their features.
N_CARDS, N_MERCHANTS = 10_000, 1_000
CLIENT_TIMEOUT_S = 1.0
PREDICT = "/loopline.v1.Inference/Predict"


def make_requests(n: int, seed: int = 1) -> list[bytes]:
    """Serialized PredictRequests over random known entities (sent as-is by clients)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        req = pb.PredictRequest(
            entities={
                "card_id": f"c{rng.randrange(N_CARDS)}",
                "merchant_id": f"m{rng.randrange(N_MERCHANTS)}",
            },
            fields={"amount": round(rng.uniform(1, 500), 2)},
        )
        out.append(req.SerializeToString())
    return out


def percentiles(values_s: list[float] | np.ndarray) -> dict[str, float]:
    """p50, p99 and p99.9 in ms of latencies in seconds (NaN when there are none)."""
    a = np.asarray(values_s) * 1000.0
    if a.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan")}
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p999": float(p999)}


def sequential_client(port: int, requests: list[bytes], seconds: float) -> list[float]:
    """One client, one call at a time; returns latencies (s) after a warm-up."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            PREDICT,
            request_serializer=None,
            response_deserializer=pb.PredictResponse.FromString,
        )
        for i in range(300):
            call(requests[i % len(requests)], timeout=CLIENT_TIMEOUT_S)
        out: list[float] = []
        end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < end:
            t = time.perf_counter()
            call(requests[i % len(requests)], timeout=CLIENT_TIMEOUT_S)
            out.append(time.perf_counter() - t)
            i += 1
    return out


def _load_process(spec: tuple[int, int, float, int], stop: Any, results: Any) -> None:
    """A load-generator process: ``concurrency`` calls in flight over 4 connections."""
    port, concurrency, seconds, seed = spec
    requests = make_requests(2000, seed)

    async def main() -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(4)
        ]
        calls = [
            ch.unary_unary(
                PREDICT,
                request_serializer=None,
                response_deserializer=pb.PredictResponse.FromString,
            )
            for ch in channels
        ]
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        for call in calls:  # connect and warm up before the measured window
            await call(requests[0], timeout=10)
        begin = time.perf_counter()
        end = begin + seconds

        async def worker(k: int) -> None:
            call = calls[k % len(calls)]
            i = k * 97
            while time.perf_counter() < end and not stop.is_set():
                t = time.perf_counter()
                try:
                    resp = await call(requests[i % len(requests)], timeout=CLIENT_TIMEOUT_S)
                except grpc.aio.AioRpcError as e:
                    errors[f"{e.code().name}: {e.details()}"[:120]] += 1
                    continue
                finally:
                    i += 1
                latencies.append(time.perf_counter() - t)
                versions[resp.model_version] += 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        window = time.perf_counter() - begin
        for ch in channels:
            await ch.close()
        results.put((np.asarray(latencies).tobytes(), dict(errors), dict(versions), window))

    asyncio.run(main())


class Load:
    """Several load-generator processes started together; results when they end."""

    def __init__(self, port: int, processes: int, concurrency: int, seconds: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_load_process,
                args=((port, concurrency, seconds, 10 + i), self.stop, self.results),
            )
            for i in range(processes)
        ]
        self.rate = 0.0

    def start(self) -> Load:
        for p in self.procs:
            p.start()
        return self

    def finish(self, stop: bool = True) -> tuple[np.ndarray, Counter[str], Counter[str]]:
        """Results of all processes (``stop``: end them now, else let them run out)."""
        if stop:
            self.stop.set()
        got = [self.results.get(timeout=3600) for _ in self.procs]
        for p in self.procs:
            p.join(30)
        # Calls per second: each process over its own measured window (8 bytes per latency).
        self.rate = sum(len(g[0]) / 8 / g[3] for g in got if g[3] > 0)
        lat = np.concatenate([np.frombuffer(g[0]) for g in got]) if got else np.array([])
        errors: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        for g in got:
            errors.update(g[1])
            versions.update(g[2])
        return lat, errors, versions
