"""Soak: the whole loop for ``--minutes``, with the world drifting and back periodically.

The demo's machinery (``loopline.demo``) brings the loop up on its own topics,
Redis keys and registry: a replayed history, a bootstrap champion, every
service as its own process (features, serve, labels, drift, policy,
trainer). Live traffic then runs in segments of ``--drift-every-min``: the
fraud simulator's world alternates between normal and drifted, so drift
alarms, retrains and hot swaps recur. Every ``--sample-s`` the soak reads each
service's process tree from ``/proc`` (RSS, open file descriptors).

Printed: RSS and open-FD growth per service per hour (the slope over the
second half of the run, after warm-up), client-side Predict p99 per
``--bucket-s`` (5 minutes), counts of drift alarms, retrain requests,
published versions and champion swaps, then one JSON line. A leak shows as a
failing invariant: the floor of RSS (its minimum over the last quarter of the
run against the quarter before: work that allocates and frees lifts peaks, a
leak lifts the floor) growing faster than ``--max-rss-mib-per-h``, or open
FDs' floor faster than ``--max-fds-per-h``, in any service; also failed Predict calls
or a service that died. Short runs (``--minutes 3``) work; their growth rates
are noisy extrapolations.

Run: ``python benchmarks/soak.py --minutes 30`` (needs ``loopline up``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from support.proc_tree import tree_now

from loopline.config.grpc import grpc_client
from loopline.config.kafka import admin_config, producer_config
from loopline.config.loader import load_settings
from loopline.demo.config import DemoConfig
from loopline.demo.observe import TopicWatcher
from loopline.demo.runner import Demo, _wait_serving
from loopline.featurerepo.loader import model_of, project_of, read_repo_config
from loopline.kafka.checked_producer import CheckedProducer
from loopline.registry.directory import DirectoryRegistry
from loopline.simulation.api import SimEvent, SimulationConfig, load_simulation
from loopline.stack import Stack, delete_topics, ensure_topics

SERVICES = ("features", "serve", "labels", "drift", "policy", "trainer")


@dataclass(frozen=True)
class Usage:
    at: float  # seconds since the live phase began
    service: str
    rss: int
    fds: int


def segments(demo: Demo, period_s: float, live_s: float, seed: int) -> Iterator[SimEvent]:
    """Live events on the wall clock, in segments of ``period_s`` alternating between the
    simulator's normal and drifted world (each segment its own seed: unique event ids)."""
    project = project_of(demo.run.settings)
    assert project.root is not None
    sim = load_simulation(project.root, read_repo_config(project.root).simulator)
    start = time.time()
    for k in range(math.ceil(live_s / period_s)):
        seg_start_ms = int((start + k * period_s) * 1000)
        config = SimulationConfig(
            seed=seed + k,
            start_ms=seg_start_ms,
            duration_s=min(period_s, live_s - k * period_s),
            rate=demo.demo.rate,
            outcome_delay_s=demo.demo.outcome_delay_s,
            drift_at_s=0.0 if k % 2 else None,  # odd segments: the drifted world
            daily_rhythm=False,
            params=dict(sim.demo_params),
        )
        yield from sim.simulate(config)


def sample_usage(
    demo: Demo, t0: float, every_s: float, out: list[Usage], stop: threading.Event
) -> None:
    while not stop.is_set():
        now = time.monotonic() - t0
        for name, svc in demo.services.items():
            if svc.alive() and svc.process is not None:
                rss, fds = tree_now(svc.process.pid)
                out.append(Usage(now, name, rss, fds))
        stop.wait(every_s)


def per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return float("nan")
    t, v = np.array(points).T
    return float(np.polyfit(t, v, 1)[0] * 3600)


def floor_growth_per_hour(points: list[tuple[float, float]], live_s: float) -> float:
    """How fast the *floor* rises: the minimum over the last quarter of the run minus the
    minimum over the quarter before, per hour. Work that allocates and frees (a training,
    a burst) lifts the peaks and the slope, not the floor; a leak lifts the floor."""
    a = [v for t, v in points if live_s / 2 <= t < live_s * 3 / 4]
    b = [v for t, v in points if t >= live_s * 3 / 4]
    if not a or not b:
        return float("nan")
    return (min(b) - min(a)) / (live_s / 4) * 3600


def growth(usage: list[Usage], live_s: float) -> dict[str, dict[str, float]]:
    """Per service, over the second half of the run (after warm-up): RSS (MiB) and open
    FDs at its start and end, their slope per hour, and the growth of their floor per hour
    (what the leak invariant reads)."""
    out = {}
    for name in SERVICES:
        rows = [u for u in usage if u.service == name and u.at >= live_s / 2]
        if not rows:
            continue
        rss = [(u.at, u.rss / 2**20) for u in rows]
        fds = [(u.at, float(u.fds)) for u in rows]
        out[name] = {
            "rss_mib_start": round(rows[0].rss / 2**20, 1),
            "rss_mib_end": round(rows[-1].rss / 2**20, 1),
            "rss_mib_max": round(max(u.rss for u in rows) / 2**20, 1),
            "rss_mib_per_h": round(per_hour(rss), 1),
            "rss_floor_mib_per_h": round(floor_growth_per_hour(rss, live_s), 1),
            "fds_start": rows[0].fds,
            "fds_end": rows[-1].fds,
            "fds_per_h": round(per_hour(fds), 1),
            "fds_floor_per_h": round(floor_growth_per_hour(fds, live_s), 1),
        }
    return out


def p99_buckets(demo: Demo, live_start_wall: float, bucket_s: float) -> list[dict[str, Any]]:
    with demo.run.stats.lock:
        records = list(demo.run.stats.records)
    buckets: dict[int, list[float]] = {}
    failed: dict[int, int] = {}
    for r in records:
        b = int((r.wall_s - live_start_wall) // bucket_s)
        if r.ok:
            buckets.setdefault(b, []).append(r.latency_ms)
        else:
            failed[b] = failed.get(b, 0) + 1
    return [
        {
            "from_min": round(b * bucket_s / 60, 1),
            "calls": len(buckets.get(b, [])) + failed.get(b, 0),
            "failed": failed.get(b, 0),
            "p99_ms": round(float(np.percentile(buckets[b], 99)), 2) if b in buckets else None,
        }
        for b in sorted(set(buckets) | set(failed))
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="live phase length")
    parser.add_argument("--rate", type=float, default=60.0, help="scored events per second")
    parser.add_argument(
        "--drift-every-min",
        type=float,
        default=5.0,
        help="the world switches between normal and drifted this often",
    )
    parser.add_argument("--history-s", type=float, default=600.0)
    parser.add_argument("--bucket-s", type=float, default=300.0, help="p99 bucket length")
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS / FD sample period")
    parser.add_argument("--max-rss-mib-per-h", type=float, default=200.0)
    parser.add_argument("--max-fds-per-h", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    base = load_settings()
    live_s = args.minutes * 60
    period_s = min(args.drift_every_min * 60, live_s / 2)
    config = DemoConfig(
        seed=args.seed, history_s=args.history_s, live_s=live_s, rate=args.rate, console=False
    )
    Stack(base, progress=lambda m: None).up()
    demo = Demo(base, config, say=lambda m: print(f"# {m}", file=sys.stderr, flush=True))
    s = demo.run.settings
    ensure_topics(s, demo.topics)
    usage: list[Usage] = []
    stop = threading.Event()
    watcher = TopicWatcher(
        admin_config(s.kafka), demo.topics.drift, demo.topics.retrain, demo.topics.model_updates
    )
    problems: list[str] = []
    try:
        demo.history()  # the history goes to Kafka; the live part is the soak's own
        demo.start_service("features", ["run", "features"], s.streams.metrics_port)
        demo.bootstrap()
        demo.start_service("serve", ["run", "serve"], s.serving.metrics_port)
        demo.start_service("labels", ["run", "labels"], s.labels.metrics_port)
        demo.start_service("drift", ["run", "drift"], s.drift.metrics_port)
        demo.start_service("policy", ["run", "policy"], s.policy.metrics_port)
        demo.start_service("trainer", ["run", "trainer"], s.trainer.metrics_port)
        for svc in demo.services.values():
            svc.wait_ready(120)
        client = grpc_client(s.serving)
        _wait_serving(client, demo.services["serve"], 120)
        watcher.start()
        t0 = time.monotonic()
        live_start_wall = time.time()
        sampler = threading.Thread(
            target=sample_usage, args=(demo, t0, args.sample_s, usage, stop), daemon=True
        )
        sampler.start()
        producer = CheckedProducer(producer_config(s.kafka))
        driver = demo.driver(client, producer)
        driver.run(segments(demo, period_s, live_s, args.seed), demo.stop)
        driver.drain_outcomes(int((time.time() + 10) * 1000), demo.stop)
        producer.flush()
        driver.close()
        stop.set()
        sampler.join(30)
        for name, svc in demo.services.items():
            if not svc.alive():
                problems.append(f"{name} died: {svc.tail(3)}")
    finally:
        stop.set()
        watcher.stop()
        demo.close()
    reg = DirectoryRegistry(s.registry.path)
    model = model_of(s).name
    versions = reg.versions(model)
    swaps = max(0, len(reg.alias_history(model, "champion")) - 1)
    happened = watcher.happened
    grown = growth(usage, live_s)
    buckets = p99_buckets(demo, live_start_wall, args.bucket_s)
    failures = len(demo.run.stats.failures())
    leaks = {
        name: g
        for name, g in grown.items()
        if g["rss_floor_mib_per_h"] > args.max_rss_mib_per_h
        or g["fds_floor_per_h"] > args.max_fds_per_h
    }
    checks = {
        "no_failed_predict": failures == 0,
        "services_alive": not problems,
        "no_leak": not leaks,
        "retrained": len(versions) > 1 or args.minutes < 2 * args.drift_every_min,
    }
    print(
        f"soak: {args.minutes:g} min live at {args.rate:g} scored events/s, drift every "
        f"{period_s / 60:g} min"
    )
    for name, g in grown.items():
        print(
            f"  {name:<9} RSS {g['rss_mib_start']:7.1f} -> {g['rss_mib_end']:7.1f} MiB "
            f"(max {g['rss_mib_max']:7.1f}; slope {g['rss_mib_per_h']:+8.1f} MiB/h, floor "
            f"{g['rss_floor_mib_per_h']:+8.1f} MiB/h)  FDs {g['fds_start']:4} -> "
            f"{g['fds_end']:4} (slope {g['fds_per_h']:+6.1f}/h, "
            f"floor {g['fds_floor_per_h']:+6.1f}/h)"
        )
    for b in buckets:
        print(
            f"  from {b['from_min']:5.1f} min: {b['calls']:6} calls, {b['failed']} failed, "
            f"p99 {b['p99_ms']} ms"
        )
    print(
        f"  drift alarms {len(happened.drift)}, retrain requests {len(happened.retrain)}, "
        f"versions {len(versions)}, champion swaps {swaps}, model updates "
        f"{len(happened.model_updates)}; failed Predict {failures}"
    )
    for p in problems:
        print(f"  problem: {p}")
    result = {
        "benchmark": "soak",
        "minutes": args.minutes,
        "rate": args.rate,
        "drift_every_min": period_s / 60,
        "predict_calls": len(demo.run.stats.records),
        "predict_failed": failures,
        "p99_ms_per_bucket": buckets,
        "growth_per_service": grown,
        "drift_alarms": len(happened.drift),
        "retrain_requests": len(happened.retrain),
        "versions": len(versions),
        "champion_swaps": swaps,
        "leaks": sorted(leaks),
        "problems": problems,
        "invariant_ok": all(checks.values()),
        "checks": checks,
    }
    print(json.dumps(result))
    try:
        delete_topics(s, demo.topics.all(), timeout_s=20)
    except Exception as e:
        print(f"(could not delete the soak's topics: {e})", file=sys.stderr)
    return 0 if result["invariant_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
