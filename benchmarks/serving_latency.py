"""Predict latency, throughput and hot-swap failures of the serving stack, with a baseline.

Everything runs on loopback against the real local stack (``loopline up``):
Redis holds packed features of 10,000 cards and 1,000 merchants; the model
is a 200-tree x 31-leaf LightGBM that the trainer trained on simulated history
of the fraud example (``benchmarks/support/models.py``), exported to ONNX and
published into a temporary registry; predictions are logged to Kafka (unique topics, deleted
at the end). The server is the real command (``python -m loopline.serving``,
what ``loopline run serve`` runs), ``--processes`` workers sharing the port.

Phases, for the baseline (one process) and the server (one process, then
``--processes``):

1. one client, sequential ``Predict`` calls: client-observed p50/p99/p99.9;
   for the server also its own timing (the ``total`` stage histogram,
   percentiles interpolated within its 25 us buckets);
2. throughput at saturation: load-generator processes (grpc.aio, several
   connections each) at increasing concurrency; the figure is the best
   throughput whose client-observed p99 stays <= 10 ms;
   then, at a fixed load (2 load processes x 4 calls), the server's CPU
   time per call (its processes' user + system time over the calls
   answered; the machine's load moves it far less than throughput);
3. (server, ``--processes``) ``PredictBatch`` of ``--batch-rows`` requests:
   requests (rows) per second at the same p99 bound;
4. (server, ``--processes``) ``--swaps`` hot swaps under load: a new version
   is published and announced on the model-updates topic, and every worker
   must serve it before the next; every failed call counts.

The baseline is the same work in a minimal gRPC handler: one redis-py GET,
an onnxruntime run, a response with the score; the same RPC threads, the
same clients (also at ``--processes`` processes, for context). The ratios
(server / baseline, same run) are what the targets read: throughput per
process >= 1.0x, ``--processes`` 2 >= 1.7x the one-process baseline,
client p99 at one client <= 1.2x. Client and server share the machine's
cores. The server runs with its default dynamic batching
(``serving.batch_max_calls``) unless ``--batch-max-calls`` says otherwise.
Its call limit (``serving.max_concurrent_rpcs``) is raised to
``--max-concurrent-rpcs`` (64) above the deepest load level (32 calls), as the
baseline has none: at the default (twice the RPC threads) the levels at and
above it would count load shedding's fast refusals as errors, and throughput
is what this measures (``benchmarks/chaos.py --scenario overload`` measures
the shedding).

Run: ``python benchmarks/serving_latency.py [--processes 2] [--threads 8]``.
It prints a summary, then one JSON object on the last line.

``--secure`` measures the cost of TLS + a bearer token instead: phases 1 and 2
against the server plaintext, then against the same server with TLS and
tokens on, with the ratios (``support/secure.py``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
from support.baseline import minimal_handler
from support.bench_run import BenchRun
from support.clients import (
    CPU_LOAD,
    N_CARDS,
    N_MERCHANTS,
    Load,
    make_requests,
    percentiles,
    saturation,
    sequential_client,
    server_cpu_per_call,
)
from support.models import N_TREES, TrainedModels, announce_champion, champion_announcer
from support.secure import measure_security, security_summary
from support.server import (
    histogram_percentiles,
    scrape,
    server_parser,
    start_server,
    stop_server,
    wait_port,
)

from loopline.contracts.settings import ServingSettings
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.registry.directory import DirectoryRegistry
from loopline.stack.ports import free_port

SWAPS = 20
# Load levels of the throughput phase: (load-generator processes, calls in flight each).
STEPS = [(1, 1), (1, 2), (2, 2), (2, 4), (2, 8), (2, 16)]
# ... and of the PredictBatch phase.
BATCH_STEPS = [(1, 1), (1, 2), (2, 2)]


# -- the server -----------------------------------------------------------------------
def measure_server(
    run: BenchRun,
    registry: DirectoryRegistry,
    models: TrainedModels,
    requests: list[bytes],
    args: argparse.Namespace,
    *,
    processes: int,
) -> dict[str, Any]:
    """The real server: one client (client and server timing), saturation; with
    ``--processes`` workers also PredictBatch and the hot swaps."""
    serving: dict[str, Any] = {"max_concurrent_rpcs": args.max_concurrent_rpcs}
    if args.batch_max_calls is not None:
        serving["batch_max_calls"] = args.batch_max_calls
    if args.batch_max_wait_us is not None:
        serving["batch_max_wait_us"] = args.batch_max_wait_us
    config = run.server_config(
        registry.root, processes=processes, threads=args.threads, overrides={"serving": serving}
    )
    full = processes == args.processes
    proc, port, metrics_port, _lines = start_server(config)
    try:
        print(f"server: {processes} processes x {args.threads} threads on :{port} {serving}")
        before = scrape(metrics_port)
        seq = sequential_client(port, requests, args.latency_seconds)
        after = scrape(metrics_port)
        client = percentiles(seq)
        server_side = histogram_percentiles(before["buckets"], after["buckets"])
        print(
            f"  1 client: {len(seq)} calls; client p50 {client['p50']:.3f} ms "
            f"p99 {client['p99']:.3f} ms p99.9 {client['p999']:.3f} ms; server p50 "
            f"{server_side['p50']:.3f} ms p99 {server_side['p99']:.3f} ms "
            f"p99.9 {server_side['p999']:.3f} ms",
            flush=True,
        )
        for stage in ("feature_fetch", "inference"):
            q = histogram_percentiles(
                before["stages"].get(stage, {}), after["stages"].get(stage, {})
            )
            print(f"    stage {stage:<13} p50 {q['p50']:.3f} ms  p99 {q['p99']:.3f} ms")
        sat = saturation(port, STEPS, args.seconds)
        cpu_us = server_cpu_per_call(port, [proc.pid], args.seconds)
        batch = swap = None
        if full:
            print(f"  PredictBatch of {args.batch_rows}:")
            batch = saturation(port, BATCH_STEPS, args.seconds, rows=args.batch_rows)
            if args.swaps:
                swap = hot_swaps(
                    run, registry, models, port=port, metrics_port=metrics_port, args=args
                )
    finally:
        stop_server(proc)
    return {
        "client": client,
        "server": server_side,
        "sat": sat,
        "cpu_us": cpu_us,
        "batch": batch,
        "swap": swap,
    }


def hot_swaps(
    run: BenchRun,
    registry: DirectoryRegistry,
    models: TrainedModels,
    *,
    port: int,
    metrics_port: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Publish and announce ``--swaps`` versions under load; every worker must load each."""
    announcer = champion_announcer(run.settings)
    load = Load(port, 2, 4, seconds=3600).start()
    times = []
    done = 0
    try:
        time.sleep(1.0)
        loaded = scrape(metrics_port)["swaps"]["loaded"]
        for i in range(args.swaps):
            t0 = time.perf_counter()
            mv = models.publish(registry, seed=1 + i % 3)
            announce_champion(announcer, mv)
            target = loaded + args.processes
            deadline = time.monotonic() + 30
            while scrape(metrics_port)["swaps"]["loaded"] < target:
                if time.monotonic() > deadline:
                    raise SystemExit(f"swap {i + 1}: v{mv.manifest.version} not loaded in 30 s")
                time.sleep(0.02)
            loaded = target
            times.append(time.perf_counter() - t0)
            done += 1
            time.sleep(0.2)  # some calls on the new version before the next swap
    finally:
        lat, errors, versions = load.finish()
        announcer.close()
    for e, n in errors.most_common(5):
        print(f"  swap-phase error x{n}: {e}")
    return {
        "done": done,
        "calls": len(lat) + sum(errors.values()),
        "failures": sum(errors.values()),
        "p99": percentiles(lat)["p99"],
        "versions": len(versions),
        "swap_p50_s": float(np.median(times)) if times else float("nan"),
    }


# -- the baseline ---------------------------------------------------------------------
def _baseline_worker(port: int, threads: int, redis_port: int, prefix: str, model: str) -> None:
    """The minimal handler: redis GET, onnxruntime run, score. Nothing else."""
    from concurrent import futures

    import grpc
    import onnxruntime as ort
    import redis

    from loopline.serving.model import session_options
    from loopline.v1 import inference_pb2_grpc as pb_grpc

    session = ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
    handle = minimal_handler(redis.Redis(port=redis_port), session, prefix)

    class Baseline(pb_grpc.InferenceServicer):
        def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
            return handle(request)

    server = grpc.server(futures.ThreadPoolExecutor(threads), options=[("grpc.so_reuseport", 1)])
    pb_grpc.add_InferenceServicer_to_server(Baseline(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


def measure_baseline(
    run: BenchRun,
    model_path: str,
    requests: list[bytes],
    args: argparse.Namespace,
    processes: int,
) -> dict[str, Any]:
    """The same work in the minimal handler: one client, saturation."""
    fs = load_project(builtin_example()).feature_set()
    ctx = multiprocessing.get_context("spawn")
    bport = free_port()
    prefix = run.layout.key_prefix(fs, "card")
    worker_args = (bport, args.threads, run.settings.redis.port, prefix, model_path)
    workers = [ctx.Process(target=_baseline_worker, args=worker_args) for _ in range(processes)]
    for w in workers:
        w.start()
    try:
        wait_port(bport)
        print(f"baseline: {processes} processes x {args.threads} threads on :{bport}")
        bseq = sequential_client(bport, requests, args.latency_seconds)
        bclient = percentiles(bseq)
        print(
            f"  1 client: client p50 {bclient['p50']:.3f} ms p99 {bclient['p99']:.3f} ms "
            f"p99.9 {bclient['p999']:.3f} ms",
            flush=True,
        )
        bsat = saturation(bport, STEPS, args.seconds)
        bcpu_us = server_cpu_per_call(bport, [w.pid for w in workers if w.pid], args.seconds)
    finally:
        for w in workers:
            if w.pid:
                os.kill(w.pid, signal.SIGTERM)
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    return {"client": bclient, "sat": bsat, "cpu_us": bcpu_us}


# -- the run --------------------------------------------------------------------------
def main() -> None:
    parser = server_parser(__doc__)
    # Batching needs calls in flight: the server's default RPC threads, for both.
    parser.set_defaults(threads=ServingSettings().threads)
    parser.add_argument("--seconds", type=float, default=4.0, help="per load level")
    parser.add_argument("--latency-seconds", type=float, default=8.0, help="1-client phase")
    parser.add_argument("--swaps", type=int, default=SWAPS)
    parser.add_argument(
        "--models-cache",
        type=Path,
        help="keep the trained models in this folder and reuse them in the next run",
    )
    parser.add_argument("--batch-rows", type=int, default=64, help="requests per PredictBatch")
    parser.add_argument("--batch-max-calls", type=int, help="serving.batch_max_calls")
    parser.add_argument("--batch-max-wait-us", type=float, help="serving.batch_max_wait_us")
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=64,
        help="serving.max_concurrent_rpcs (0: the server's default, twice its RPC threads)",
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="instead: the server plaintext, then with TLS + a bearer token (support/secure.py)",
    )
    args = parser.parse_args()

    t_start = time.perf_counter()
    run = BenchRun.start()
    try:
        print(
            f"setup: {N_CARDS} cards and {N_MERCHANTS} merchants in Redis, "
            f"a {N_TREES}-tree model in a temporary registry",
            flush=True,
        )
        run.write_features()
        registry = DirectoryRegistry(run.work / "registry")
        models = TrainedModels(run.settings, run.work, args.models_cache)
        first = models.publish(registry, seed=0)
        requests = make_requests(5000)
        if args.secure:
            secure = measure_security(run, registry.root, requests, args, STEPS)
            print(json.dumps(security_summary(secure)))
            return
        for seed in (1, 2, 3)[: args.swaps]:  # trained now, so swaps only publish
            models.trained(seed)
        model = str(first.model_path)
        # Alternated, so a change in the machine's load hits both sides alike.
        baseline = {1: measure_baseline(run, model, requests, args, 1)}
        server = {1: measure_server(run, registry, models, requests, args, processes=1)}
        if args.processes > 1:
            server[args.processes] = measure_server(
                run, registry, models, requests, args, processes=args.processes
            )
            baseline[args.processes] = measure_baseline(run, model, requests, args, args.processes)
    finally:
        run.remove()
    print_summary(server, baseline, args, time.perf_counter() - t_start)


def print_summary(
    server: dict[int, dict[str, Any]],
    baseline: dict[int, dict[str, Any]],
    args: argparse.Namespace,
    took_s: float,
) -> None:
    n = args.processes
    one, full, base = server[1], server[n], baseline[1]
    rate = {k: v["sat"]["best"]["rps"] for k, v in server.items()}
    brate = {k: v["sat"]["best"]["rps"] for k, v in baseline.items()}
    batch, swap = full["batch"], full["swap"]
    result: dict[str, Any] = {
        "server_p50_ms": round(one["server"]["p50"], 4),
        "server_p99_ms": round(one["server"]["p99"], 4),
        "client_p50_ms": round(one["client"]["p50"], 4),
        "client_p99_ms": round(one["client"]["p99"], 4),
        "baseline_client_p50_ms": round(base["client"]["p50"], 4),
        "baseline_client_p99_ms": round(base["client"]["p99"], 4),
        "client_p99_ratio": round(one["client"]["p99"] / base["client"]["p99"], 3),
        "throughput_rps_1": round(rate[1], 1),
        "baseline_throughput_rps_1": round(brate[1], 1),
        "throughput_ratio_1": round(rate[1] / brate[1], 3) if brate[1] else None,
        f"throughput_rps_{n}": round(rate[n], 1),
        f"baseline_throughput_rps_{n}": round(brate[n], 1),
        f"throughput_ratio_{n}_vs_baseline_1": round(rate[n] / brate[1], 3) if brate[1] else None,
        f"throughput_ratio_{n}_vs_baseline_{n}": round(rate[n] / brate[n], 3) if brate[n] else None,
        "cpu_us_per_call_1": round(one["cpu_us"], 1),
        "baseline_cpu_us_per_call_1": round(base["cpu_us"], 1),
        "cpu_ratio_1": round(one["cpu_us"] / base["cpu_us"], 3) if base["cpu_us"] else None,
        "batch_rows": args.batch_rows,
        "batch_rows_per_s": round(batch["best"].get("rows_per_s", 0.0), 1),
        "max_rps_1": round(server[1]["sat"]["max"], 1),
        "baseline_max_rps_1": round(base["sat"]["max"], 1),
        # At any p99: what is left to compare when no level keeps p99 <= 10 ms (a busy machine).
        "max_ratio_1": round(server[1]["sat"]["max"] / base["sat"]["max"], 3),
        f"max_ratio_{n}_vs_baseline_1": round(full["sat"]["max"] / base["sat"]["max"], 3),
        "batch_max_rows_per_s": round(max(r["rows_per_s"] for r in batch["rows"]), 1),
        "swap_failures": swap["failures"] if swap else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print()
    print(f"summary ({took_s:.0f} s, {os.cpu_count()} cores shared by clients and servers):")
    print(
        f"  Predict, 1 client      server p50 {result['server_p50_ms']:.3f} ms  p99 "
        f"{result['server_p99_ms']:.3f} ms   client p50 {result['client_p50_ms']:.3f} ms  "
        f"p99 {result['client_p99_ms']:.3f} ms"
    )
    print(
        f"  baseline, 1 client     client p50 {result['baseline_client_p50_ms']:.3f} ms  p99 "
        f"{result['baseline_client_p99_ms']:.3f} ms   (client p99 ratio "
        f"{result['client_p99_ratio']:.2f}; target <= 1.2)"
    )
    for k in sorted(rate):
        print(
            f"  throughput (p99<=10ms) {k} process(es): server {rate[k]:.0f}/s   baseline "
            f"{brate[k]:.0f}/s   (at any p99: {server[k]['sat']['max']:.0f}/s vs "
            f"{baseline[k]['sat']['max']:.0f}/s)"
        )
    print(
        f"  ratios                 1 process {result['throughput_ratio_1']} (target >= 1.0); "
        f"{n} processes / baseline 1 process "
        f"{result[f'throughput_ratio_{n}_vs_baseline_1']} (target >= 1.7); "
        f"/ baseline {n} processes {result[f'throughput_ratio_{n}_vs_baseline_{n}']}"
    )
    print(
        f"  server CPU per call    1 process {result['cpu_us_per_call_1']:.0f} us vs baseline "
        f"{result['baseline_cpu_us_per_call_1']:.0f} us (x{result['cpu_ratio_1']}; at load "
        f"{CPU_LOAD[0]}x{CPU_LOAD[1]})"
    )
    print(
        f"  at any p99             1 process {result['max_ratio_1']}; {n} processes / baseline "
        f"1 process {result[f'max_ratio_{n}_vs_baseline_1']}; PredictBatch "
        f"{result['batch_max_rows_per_s']:.0f} rows/s"
    )
    print(
        f"  PredictBatch of {args.batch_rows:<5} {result['batch_rows_per_s']:.0f} rows/s at "
        f"p99 <= 10 ms ({n} processes; x{result['batch_rows_per_s'] / max(rate[n], 1):.1f} "
        f"the Predict rate)"
    )
    if swap:
        print(
            f"  hot swaps              {swap['done']}/{args.swaps} swaps under load, "
            f"{swap['calls']} calls, {swap['failures']} failed, load p99 {swap['p99']:.2f} ms, "
            f"swap time p50 {swap['swap_p50_s'] * 1000:.0f} ms"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
