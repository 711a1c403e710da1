"""Loopline next to Feast: the same features in the same Redis, the same model, one run.

The feature set is the fraud example's (``examples/fraud``), not a synthetic
one: it is what Loopline's serving benchmarks already use, and with it the
model the trainer trains for them (``support/models.py``: 200 trees x 31
leaves, exported to ONNX) scores requests on both sides, so the two can be
checked against each other. Per request: a card (16 stored values; 10,000
cards) and a merchant (3 values; 1,000 merchants); the model reads 17 of the
19 stored values, the request's amount and 3 request-time transforms, 20
inputs in all. The values come from ``support/bench_run.feature_rows``:
Loopline gets them packed, as its features flow writes them; Feast gets them
as two feature views (Float64) materialized from Parquet files by
``feast materialize`` into the same Redis server under a project of its own
(``loopline_peer_<tag>``, its keys deleted at the end, with a 1-hour TTL as a
safety net). Before timing, 50 requests are scored on both sides and the
values and scores must agree.

Feast runs in its own venv (its Redis extra pins a redis-py and a pandas that
Loopline cannot take): built on first run from the pinned
``benchmarks/peer/requirements-feast.txt``; ``benchmarks/peer/feast_worker.py``
runs Feast's side in that venv and answers over a pipe.

(a) one caller, one request at a time, in-process: Feast's
    ``get_online_features`` (the 17 features, both entities, ``to_dict``) vs
    Loopline's serving fetch (request check, one MGET, decode, the model's
    vector: ``serving/online_features.py``);
(b) features + model, one caller: Feast's retrieval, the vector and an
    onnxruntime run in the caller vs Loopline's ``Predict`` over gRPC on
    loopback to the real server (``python -m loopline.serving``, as
    ``serving_latency.py`` starts it), which also logs every prediction to Kafka;
(c) under load: Feast's feature server (``feast serve``, HTTP, retrieval only)
    vs Loopline's ``Predict`` (features + model + logging), the same number of
    worker processes, concurrent clients and seconds. ``feast serve`` runs
    with ``--no-access-log`` and ``--max-requests 0``: its default recycles a
    worker every 1,000 requests, which a deployment under load would turn off.

Rounds alternate between the two sides, so the machine's load drifts over both.
The goal (issue 18): Loopline's whole Predict at or below Feast's retrieval alone.

Run: ``python benchmarks/peer_feast.py [--seconds 4] [--rounds 3] [--levels 2x2,2x8]``.
It prints a summary, then one JSON object on the last line.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from support.bench_run import BenchRun, feature_rows
from support.clients import Load, make_requests, percentiles, sequential_client
from support.feast_peer import FeastWorker, ensure_venv, feast_refs, vector_spec
from support.http_load import HttpLoad
from support.models import TrainedModels
from support.server import (
    histogram_percentiles,
    scrape,
    server_parser,
    start_server,
    stop_server,
    wait_port,
)

from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.registry.directory import DirectoryRegistry
from loopline.serving.feature_store import RedisFeatureStore
from loopline.serving.features import LookupPlan
from loopline.serving.metrics import ServingMetrics
from loopline.serving.online_features import OnlineFeatures
from loopline.serving.requests import PredictInput, RequestCheck
from loopline.stack.ports import free_port
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc

KEY_FIELDS = {"card": "card_id", "merchant": "merchant_id"}
PARITY_N = 50


def bench_requests(n: int, seed: int = 1) -> list[list[Any]]:
    """[card id, merchant id, amount] over known entities (as ``make_requests`` draws them)."""
    rng = random.Random(seed)
    return [
        [f"c{rng.randrange(10_000)}", f"m{rng.randrange(1_000)}", round(rng.uniform(1, 500), 2)]
        for _ in range(n)
    ]


def feast_rows(fs: FeatureSet, rows: dict[str, list[tuple[str, list[float]]]]) -> dict[str, Any]:
    """The feature values as the Feast worker writes them to Parquet: per view ids, names,
    values."""
    return {
        view: {
            "ids": [i for i, _ in entries],
            "names": list(fs.view(view).names),
            "values": [v for _, v in entries],
        }
        for view, entries in rows.items()
    }


def loopline_fetch(run: BenchRun, fs: FeatureSet, reqs: list[list[Any]], seconds: float) -> list:
    """Loopline's serving fetch in-process, one request at a time: the latencies (s)."""
    conf = run.settings.serving
    plan = LookupPlan(fs, run.tag)
    store = RedisFeatureStore.from_settings(run.settings.redis)
    features = OnlineFeatures(conf, fs, plan, store, ServingMetrics(CollectorRegistry()))
    check = RequestCheck(plan, conf.max_entity_id_length)

    def call(req: list[Any]) -> bool:
        inp = PredictInput(
            entities={"card_id": req[0], "merchant_id": req[1]}, fields={"amount": req[2]}
        )
        ids = check(inp)
        t = inp.time_s()
        lookups = features.lookup(features.keys(ids), None, (t,))
        return features.assemble(inp, lookups, t)[2]  # degraded?

    if any(call(r) for r in reqs[:200]):  # also the warm-up
        raise SystemExit("Loopline's fetch answered degraded values: are the features in Redis?")
    out: list[float] = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        call(reqs[i % len(reqs)])
        out.append(time.perf_counter() - t0)
        i += 1
    store.close()
    return out


def check_parity(
    port: int, feast: FeastWorker, fs: FeatureSet, rows: dict[str, Any], reqs: list[list[Any]]
) -> dict[str, float]:
    """Both sides score the same requests at the same event time: values and scores agree."""
    import grpc

    t_ms = int(time.time() * 1000)
    sample = [[*r, t_ms / 1000.0] for r in reqs[:PARITY_N]]
    answers = feast.call("parity", requests=sample)["rows"]
    expected = {(v, i): vals for v, entries in rows.items() for i, vals in entries}
    value_diff = score_diff = 0.0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        for req, got in zip(sample, answers, strict=True):
            for view, entity_id in (("card", req[0]), ("merchant", req[1])):
                for name, want in zip(
                    fs.view(view).names, expected[(view, entity_id)], strict=True
                ):
                    have = got["values"].get(f"{view}__{name}")
                    if have is not None:  # only the features the model reads are fetched
                        value_diff = max(value_diff, abs(have - want))
            resp = stub.Predict(
                pb.PredictRequest(
                    entities={"card_id": req[0], "merchant_id": req[1]},
                    fields={"amount": req[2]},
                    event_time_ms=t_ms,
                ),
                timeout=5,
            )
            score_diff = max(score_diff, abs(resp.score - got["score"]))
    if value_diff > 0 or score_diff > 1e-5:
        raise SystemExit(
            f"Feast and Loopline disagree: values by {value_diff}, scores by {score_diff}"
        )
    return {"value_max_diff": value_diff, "score_max_diff": score_diff}


def start_feast_server(python: str, repo: str, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    feast_cli = os.path.join(os.path.dirname(python), "feast")
    proc = subprocess.Popen(
        [
            feast_cli,
            "-c",
            repo,
            "serve",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--no-access-log",
            "-w",
            str(workers),
            "--max-requests",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(repo, "serve.log"), "w"),  # noqa: SIM115
    )
    wait_port(port, timeout_s=120)
    return proc, port


def stats(latencies: list[float] | np.ndarray, seconds: float) -> dict[str, float]:
    p = percentiles(latencies)
    return {"p50": p["p50"], "p99": p["p99"], "rps": len(latencies) / seconds}


def main() -> None:
    parser = server_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a), (b)")
    parser.add_argument("--load-seconds", type=float, default=8.0, help="per level in (c)")
    parser.add_argument("--levels", default="2x2,2x8", help="(c): processes x calls in flight")
    args = parser.parse_args()
    levels = [tuple(int(x) for x in lv.split("x")) for lv in args.levels.split(",")]

    t_start = time.perf_counter()
    python = ensure_venv()
    run = BenchRun.start()
    project = f"loopline_peer_{run.tag}"
    feast = None
    server = feast_server = None
    result: dict[str, Any] = {}
    try:
        fs = load_project(builtin_example()).feature_set()
        now = time.time()
        rows = feature_rows(fs, now)
        run.write_features()
        registry = DirectoryRegistry(run.work / "registry")
        print("setup: training the model (support/models.py) ...", flush=True)
        mv = TrainedModels(run.settings, run.work).publish(registry, seed=0)
        spec = vector_spec(fs, mv.manifest.feature_names)
        reqs = bench_requests(5000)
        feast = FeastWorker(python, run.work / "feast-worker.log")
        t0 = time.perf_counter()
        feast.call(
            "setup",
            dir=str(run.work / "feast"),
            project=project,
            redis=f"{run.settings.redis.host}:{run.settings.redis.port}",
            rows=feast_rows(fs, rows),
            now=now,
            key_fields=KEY_FIELDS,
            features=feast_refs(spec),
            spec=spec,
            requests=reqs,
            model={
                "path": str(mv.model_path),
                "input": mv.manifest.input_name,
                "output": mv.manifest.probability_output,
            },
        )
        print(
            f"setup: Feast apply + materialize of {sum(len(r) for r in rows.values())} "
            f"entities in {time.perf_counter() - t0:.1f} s (project {project})",
            flush=True,
        )
        config = run.server_config(registry.root, processes=args.processes, threads=args.threads)
        server, port, metrics_port, _ = start_server(config)
        result["parity"] = check_parity(port, feast, fs, rows, reqs)
        print(f"parity: {PARITY_N} requests, values and scores agree ({result['parity']})")

        lat: dict[str, list[float]] = {k: [] for k in ("a_ll", "a_feast", "b_ll", "b_feast")}
        grpc_reqs = make_requests(5000)
        before = scrape(metrics_port)
        for r in range(args.rounds):
            lat["a_ll"] += loopline_fetch(run, fs, reqs, args.seconds)
            lat["a_feast"] += feast.call("fetch", seconds=args.seconds)["latencies"]
            lat["b_ll"] += sequential_client(port, grpc_reqs, args.seconds)
            lat["b_feast"] += feast.call("predict", seconds=args.seconds)["latencies"]
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
        server_side = histogram_percentiles(before["buckets"], scrape(metrics_port)["buckets"])
        total_s = args.seconds * args.rounds
        for k, v in lat.items():
            result[k] = stats(v, total_s)
        result["b_ll_server"] = {"p50": server_side["p50"], "p99": server_side["p99"]}

        feast_server, fport = start_feast_server(
            str(python), str(run.work / "feast"), args.processes
        )
        body = {"features": feast_refs(spec), "full_feature_names": True}
        bodies = [
            json.dumps({**body, "entities": {"card_id": [r[0]], "merchant_id": [r[1]]}}).encode()
            for r in reqs
        ]
        for procs, conc in levels:
            n = procs * conc
            load = Load(port, procs, conc, args.load_seconds).start()
            ll_lat, ll_err, _ = load.finish(stop=False)
            hload = HttpLoad(
                fport,
                "/get-online-features",
                bodies,
                processes=procs,
                concurrency=conc,
                seconds=args.load_seconds,
            ).start()
            f_lat, f_err = hload.finish()
            result[f"c{n}_ll"] = {
                **stats(ll_lat, 1.0),
                "rps": load.rate,
                "errors": sum(ll_err.values()),
            }
            result[f"c{n}_feast"] = {
                **stats(f_lat, 1.0),
                "rps": hload.rate,
                "errors": sum(f_err.values()),
            }
            for e, k in (ll_err + f_err).most_common(3):
                print(f"    error x{k}: {e}")
            print(f"  (c) {n} clients done", flush=True)
    finally:
        if feast_server is not None:
            feast_server.send_signal(signal.SIGTERM)
            feast_server.wait(30)
        if server is not None:
            stop_server(server)
        if feast is not None:
            try:
                feast.call("teardown")
            finally:
                feast.close()
                # Feast's teardown should leave none; any left are deleted and counted.
                result["feast_keys_left"] = cleanup(run, project)
        run.remove()
    print_summary(result, levels, time.perf_counter() - t_start)


def cleanup(run: BenchRun, project: str) -> int:
    """Delete any key of the Feast project that its teardown left (its keys end with it)."""
    keys = list(run.store.scan_iter(match=f"*{project}", count=5000))
    if keys:
        run.store.delete(*keys)
    return len(keys)


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def print_summary(r: dict[str, Any], levels: list[tuple[int, ...]], took_s: float) -> None:
    def line(label: str, d: dict[str, float]) -> str:
        return f"    {label:<44} p50 {d['p50']:7.3f} ms  p99 {d['p99']:7.3f} ms  {d['rps']:8.0f}/s"

    print(
        f"\nsummary ({took_s:.0f} s, load average {os.getloadavg()[0]:.1f}, "
        f"{os.cpu_count()} cores shared by clients and servers):"
    )
    print("  (a) features of one request, in-process, one caller")
    print(line("Feast get_online_features", r["a_feast"]))
    print(line("Loopline serving fetch (MGET + vector)", r["a_ll"]))
    print("  (b) features + model, one caller")
    print(line("Feast retrieval + ORT in the caller", r["b_feast"]))
    print(line("Loopline Predict over gRPC (+ Kafka log)", r["b_ll"]))
    print(
        f"    (Loopline server-side p50 {r['b_ll_server']['p50']:.3f} ms, "
        f"p99 {r['b_ll_server']['p99']:.3f} ms)"
    )
    out: dict[str, Any] = {
        "a_feast_over_loopline_p50": ratio(r["a_feast"]["p50"], r["a_ll"]["p50"]),
        "a_feast_over_loopline_p99": ratio(r["a_feast"]["p99"], r["a_ll"]["p99"]),
        "b_feast_over_loopline_p50": ratio(r["b_feast"]["p50"], r["b_ll"]["p50"]),
        "b_feast_over_loopline_p99": ratio(r["b_feast"]["p99"], r["b_ll"]["p99"]),
    }
    for procs, conc in levels:
        n = procs * conc
        f, ll = r[f"c{n}_feast"], r[f"c{n}_ll"]
        print(
            f"  (c) {n} concurrent clients ({procs} processes x {conc}), "
            f"errors Feast {f['errors']}, Loopline {ll['errors']}"
        )
        print(line("Feast feature server (HTTP, retrieval)", f))
        print(line("Loopline Predict (gRPC, features+model+log)", ll))
        out[f"c{n}_loopline_over_feast_rps"] = ratio(ll["rps"], f["rps"])
        out[f"c{n}_feast_over_loopline_p99"] = ratio(f["p99"], ll["p99"])
    goal_p50 = r["b_ll"]["p50"] <= r["a_feast"]["p50"]
    goal_p99 = r["b_ll"]["p99"] <= r["a_feast"]["p99"]
    print(
        f"  goal: Loopline's whole Predict (b, over gRPC) at or below Feast's retrieval alone "
        f"(a, in-process): p50 {'met' if goal_p50 else 'NOT met'} "
        f"({r['b_ll']['p50']:.3f} vs {r['a_feast']['p50']:.3f} ms), p99 "
        f"{'met' if goal_p99 else 'NOT met'} ({r['b_ll']['p99']:.3f} vs "
        f"{r['a_feast']['p99']:.3f} ms)"
    )
    print(f"  Feast keys left in Redis after teardown: {r.get('feast_keys_left')}")
    flat = {
        f"{k}_{m}": round(v, 4) for k, d in r.items() if isinstance(d, dict) for m, v in d.items()
    }
    print(
        json.dumps(
            {
                **flat,
                **out,
                "goal_p50_met": goal_p50,
                "goal_p99_met": goal_p99,
                "feast_keys_left": r.get("feast_keys_left"),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
