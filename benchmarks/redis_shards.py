"""Online-store throughput on a 3-shard Redis Cluster vs one Redis, measured in one run.

Both stores are private to the run (started by the stack's own code on free
ports, removed at the end; the shared stack is never touched): one
``redis-server`` and a Redis Cluster of ``--masters`` (3) masters without
replicas. Each gets the packed features of 20,000 cards and 2,000 merchants of
the fraud example, written by the features flow's own writer
(``FeatureWriter``: one write-if-newer script per batch on one Redis, one per
hash slot on the cluster): keys/s.

Then serving's own store clients (``RedisFeatureStore``: one MGET;
``ClusterFeatureStore``: per shard one pipelined round trip) are driven by
``--procs`` client processes for ``--seconds`` each, in two shapes: a
prediction (card + merchant: 2 keys) and a batch of ``--batch`` predictions
(2 x batch keys). Figures: fetches/s (all processes), client p50/p99, and the
Redis servers' CPU per fetch (``INFO cpu``, summed over the shards). Rounds
alternate single/cluster (``--rounds``, best kept) so machine noise hits both.

On one machine the shards share its cores with the clients: the ratio shows
the client-side cost of routing (slot grouping, one round trip per shard), not
the capacity a cluster adds on separate hosts (docs/scaling.md).

Run: ``python benchmarks/redis_shards.py [--seconds 4] [--procs 2]``.
It prints a summary, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import redis

from loopline.config.loader import load_settings
from loopline.config.redis import cluster_client, redis_client
from loopline.contracts.redis_layout import RedisLayout, pack
from loopline.contracts.settings import RedisSettings, Settings
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.stack.paths import StackPaths
from loopline.stack.ports import free_port, free_port_run
from loopline.stack.redis_cluster import BUS_OFFSET, RedisCluster
from loopline.stack.redis_server import RedisServer
from loopline.streams.features.aggregation import FeatureWrite
from loopline.streams.features.redis_sink import FeatureWriter

N_CARDS, N_MERCHANTS = 20_000, 2_000
PREFIX = "shards"


def _writes(cluster: bool) -> list[FeatureWrite]:
    fs = load_project(builtin_example()).feature_set()
    layout = RedisLayout(PREFIX, cluster=cluster)
    rng = random.Random(7)
    now = time.time()
    out = []
    for entity, n in (("card", N_CARDS), ("merchant", N_MERCHANTS)):
        size = len(fs.view(entity).aggregations)
        for i in range(n):
            value = pack(now, [float(rng.randrange(50)) for _ in range(size)])
            key = layout.feature_key(fs, entity, f"{entity[0]}{i}")
            out.append(FeatureWrite(key, value, now, 0))
    return out


def _keys(cluster: bool, pairs: int, seed: int) -> list[bytes]:
    fs = load_project(builtin_example()).feature_set()
    layout = RedisLayout(PREFIX, cluster=cluster)
    card, merchant = layout.key_prefix(fs, "card"), layout.key_prefix(fs, "merchant")
    s = layout.key_suffix
    rng = random.Random(seed)
    out = []
    for _ in range(pairs):
        out.append(f"{card}c{rng.randrange(N_CARDS)}{s}".encode())
        out.append(f"{merchant}m{rng.randrange(N_MERCHANTS)}{s}".encode())
    return out


def _client(conf: RedisSettings, seconds: float, batch: int, seed: int, out: Any) -> None:
    """One client process: fetches of ``batch`` (card, merchant) pairs for ``seconds``."""
    from loopline.serving.cluster_store import ClusterFeatureStore
    from loopline.serving.feature_store import RedisFeatureStore

    store_type = ClusterFeatureStore if conf.cluster else RedisFeatureStore
    store = store_type.from_settings(conf)
    keys = _keys(conf.cluster, 4096, seed)
    n = 2 * batch
    requests = [keys[i : i + n] for i in range(0, len(keys) - n, n)]
    lat = []
    missing = 0
    end = time.perf_counter() + seconds
    i = 0
    while (t := time.perf_counter()) < end:
        values = store.mget(requests[i % len(requests)], 1.0)
        lat.append(time.perf_counter() - t)
        missing += values.count(None)
        i += 1
    store.close()
    out.put((lat, missing))


def _redis_cpu(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        info = redis.Redis(port=port, socket_timeout=10).info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def fetch_load(conf: RedisSettings, ports: list[int], args: argparse.Namespace, batch: int):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(conf, args.seconds, batch, seed, queue))
        for seed in range(args.procs)
    ]
    cpu0 = _redis_cpu(ports)
    for p in procs:
        p.start()
    results = [queue.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    cpu = _redis_cpu(ports) - cpu0
    lat = np.concatenate([np.asarray(r[0]) for r in results])
    if sum(r[1] for r in results):
        raise SystemExit(f"{sum(r[1] for r in results)} keys missing: the stores disagree")
    return {
        "fetches_s": len(lat) / args.seconds,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "redis_cpu_us": cpu / len(lat) * 1e6,
    }


def write_all(conf: RedisSettings, ports: list[int]) -> tuple[float, float]:
    """Keys/s of the flow's writer putting every feature value in, and Redis CPU per key."""
    writes = _writes(conf.cluster)
    client = cluster_client(conf, socket_timeout=30) if conf.cluster else redis_client(conf)
    writer = FeatureWriter(client, ttl_s=3600)
    cpu0 = _redis_cpu(ports)
    t0 = time.perf_counter()
    for i in range(0, len(writes), 500):  # the flow's batches
        result = writer.write(writes[i : i + 500])
        assert result.written == len(writes[i : i + 500])
    seconds = time.perf_counter() - t0
    cpu = _redis_cpu(ports) - cpu0
    writer.close()
    return len(writes) / seconds, cpu / len(writes) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--masters", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    ap.add_argument("--batch", type=int, default=16, help="predictions per batch fetch")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (best kept)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="loopline-shards-"))
    base = load_settings()
    single_settings = _private(base, work / "single", free_port(), masters=0)
    port = free_port_run(args.masters, offsets=(0, BUS_OFFSET))
    cluster_settings = _private(base, work / "cluster", port, masters=args.masters)
    single = RedisServer(single_settings, StackPaths.for_state_dir(work / "single"))
    cluster = RedisCluster(
        cluster_settings, StackPaths.for_state_dir(work / "cluster"), args.masters, 0
    )
    results: dict[str, dict[str, Any]] = {"single": {}, "cluster": {}}
    try:
        single.up()
        cluster.up()
        stores = {
            "single": (single_settings.redis, [single_settings.redis.port]),
            "cluster": (cluster_settings.redis, [n.port for n in cluster.nodes]),
        }
        load = _loadavg()
        for name, (conf, ports) in stores.items():
            results[name]["writes_s"], results[name]["write_cpu_us"] = write_all(conf, ports)
        for _ in range(args.rounds):
            for name, (conf, ports) in stores.items():
                for shape, batch in (("predict", 1), ("batch", args.batch)):
                    r = fetch_load(conf, ports, args, batch)
                    best = results[name].get(shape)
                    if best is None or r["fetches_s"] > best["fetches_s"]:
                        results[name][shape] = r
    finally:
        cluster.down()
        single.down()
    print_summary(results, args, load)


def _private(base: Settings, state: Path, port: int, masters: int) -> Settings:
    return replace(
        base,
        redis=replace(base.redis, host="127.0.0.1", port=port, cluster=bool(masters)),
        stack=replace(
            base.stack, state_dir=state, redis_cluster_masters=masters, redis_persistence=False
        ),
    )


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def print_summary(results: dict[str, Any], args: argparse.Namespace, load: float) -> None:
    s, c = results["single"], results["cluster"]
    print(f"load average at start {load:.1f}; {args.procs} client processes, {args.seconds} s each")
    print(
        f"writes (flow's writer, 500 per batch): single {s['writes_s']:,.0f} keys/s, "
        f"{args.masters}-shard cluster {c['writes_s']:,.0f} keys/s "
        f"(x{c['writes_s'] / s['writes_s']:.2f}); Redis CPU per key {s['write_cpu_us']:.1f} "
        f"vs {c['write_cpu_us']:.1f} us (all shards)"
    )
    for shape, what in (("predict", "2 keys"), ("batch", f"{2 * args.batch} keys")):
        a, b = s[shape], c[shape]
        print(
            f"fetch {shape} ({what}): single {a['fetches_s']:,.0f}/s p50 {a['p50_ms']:.3f} ms "
            f"p99 {a['p99_ms']:.3f} ms, Redis CPU {a['redis_cpu_us']:.1f} us | cluster "
            f"{b['fetches_s']:,.0f}/s p50 {b['p50_ms']:.3f} ms p99 {b['p99_ms']:.3f} ms, "
            f"Redis CPU {b['redis_cpu_us']:.1f} us (all shards) | "
            f"ratio x{b['fetches_s'] / a['fetches_s']:.2f}"
        )
    summary = {
        "load": load,
        "masters": args.masters,
        "single": s,
        "cluster": c,
        "ratio": {
            "writes": c["writes_s"] / s["writes_s"],
            "predict": c["predict"]["fetches_s"] / s["predict"]["fetches_s"],
            "batch": c["batch"]["fetches_s"] / s["batch"]["fetches_s"],
        },
    }
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
