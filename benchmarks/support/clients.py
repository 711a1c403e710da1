"""Predict clients: one sequential client, and load-generator processes (grpc.aio).

Requests are serialized once and sent as raw bytes, so the clients spend their
CPU on calls, not on protobuf; they share the machine's cores with the server.
A client's target is a plaintext port on 127.0.0.1 or, for a secured server,
the client side of ``serving.*`` (``ca_file``, ``token_file``: see
:mod:`loopline.config.grpc`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import time
from collections import Counter
from typing import Any

import grpc
import numpy as np

from loopline.config.grpc import GrpcClient, grpc_client
from loopline.contracts.settings import ServingSettings
from loopline.v1 import inference_pb2 as pb
from support.proc_tree import TreeUsage

# Requests name cards c0..c9999 and merchants m0..m999; BenchRun writes their features.
N_CARDS, N_MERCHANTS = 10_000, 1_000
CLIENT_TIMEOUT_S = 1.0
PREDICT = "/loopline.v1.Inference/Predict"
PREDICT_BATCH = "/loopline.v1.Inference/PredictBatch"
P99_BUDGET_MS = 10.0
# A plaintext port on 127.0.0.1, or a client's settings (port, TLS, token).
Target = int | ServingSettings


def client_of(target: Target) -> GrpcClient:
    return grpc_client(ServingSettings(port=target) if isinstance(target, int) else target)


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


def make_batch_requests(n: int, rows: int, seed: int = 1) -> list[bytes]:
    """Serialized PredictBatchRequests of ``rows`` requests each."""
    singles = [pb.PredictRequest.FromString(b) for b in make_requests(n * rows, seed)]
    return [
        pb.PredictBatchRequest(requests=singles[i * rows : (i + 1) * rows]).SerializeToString()
        for i in range(n)
    ]


def percentiles(values_s: list[float] | np.ndarray) -> dict[str, float]:
    """p50, p99 and p99.9 in ms of latencies in seconds (NaN when there are none)."""
    a = np.asarray(values_s) * 1000.0
    if a.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan")}
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p999": float(p999)}


def sequential_client(
    target: Target, requests: list[bytes], seconds: float, timeout_s: float = CLIENT_TIMEOUT_S
) -> list[float]:
    """One client, one call at a time; returns latencies (s) after a warm-up. A call that
    takes longer than ``timeout_s`` fails the run."""
    client = client_of(target)
    metadata = client.metadata or None
    with client.channel() as channel:
        call = channel.unary_unary(
            PREDICT,
            request_serializer=None,
            response_deserializer=pb.PredictResponse.FromString,
        )
        for i in range(300):
            call(requests[i % len(requests)], timeout=timeout_s, metadata=metadata)
        out: list[float] = []
        end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < end:
            t = time.perf_counter()
            call(requests[i % len(requests)], timeout=timeout_s, metadata=metadata)
            out.append(time.perf_counter() - t)
            i += 1
    return out


def _load_process(spec: tuple[Target, int, float, int, int], stop: Any, results: Any) -> None:
    """A load-generator process: ``concurrency`` calls in flight over 4 connections
    (``Predict``, or ``PredictBatch`` of ``rows`` requests when ``rows`` > 0)."""
    target, concurrency, seconds, seed, rows = spec
    if rows:
        method, response = PREDICT_BATCH, pb.PredictBatchResponse
        requests = make_batch_requests(max(1, 2000 // rows), rows, seed)
    else:
        method, response = PREDICT, pb.PredictResponse
        requests = make_requests(2000, seed)
    client = client_of(target)
    metadata = client.metadata or None

    def version(resp: Any) -> str:
        return resp.results[0].response.model_version if rows else resp.model_version

    async def main() -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
        channels = [client.aio_channel(options=options) for _ in range(4)]
        calls = [
            ch.unary_unary(
                method, request_serializer=None, response_deserializer=response.FromString
            )
            for ch in channels
        ]
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        for call in calls:  # connect and warm up before the measured window
            try:
                await call(requests[0], timeout=10, metadata=metadata)
            except grpc.aio.AioRpcError as e:  # a refusal is a result too, never a crash
                errors[f"{e.code().name}: {e.details()}"[:120]] += 1
        begin = time.perf_counter()
        end = begin + seconds

        async def worker(k: int) -> None:
            call = calls[k % len(calls)]
            i = k * 97
            while time.perf_counter() < end and not stop.is_set():
                t = time.perf_counter()
                try:
                    resp = await call(
                        requests[i % len(requests)], timeout=CLIENT_TIMEOUT_S, metadata=metadata
                    )
                except grpc.aio.AioRpcError as e:
                    errors[f"{e.code().name}: {e.details()}"[:120]] += 1
                    continue
                finally:
                    i += 1
                latencies.append(time.perf_counter() - t)
                versions[version(resp)] += 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        window = time.perf_counter() - begin
        for ch in channels:
            await ch.close()
        results.put((np.asarray(latencies).tobytes(), dict(errors), dict(versions), window))

    asyncio.run(main())


class Load:
    """Several load-generator processes started together; results when they end."""

    def __init__(
        self, target: Target, processes: int, concurrency: int, seconds: float, rows: int = 0
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_load_process,
                args=((target, concurrency, seconds, 10 + i, rows), self.stop, self.results),
            )
            for i in range(processes)
        ]
        self.rate = 0.0

    def start(self) -> Load:
        for p in self.procs:
            p.start()
        return self

    def _result(self) -> Any:
        """One process's result; raises when a process died without one (no hang)."""
        while True:
            try:
                return self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    self.stop.set()
                    raise RuntimeError(
                        f"a load-generator process died (exit codes {dead})"
                    ) from None

    def finish(self, stop: bool = True) -> tuple[np.ndarray, Counter[str], Counter[str]]:
        """Results of all processes (``stop``: end them now, else let them run out)."""
        if stop:
            self.stop.set()
        got = [self._result() for _ in self.procs]
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


# The fixed load CPU per call is read at: (load-generator processes, calls in flight each).
CPU_LOAD = (2, 4)


def server_cpu_per_call(target: Target, server_pids: list[int], seconds: float) -> float:
    """CPU of the server's processes (and their children) per Predict, in us, at the fixed
    load ``CPU_LOAD``: what a call costs the server, which the machine's load moves far
    less than throughput or latency."""
    trees = [TreeUsage(pid) for pid in server_pids]
    before = sum(t.sample() for t in trees)
    load = Load(target, *CPU_LOAD, seconds).start()
    latencies, _, _ = load.finish(stop=False)
    used = sum(t.sample() for t in trees) - before
    us = used / max(len(latencies), 1) * 1e6
    print(f"  server CPU per call at load {CPU_LOAD[0]}x{CPU_LOAD[1]}: {us:.0f} us", flush=True)
    return us


def saturation(
    target: Target, steps: list[tuple[int, int]], seconds: float, rows: int = 0
) -> dict[str, Any]:
    """Throughput per load level (load-generator processes, calls in flight each); the
    best one whose client p99 <= P99_BUDGET_MS without errors. ``rows`` > 0: the calls
    are ``PredictBatch`` of that many requests (``rows_per_s`` counts requests)."""
    out = []
    for procs, conc in steps:
        load = Load(target, procs, conc, seconds, rows).start()
        # Throughput counts the measured window only (process start-up excluded).
        lat, errors, _ = load.finish(stop=False)
        rps = load.rate
        p = percentiles(lat)
        row_rate = rps * max(rows, 1)
        out.append(
            {
                "clients": procs * conc,
                "rps": rps,
                "rows_per_s": row_rate,
                **p,
                "errors": sum(errors.values()),
            }
        )
        per_row = f" ({row_rate:8.0f} rows/s)" if rows else ""
        print(
            f"  load {procs}x{conc:<3} {rps:8.0f} calls/s{per_row}  p50 {p['p50']:6.2f} ms  "
            f"p99 {p['p99']:6.2f} ms  errors {sum(errors.values())}",
            flush=True,
        )
        for e, n in errors.most_common(2):
            print(f"    error x{n}: {e}")
    return best_of(out)


def best_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows, the best rate whose p99 <= P99_BUDGET_MS without errors, the best at all."""
    ok = [r for r in rows if r["p99"] <= P99_BUDGET_MS and r["errors"] == 0]
    best = max(ok, key=lambda r: r["rps"]) if ok else {"rps": 0.0}
    return {"rows": rows, "best": best, "max": max(r["rps"] for r in rows)}
