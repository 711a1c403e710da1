"""The features flow's memory as a burst of events fills its windows: state, not buffers.

The chaos backlog scenario saw the flow's RSS rise 160 -> 422 MiB over a
1,000,000-event backlog and could not tell window state from buffers. This
runs the flow's own pure steps in one process, with no Kafka and no Bytewax
(one partition's ``EventDecoder``, one ``FeatureShard``), over the scenario's
traffic: the chaos load's fraud events (2,000 cards, 200 merchants) at
``--rate`` events per second of event time, as the stalled backlog arrives.
At each mark it prints the process RSS growth, the live Python memory
(``--trace``: tracemalloc, slower) and the size of the state as the flow
snapshots it; with ``--trace`` also the lines holding the most memory.

Run: ``python benchmarks/feature_state_memory.py [--events 1000000] [--trace]``.
Needs no servers. One JSON line at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import random
import time
import tracemalloc

from support.chaos_load import N_CARDS, N_MERCHANTS, fraud_event
from support.proc_tree import rss_bytes

from loopline.contracts.redis_layout import RedisLayout
from loopline.featurecore.event_schema import EventParser
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.streams.common.records import SourceRecord
from loopline.streams.features.aggregation import FeatureShard
from loopline.streams.features.decoding import EventDecoder

MIB = 1024 * 1024
BATCH = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2100.0, help="events per s of event time")
    parser.add_argument("--trace", action="store_true", help="live memory with tracemalloc")
    args = parser.parse_args()
    if args.trace:
        tracemalloc.start()
    project = load_project(builtin_example())
    fs = project.feature_set()
    keys = {k for v in fs.views for k in v.key_fields}
    decoder = EventDecoder(
        fs, EventParser(project.sources[0], keys), shards=1, allowed_lateness_s=60
    )
    shard = FeatureShard(fs, RedisLayout("bench"))
    rng = random.Random(1)
    start_ms = int(time.time() * 1000)
    marks = sorted({m for m in (4_000, 100_000, 300_000, args.events) if m <= args.events})
    gc.collect()
    base = rss_bytes(os.getpid())
    print(
        f"{args.events:,} fraud events over {N_CARDS:,} cards and {N_MERCHANTS} merchants, "
        f"{args.rate:,.0f} per s of event time ({args.events / args.rate:,.0f} s)",
        flush=True,
    )
    rows = []
    batch: list[SourceRecord] = []
    for n in range(1, args.events + 1):
        now_ms = start_ms + int(n / args.rate * 1000)
        event = fraud_event(rng, n, now_ms, "m")
        raw = json.dumps(event).encode()
        batch.append(SourceRecord("events", 0, n, event["card_id"].encode(), raw))
        if len(batch) == BATCH or n == args.events:
            for updates in decoder.decode(batch, now_ms=now_ms).by_shard.values():
                shard.apply(updates)
            batch = []
        if n in marks:
            gc.collect()
            state = len(pickle.dumps(shard.snapshot())) + len(
                pickle.dumps(decoder.recent.snapshot())
            )
            row = {
                "events": n,
                "rss_growth_mib": round((rss_bytes(os.getpid()) - base) / MIB, 1),
                "state_pickled_mib": round(state / MIB, 2),
                "entities": len(shard),
                "dedup_ids": len(decoder.recent),
            }
            if args.trace:
                row["live_mib"] = round(tracemalloc.get_traced_memory()[0] / MIB, 1)
            rows.append(row)
            print("  " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.trace:
        print("where the live memory is (tracemalloc, top 6 lines):")
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:6]:
            print(f"  {stat}")
    print(json.dumps({"rows": rows, "load_avg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
