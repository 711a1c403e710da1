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

import argparse
import dataclasses
import json
import os
import random
import signal
import time
from typing import Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry
from support.bench_run import BenchRun, feature_rows
from support.clients import Load, make_requests, percentiles, sequential_client
from support.feast_peer import (
    FeastWorker,
    delete_project_keys,
    ensure_venv,
    feast_refs,
    feast_rows,
    start_feast_server,
    vector_spec,
)
from support.http_load import HttpLoad
from support.models import TrainedModels
from support.server import histogram_percentiles, scrape, server_parser, start_server, stop_server

from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.registry.directory import DirectoryRegistry
from loopline.serving.feature_store import RedisFeatureStore
from loopline.serving.features import LookupPlan
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import session_options
from loopline.serving.online_features import OnlineFeatures
from loopline.serving.requests import PredictInput, RequestCheck
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc

KEY_FIELDS = {"card": "card_id", "merchant": "merchant_id"}
PARITY_N = 50
# Feast waits for Redis however long it takes; Loopline serving answers defaults after 5 ms
# (serving.feature_timeout_ms) and then skips the store for 200 ms. On a loaded machine that
# would have Loopline do less work than Feast, so here it waits as well (degraded answers,
# which skip Redis, are still counted and reported).
SERVING_WAIT = {"feature_timeout_ms": 1000.0, "default_deadline_ms": 2000.0}
DEGRADED = "loopline_serving_degraded_answers_total"


@dataclasses.dataclass
class Sides:
    """Both sides of a run, set up: the Feast worker and the Loopline server."""

    run: BenchRun
    fs: FeatureSet
    reqs: list[list[Any]]  # [card id, merchant id, amount]
    feast: FeastWorker
    port: int
    metrics_port: int
    args: argparse.Namespace


def bench_requests(n: int, seed: int = 1) -> list[list[Any]]:
    """[card id, merchant id, amount] over known entities (as ``make_requests`` draws them)."""
    rng = random.Random(seed)
    return [
        [f"c{rng.randrange(10_000)}", f"m{rng.randrange(1_000)}", round(rng.uniform(1, 500), 2)]
        for _ in range(n)
    ]


def loopline_fetch(sides: Sides) -> tuple[list[float], int]:
    """Loopline's serving fetch in-process, one request at a time: the latencies (s) and
    how many answers were degraded (defaults instead of Redis values)."""
    run, fs = sides.run, sides.fs
    conf = dataclasses.replace(run.settings.serving, **SERVING_WAIT)
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

    if all([call(r) for r in sides.reqs[:200]]):  # also the warm-up
        raise SystemExit("Loopline's fetch answered degraded values: are the features in Redis?")
    out: list[float] = []
    degraded = i = 0
    end = time.perf_counter() + sides.args.seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        degraded += call(sides.reqs[i % len(sides.reqs)])
        out.append(time.perf_counter() - t0)
        i += 1
    store.close()
    return out, degraded


def check_parity(sides: Sides, rows: dict[str, Any], refs: list[str]) -> dict[str, float]:
    """Both sides score the same requests at the same event time: Feast returns the stored
    values, both build the same vector (Loopline's response carries the one it scored),
    and the scores agree."""
    t_ms = int(time.time() * 1000)
    sample = [[*r, t_ms / 1000.0] for r in sides.reqs[:PARITY_N]]
    answers = sides.feast.call("parity", requests=sample)["rows"]
    stored = {
        (v, i, n): x
        for v, entries in rows.items()
        for i, xs in entries
        for n, x in zip(sides.fs.view(v).names, xs, strict=True)
    }
    vector_diff = score_diff = 0.0
    with grpc.insecure_channel(f"127.0.0.1:{sides.port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        for req, got in zip(sample, answers, strict=True):
            ids = {"card": req[0], "merchant": req[1]}
            for ref in refs:
                view, name = ref.split(":")
                have, want = got["values"].get(f"{view}__{name}"), stored[(view, ids[view], name)]
                if have != want:
                    raise SystemExit(f"Feast returned {ref} = {have} for {ids[view]}, not {want}")
            entities = {"card_id": req[0], "merchant_id": req[1]}
            resp = stub.Predict(
                pb.PredictRequest(entities=entities, fields={"amount": req[2]}, event_time_ms=t_ms),
                timeout=5,
            )
            if resp.degraded:
                raise SystemExit(f"Loopline answered degraded features for {req}")
            diffs = [abs(f.value - x) for f, x in zip(resp.features, got["vector"], strict=True)]
            vector_diff = max(vector_diff, *diffs)
            score_diff = max(score_diff, abs(resp.score - got["score"]))
    # The vectors differ by float32 rounding at most (Feast's values are float64 in Parquet).
    if vector_diff > 1e-3 or score_diff > 1e-5:
        raise SystemExit(
            f"Feast and Loopline disagree: vectors by {vector_diff}, scores by {score_diff}"
        )
    return {"vector_max_diff": vector_diff, "score_max_diff": score_diff}


def measure_one_caller(sides: Sides) -> dict[str, Any]:
    """(a) and (b): one caller, the sides alternating round by round."""
    args = sides.args
    lat: dict[str, list[float]] = {k: [] for k in ("a_ll", "a_feast", "b_ll", "b_feast")}
    a_degraded = 0
    grpc_reqs = make_requests(5000)
    before = scrape(sides.metrics_port)
    for r in range(args.rounds):
        fetched, degraded = loopline_fetch(sides)
        lat["a_ll"] += fetched
        a_degraded += degraded
        lat["a_feast"] += sides.feast.call("fetch", seconds=args.seconds)["latencies"]
        # Feast's caller has no deadline; on this shared machine a call can stall > 1 s.
        lat["b_ll"] += sequential_client(sides.port, grpc_reqs, args.seconds, timeout_s=30)
        lat["b_feast"] += sides.feast.call("predict", seconds=args.seconds)["latencies"]
        print(f"  (a), (b) round {r + 1}/{args.rounds} done", flush=True)
    after = scrape(sides.metrics_port)
    server_side = histogram_percentiles(before["buckets"], after["buckets"])
    total_s = args.seconds * args.rounds
    out: dict[str, Any] = {k: stats(v, total_s) for k, v in lat.items()}
    out["a_ll"]["degraded"] = a_degraded
    out["b_ll"]["degraded"] = _count(after, DEGRADED) - _count(before, DEGRADED)
    out["b_ll_server"] = {"p50": server_side["p50"], "p99": server_side["p99"]}
    return out


def measure_load(sides: Sides, fport: int, bodies: list[bytes], procs: int, conc: int) -> dict:
    """(c): Loopline's Predict, then Feast's feature server, ``procs x conc`` clients each."""
    n, seconds = procs * conc, sides.args.load_seconds
    before = _count(scrape(sides.metrics_port), DEGRADED)
    load = Load(sides.port, procs, conc, seconds).start()
    ll_lat, ll_err, _ = load.finish(stop=False)
    degraded = _count(scrape(sides.metrics_port), DEGRADED) - before
    path = "/get-online-features"
    hload = HttpLoad(fport, path, bodies, processes=procs, concurrency=conc, seconds=seconds)
    f_lat, f_err = hload.start().finish()
    for e, k in (ll_err + f_err).most_common(3):
        print(f"    error x{k}: {e}")
    print(f"  (c) {n} clients done", flush=True)
    ll = {"rps": load.rate, "errors": sum(ll_err.values()), "degraded": degraded}
    return {
        f"c{n}_ll": {**stats(ll_lat, 1.0), **ll},
        f"c{n}_feast": {**stats(f_lat, 1.0), "rps": hload.rate, "errors": sum(f_err.values())},
    }


def _count(scraped: dict[str, Any], name: str) -> float:
    return sum(s.value for s in scraped["samples"] if s.name == name)


def stats(latencies: list[float] | np.ndarray, seconds: float) -> dict[str, float]:
    p = percentiles(latencies)
    return {"p50": p["p50"], "p99": p["p99"], "rps": len(latencies) / seconds}


def ort_options() -> dict[str, int]:
    """Serving's onnxruntime session options, as plain numbers for the Feast worker."""
    so = session_options()
    names = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode")
    names += ("graph_optimization_level", "log_severity_level")
    return {name: int(getattr(so, name)) for name in names}


def setup_feast(
    feast: FeastWorker, run: BenchRun, fs: FeatureSet, rows: dict[str, Any], **setup: Any
) -> None:
    t0 = time.perf_counter()
    feast.call(
        "setup",
        dir=str(run.work / "feast"),
        redis=f"{run.settings.redis.host}:{run.settings.redis.port}",
        rows=feast_rows(fs, rows),
        key_fields=KEY_FIELDS,
        **setup,
    )
    n = sum(len(r) for r in rows.values())
    print(
        f"setup: Feast apply + materialize of {n} entities in "
        f"{time.perf_counter() - t0:.1f} s (project {setup['project']})",
        flush=True,
    )


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
    feast = server = feast_server = None
    result: dict[str, Any] = {}
    try:
        fs = load_project(builtin_example()).feature_set()
        now = time.time()
        rows = feature_rows(fs, now)
        run.write_features(now)
        registry = DirectoryRegistry(run.work / "registry")
        print("setup: training the model (support/models.py) ...", flush=True)
        mv = TrainedModels(run.settings, run.work).publish(registry, seed=0)
        spec = vector_spec(fs, mv.manifest.feature_names)
        refs = feast_refs(spec)
        reqs = bench_requests(5000)
        feast = FeastWorker(python, run.work / "feast-worker.log")
        m = mv.manifest
        model = {
            "path": str(mv.model_path),
            "input": m.input_name,
            "output": m.probability_output,
            "options": ort_options(),
        }
        setup_feast(
            feast,
            run,
            fs,
            rows,
            project=project,
            now=now,
            features=refs,
            spec=spec,
            requests=reqs,
            model=model,
        )
        config = run.server_config(
            registry.root,
            processes=args.processes,
            threads=args.threads,
            overrides={"serving": SERVING_WAIT},
        )
        server, port, metrics_port, _ = start_server(config)
        sides = Sides(run, fs, reqs, feast, port, metrics_port, args)
        result["parity"] = check_parity(sides, rows, refs)
        print(f"parity: {PARITY_N} requests, values, vectors and scores agree ({result['parity']})")

        result.update(measure_one_caller(sides))
        feast_server, fport = start_feast_server(python, run.work / "feast", args.processes)
        body = {"features": refs, "full_feature_names": True}
        bodies = [
            json.dumps({**body, "entities": {"card_id": [r[0]], "merchant_id": [r[1]]}}).encode()
            for r in reqs
        ]
        for procs, conc in levels:
            result.update(measure_load(sides, fport, bodies, procs, conc))
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
                result["feast_keys_left"] = delete_project_keys(run.store, project)
        run.remove()
    print_summary(result, levels, time.perf_counter() - t_start)


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def print_summary(r: dict[str, Any], levels: list[tuple[int, ...]], took_s: float) -> None:
    def line(label: str, d: dict[str, float]) -> str:
        text = f"    {label:<44} p50 {d['p50']:7.3f} ms  p99 {d['p99']:7.3f} ms  {d['rps']:7.0f}/s"
        return text + (f"  ({d['degraded']:.0f} degraded)" if "degraded" in d else "")

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
