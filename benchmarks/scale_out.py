"""Scale-out figures of the features flow and of serving, measured here in one run.

With the real Kafka broker and Redis (``loopline up``), real processes only:

1. Features flow: ``--events`` simulated transactions (20,000 cards, 2,000
   merchants) are produced once to a fresh topic with ``--partitions`` (8)
   partitions; then ``loopline run features --processes P --workers W --drain``
   drains it for each layout of ``--layouts`` (1x1, 1x2, 2x2; recovery on, a
   fresh recovery directory and Redis prefix each time). Events/s = records
   read / (first records read -> last Redis write), from the processes'
   Prometheus endpoints; CPU/event from ``/proc`` (the whole process tree).
   Every layout must leave the same values in Redis as 1x1 (checked).
2. Memory: the same number of events over 2 x ``--events`` cards (many more
   entities) drained by 1x1. Redis: ``INFO memory`` used_memory after - before
   over the keys written (one key per entity and view), cross-checked with
   ``MEMORY USAGE`` on a sample. Flow: peak RSS of this run minus the 1x1
   run's, over the extra entities held in state.
3. Serving: the real server (``python -m loopline.serving``) with
   ``serving.processes`` = each of ``--replicas`` (1, 2) on the 200-tree model
   of ``serving_latency.py``, loaded by ``--clients`` (2x8: 2 load-generator
   processes x 8 calls in flight) for ``--serve-seconds``; calls/s, p99, and
   the server tree's CPU per call.

Clients, flows and servers share this machine's cores: on 2 cores no layout
can scale beyond 2x, and other work on the machine (the load average is
printed) takes its share. The per-event and per-call CPU figures are the
ones that carry over to other machines (docs/scaling.md).

Run: ``python benchmarks/scale_out.py`` (2.5-3.5 minutes here); shorter:
``--events 50000 --serve-seconds 4``; parts: ``--skip serving,memory``.
It prints a summary, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from dataclasses import replace
from typing import Any

from support.bench_run import BenchRun
from support.clients import Load, percentiles
from support.flow_runs import (
    FlowRun,
    drop_prefix,
    produce_simulated,
    redis_cpu_s,
    run_features_flow,
    stored_values,
)
from support.proc_tree import TreeUsage, busy_fraction, machine_jiffies
from support.server import start_server, stop_server

from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.stack import delete_topics, ensure_topics

FLOW_CARDS = 20_000
SAMPLED_KEYS = 2_000


def _say(line: str) -> None:
    print(line, flush=True)


def _pairs(text: str) -> list[tuple[int, int]]:
    """``"1x1,2x2"`` -> ``[(1, 1), (2, 2)]``."""
    out = []
    for item in text.split(","):
        a, _, b = item.strip().partition("x")
        out.append((int(a), int(b)))
    return out


def _flow_settings(run: BenchRun, suffix: str, partitions: int) -> tuple[Settings, Topics]:
    topics = Topics(f"{run.tag}{suffix}.")
    s = run.settings
    settings = replace(
        s,
        kafka=replace(s.kafka, topic_prefix=topics.prefix),
        topics=replace(s.topics, partitions=partitions),
    )
    ensure_topics(settings, topics)
    return settings, topics


# -- 1. features flow -----------------------------------------------------------------
def flow_layouts(
    run: BenchRun, settings: Settings, args: argparse.Namespace
) -> tuple[list[tuple[FlowRun, float]], int]:
    """Each layout drains the same topic, ``--rounds`` times in turn; returns each
    layout's fastest run (the one least slowed by other work) with the Redis CPU
    (us) per value it wrote, and the number of values a run leaves."""
    best: dict[tuple[int, int], tuple[FlowRun, float]] = {}
    reference: dict[bytes, bytes] | None = None
    for round_ in range(args.rounds):
        for processes, workers in _pairs(args.layouts):
            prefix = f"{run.tag}:r{round_}p{processes}w{workers}"
            redis_before = redis_cpu_s(run.store)
            flow = run_features_flow(
                settings,
                prefix,
                run.work,
                processes=processes,
                workers=workers,
                expected=args.events,
                drain_s=args.drain_s,
                name=f"r{round_}-",
            )
            redis_us = (redis_cpu_s(run.store) - redis_before) / flow.redis_keys * 1e6
            values = stored_values(run.store, prefix)
            drop_prefix(run.store, prefix)
            if reference is None:
                reference = values
            elif values != reference:
                raise SystemExit(f"flow {flow.layout} left other values in Redis than the first")
            _say(
                f"  round {round_ + 1} flow {flow.layout} (processes x workers): "
                f"{flow.events_per_s:,.0f} events/s ({flow.records:,} in {flow.seconds:.2f} s), "
                f"{flow.cpu_us_per_event:.0f} us CPU/event, peak RSS "
                f"{flow.peak_rss / 2**20:.0f} MiB, machine CPU {flow.machine_busy:.0%} busy, "
                f"{flow.redis_keys:,} Redis writes at {redis_us:.1f} us Redis CPU each, "
                f"{len(values):,} values left (same as the first run)"
            )
            key = (processes, workers)
            if key not in best or flow.events_per_s > best[key][0].events_per_s:
                best[key] = (flow, redis_us)
    return list(best.values()), len(reference or {})


# -- 2. memory ------------------------------------------------------------------------
def memory(
    run: BenchRun, settings: Settings, args: argparse.Namespace, base: FlowRun, base_keys: int
) -> dict[str, Any]:
    """Redis bytes per entity and flow RSS per entity, from a run over many more cards."""
    prefix = f"{run.tag}:mem"
    used_before = run.store.info("memory")["used_memory"]
    flow = run_features_flow(
        settings,
        prefix,
        run.work,
        processes=1,
        workers=1,
        expected=args.events,
        drain_s=args.drain_s,
        name="memory-",
    )
    used_after = run.store.info("memory")["used_memory"]
    keys = list(run.store.scan_iter(match=f"{prefix}:f:*", count=5000))
    sample = random.Random(3).sample(keys, min(SAMPLED_KEYS, len(keys)))
    pipe = run.store.pipeline(transaction=False)
    for key in sample:
        pipe.memory_usage(key, samples=0)
    sampled = sum(pipe.execute()) / len(sample)
    cards = sum(1 for k in keys if b":card:" in k)
    drop_prefix(run.store, prefix)
    extra = len(keys) - base_keys
    rss_per_100k = (flow.peak_rss - base.peak_rss) / extra * 1e5 if extra > 0 else float("nan")
    out = {
        "entities": len(keys),
        "cards": cards,
        "redis_bytes_per_entity": (used_after - used_before) / len(keys),
        "redis_memory_usage_bytes": sampled,
        "flow_peak_rss": flow.peak_rss,
        "flow_rss_per_100k": rss_per_100k,
        "extra_entities": extra,
        "events_per_s": flow.events_per_s,
    }
    _say(
        f"  {len(keys):,} entities ({cards:,} cards); Redis used_memory +"
        f"{(used_after - used_before) / 2**20:.1f} MiB = {out['redis_bytes_per_entity']:.0f} "
        f"B/entity (MEMORY USAGE sample: {sampled:.0f} B/key); flow peak RSS "
        f"{flow.peak_rss / 2**20:.0f} MiB vs {base.peak_rss / 2**20:.0f} MiB with "
        f"{base_keys:,} entities"
    )
    return out


# -- 3. serving -----------------------------------------------------------------------
def serving(run: BenchRun, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Calls/s of the real server at each replica count, same clients, same model."""
    from support.models import TrainedModels

    from loopline.registry.directory import DirectoryRegistry

    _say("serving: features of 10,000 cards in Redis, training the 200-tree model ...")
    run.write_features()
    registry = DirectoryRegistry(run.work / "registry")
    TrainedModels(run.settings, run.work).publish(registry, seed=0)
    (load_procs, in_flight), *_ = _pairs(args.clients)
    rows = []
    for replicas in (int(r) for r in args.replicas.split(",")):
        config = run.server_config(registry.root, processes=replicas, threads=args.threads)
        proc, port, _metrics_port, _lines = start_server(config)
        try:
            usage = TreeUsage(proc.pid)
            cpu_before, machine_before = usage.sample(), machine_jiffies()
            redis_before = redis_cpu_s(run.store)
            load = Load(port, load_procs, in_flight, args.serve_seconds).start()
            latencies, errors, _ = load.finish(stop=False)
            cpu = usage.sample() - cpu_before
            busy = busy_fraction(machine_before, machine_jiffies())
            redis_cpu = redis_cpu_s(run.store) - redis_before
        finally:
            stop_server(proc)
        p = percentiles(latencies)
        row = {
            "replicas": replicas,
            "rps": load.rate,
            "p50_ms": p["p50"],
            "p99_ms": p["p99"],
            "errors": sum(errors.values()),
            "cpu_us_per_call": cpu / max(len(latencies), 1) * 1e6,
            "machine_busy": busy,
            "redis_cpu_us_per_call": redis_cpu / max(len(latencies), 1) * 1e6,
        }
        rows.append(row)
        _say(
            f"  {replicas} replica(s) x {args.threads} threads: {row['rps']:,.0f} calls/s, "
            f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, {row['errors']} errors, "
            f"{row['cpu_us_per_call']:.0f} us server CPU/call, "
            f"{row['redis_cpu_us_per_call']:.1f} us Redis CPU/call, machine CPU {busy:.0%} busy"
        )
    return rows


# -- the run --------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="events per flow run")
    ap.add_argument("--partitions", type=int, default=8, help="partitions of the events topic")
    ap.add_argument("--layouts", default="1x1,1x2,2x2", help="flow processes x workers")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each layout (best kept)")
    ap.add_argument("--drain-s", type=float, default=1.0, help="the flow's --drain idle time")
    ap.add_argument("--replicas", default="1,2", help="serving.processes values")
    ap.add_argument("--threads", type=int, default=4, help="RPC threads per serving process")
    ap.add_argument("--clients", default="2x8", help="load processes x calls in flight each")
    ap.add_argument("--serve-seconds", type=float, default=8.0, help="load per replica count")
    ap.add_argument("--skip", default="", help="comma list of: flows, memory, serving")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    t0, load_before = time.perf_counter(), os.getloadavg()
    _say(
        f"{os.cpu_count()} cores, load average {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}: scaling beyond {os.cpu_count()} processes is bounded by cores"
    )
    run = BenchRun.start()
    result: dict[str, Any] = {"cores": os.cpu_count(), "load_avg_before": load_before[0]}
    flows: list[tuple[FlowRun, float]] = []
    topics: list[tuple[Settings, Topics]] = []
    try:
        if "flows" not in skip or "memory" not in skip:
            settings, flow_topics = _flow_settings(run, "f", args.partitions)
            topics.append((settings, flow_topics))
            _say(f"producing {args.events:,} events to {args.partitions} partitions ...")
            produce_simulated(settings, flow_topics.events, args.events, cards=FLOW_CARDS)
            _say(f"features flow: layouts {args.layouts}, {args.rounds} round(s) ...")
            if "flows" in skip:  # the memory figures need one 1x1 run
                args = argparse.Namespace(**{**vars(args), "layouts": "1x1", "rounds": 1})
            flows, base_keys = flow_layouts(run, settings, args)
        if "memory" not in skip:
            settings, mem_topics = _flow_settings(run, "m", args.partitions)
            topics.append((settings, mem_topics))
            cards = 2 * args.events
            _say(f"memory: {args.events:,} events over {cards:,} cards, 1x1 ...")
            produce_simulated(settings, mem_topics.events, args.events, cards=cards)
            one = next((f for f, _ in flows if f.layout == "1x1"), None)
            if one is None:
                raise SystemExit("the memory figures compare with a 1x1 run: add 1x1 to --layouts")
            result["memory"] = memory(run, settings, args, one, base_keys)
        if "serving" not in skip:
            result["serving"] = serving(run, args)
    finally:
        run.remove()
        shutil.rmtree(run.work, ignore_errors=True)  # recovery snapshots: ~140 MB a run
        for settings, t in topics:
            try:
                delete_topics(settings, t.all(), timeout_s=20)
            except Exception as e:  # best effort: leftovers only cost disk
                _say(f"(could not delete the {t.prefix}* topics: {e})")
    result["features"] = [
        {
            "layout": f.layout,
            "events_per_s": round(f.events_per_s),
            "cpu_us_per_event": round(f.cpu_us_per_event, 1),
            "peak_rss_mib": round(f.peak_rss / 2**20),
            "machine_busy": round(f.machine_busy, 3),
            "redis_cpu_us_per_write": round(redis_us, 2),
        }
        for f, redis_us in flows
    ]
    result["load_avg_after"] = os.getloadavg()[0]
    print_summary(result, flows, time.perf_counter() - t0)


def print_summary(
    result: dict[str, Any], flows: list[tuple[FlowRun, float]], took_s: float
) -> None:
    print()
    print(
        f"summary ({took_s:.0f} s, {result['cores']} cores shared by every process; load "
        f"average {result['load_avg_before']:.2f} before, {result['load_avg_after']:.2f} after)"
    )
    if flows:
        one = flows[0][0].events_per_s
        for f, redis_us in flows:
            ratio = f.events_per_s / one
            result[f"features_ratio_{f.layout}"] = round(ratio, 2)
            print(
                f"  features {f.layout} (processes x workers) {f.events_per_s:>9,.0f} events/s  "
                f"x{ratio:.2f} of 1x1  {f.cpu_us_per_event:5.0f} us CPU/event  "
                f"= {1e6 / f.cpu_us_per_event:,.0f} events per CPU-second  "
                f"(machine {f.machine_busy:.0%} busy); Redis {redis_us:.1f} us CPU per write, "
                f"{f.writes_per_event:.2f} writes per event"
            )
    if "memory" in result:
        m = result["memory"]
        mb = m["redis_bytes_per_entity"] * 1e6 / 2**20
        print(
            f"  Redis memory           {m['redis_bytes_per_entity']:.0f} B/entity = {mb:,.0f} MiB "
            f"per million entities (used_memory delta over {m['entities']:,} keys; "
            f"MEMORY USAGE sample {m['redis_memory_usage_bytes']:.0f} B/key)"
        )
        print(
            f"  flow state RSS         {m['flow_rss_per_100k'] / 2**20:.1f} MiB per 100k "
            f"entities (peak RSS difference over {m['extra_entities']:,} extra entities)"
        )
        result["redis_mib_per_million_entities"] = round(mb, 1)
        result["flow_rss_mib_per_100k_entities"] = round(m["flow_rss_per_100k"] / 2**20, 1)
    if "serving" in result:
        rows = result["serving"]
        for row in rows:
            ratio = row["rps"] / rows[0]["rps"]
            result[f"serving_ratio_{row['replicas']}"] = round(ratio, 2)
            print(
                f"  serving {row['replicas']} replica(s)     {row['rps']:>9,.0f} calls/s  "
                f"x{ratio:.2f} of 1  p99 {row['p99_ms']:.2f} ms  {row['cpu_us_per_call']:.0f} us "
                f"server CPU/call = {1e6 / row['cpu_us_per_call']:,.0f} calls per CPU-second  "
                f"(machine {row['machine_busy']:.0%} busy); Redis "
                f"{row['redis_cpu_us_per_call']:.1f} us CPU per call"
            )
    print(json.dumps(_rounded(result)))


def _rounded(value: Any) -> Any:
    """Floats to 3 decimals, all the way down (the JSON line stays readable)."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
