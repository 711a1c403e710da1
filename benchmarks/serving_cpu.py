"""CPU per prediction of the serving handler path in-process, batched and not, with a baseline.

The gRPC layer is left out: this is what serving's own code costs per call
(the request to the response message, one real Redis MGET on the local
stack, the ONNX run, the prediction log's encoding left out), measured as
process CPU time, which the machine's load moves far less than wall time.
Figures are the best of ``--repeats`` passes:

- ``V1Handlers.predict`` of one request (a batch of one);
- ``InferenceCore.predict_many`` of 4 .. 64 concurrent requests, per request:
  what dynamic batching (``serving.batch_max_calls``) costs per call;
- the baseline: the minimal handler of ``serving_latency.py`` (redis-py GET,
  onnxruntime run, a response with the score) on the same model and Redis.

Run: ``python benchmarks/serving_cpu.py [--calls 2000]``; one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import redis
from support.baseline import minimal_handler
from support.bench_run import BenchRun
from support.clients import make_requests
from support.models import TrainedModels

from loopline.config.loader import load_settings
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.registry.directory import DirectoryRegistry
from loopline.serving.grpc_server import InferenceServer
from loopline.v1 import inference_pb2 as pb

BATCHES = (4, 8, 16, 32, 64)


def cpu_us(fn: Callable[[int], object], n: int, repeats: int) -> float:
    """Best process CPU time per call (us) of ``fn(0..n-1)`` over ``repeats`` passes."""
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - t) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models-cache", type=Path, help="reuse trained models (see models.py)")
    args = parser.parse_args()
    run = BenchRun.start()
    try:
        run.write_features()
        registry = DirectoryRegistry(run.work / "registry")
        TrainedModels(run.settings, run.work, args.models_cache).publish(registry, seed=0)
        # No prediction log: its encoding runs on another thread, and Kafka is not the point.
        config = run.server_config(
            registry.root,
            processes=1,
            threads=1,
            overrides={"serving": {"feature_timeout_ms": 1000, "log_predictions": False}},
        )
        server = InferenceServer(load_settings(config), port=0)
        server.manager.sync()
        requests = [pb.PredictRequest.FromString(b) for b in make_requests(2048)]
        v1, core = server.v1, server.core
        inputs = [v1._input(r) for r in requests]
        n = args.calls
        for r in requests[:500]:  # warm: connections, caches, the session's buffers
            v1.predict(r, 1.0)
        single = cpu_us(lambda i: v1.predict(requests[i % 2048], 1.0), n, args.repeats)
        one = cpu_us(lambda i: core.predict(inputs[i % 2048], 1.0), n, args.repeats)
        per_row = {}
        for b in BATCHES:
            per_row[b] = (
                cpu_us(
                    lambda i, b=b: core.predict_many(
                        inputs[(i * b) % 1984 : (i * b) % 1984 + b], 1.0
                    ),
                    max(1, n // b),
                    args.repeats,
                )
                / b
            )
        base = cpu_us(baseline_handler(run, server), n, args.repeats)
        server.store.close()
    finally:
        run.remove()
    print(f"CPU per prediction, in-process (best of {args.repeats} x {n} calls):")
    print(f"  baseline handler (GET + ORT)   {base:7.1f} us")
    print(f"  V1Handlers.predict, 1 call     {single:7.1f} us  (x{single / base:.2f} the baseline)")
    print(f"  InferenceCore.predict, 1 call  {one:7.1f} us  (x{one / base:.2f})")
    for b, us in per_row.items():
        print(f"  predict_many, batch of {b:<3}     {us:7.1f} us  (x{us / base:.2f})")
    result = {
        "baseline_us": round(base, 1),
        "predict_us": round(single, 1),
        "core_predict_us": round(one, 1),
        **{f"batch_{b}_us_per_row": round(us, 1) for b, us in per_row.items()},
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


def baseline_handler(run: BenchRun, server: InferenceServer) -> Callable[[int], object]:
    """``serving_latency.py``'s minimal handler on the served model and Redis."""
    fs = load_project(builtin_example()).feature_set()
    store = redis.Redis(host=run.settings.redis.host, port=run.settings.redis.port)
    handle = minimal_handler(store, server.slot.current.session, run.layout.key_prefix(fs, "card"))
    requests = [pb.PredictRequest.FromString(b) for b in make_requests(2048)]
    return lambda i: handle(requests[i % 2048])


if __name__ == "__main__":
    main()
