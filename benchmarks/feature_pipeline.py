"""Throughput and freshness of the features flow, against a plain-consumer baseline.

With the real Kafka broker and Redis (``loopline up``):

1. Throughput, Bytewax: ``--events`` simulated transactions (thousands of cards
   and merchants) are produced to a fresh topic first; then the features flow
   (one worker, recovery on, the production code path) consumes them, with a
   snapshot every 5 s (more often than the default 30 s, so their cost shows
   in a short run). Events/s = events / (last Redis write - first record read).
2. Throughput, baseline: the practical limit without Bytewax. A bare
   confluent-kafka consumer reads the same topic and does the same work with
   the same code: parse and validate, lateness gate, the same feature shards,
   the same batched write-if-newer Redis writes. Both runs must leave the same
   values in Redis (checked).
3. Freshness: a separate process produces at a fixed ``--rate`` (5,000/s) for
   ``--seconds`` (45: the run spans one snapshot at the default interval, whose
   stall counts), each event timed at its send (event_time = send wall clock,
   ms); the flow runs live with the default settings and each Redis write
   records write time - event time of the oldest event it makes visible:
   producer send -> value visible in Redis.

Run: ``python benchmarks/feature_pipeline.py [--events 200000] [--rate 5000]
[--seconds 45]``. It prints a summary, then one JSON object on the last line
with ``throughput_eps``, ``baseline_throughput_eps``, ``throughput_ratio``,
``freshness_p50_ms``, ``freshness_p99_ms``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client import REGISTRY
from support.flow_runs import produce_simulated

from loopline.config.kafka import consumer_config
from loopline.config.loader import load_settings
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.stack import delete_topics, ensure_topics
from loopline.streams.common.records import SourceRecord
from loopline.streams.features.aggregation import FeatureShard, FeatureWrite
from loopline.streams.features.config import FeatureFlowConfig
from loopline.streams.features.decoding import EventDecoder
from loopline.streams.features.metrics import feature_metrics
from loopline.streams.features.redis_sink import FeatureWriter
from loopline.streams.features.run import RunOptions, run_features

TARGET_EPS = 20_000
TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _settings(base: Settings, prefix: str, key_prefix: str) -> Settings:
    return replace(
        base,
        kafka=replace(base.kafka, topic_prefix=prefix),
        streams=replace(base.streams, redis_key_prefix=key_prefix),
    )


# -- data ---------------------------------------------------------------------------
def _paced_producer(bootstrap: str, topic: str, rate: float, seconds: float, start_at: float):  # type: ignore[no-untyped-def]
    """Child process: produce at ``rate``/s, event_time = the send's wall clock."""
    import random

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all"})
    rng = random.Random(7)
    while time.time() < start_at:
        time.sleep(0.01)
    t0 = time.monotonic()
    n_total = int(rate * seconds)
    failed = 0

    def on_delivery(err, _msg):  # type: ignore[no-untyped-def]
        nonlocal failed
        if err is not None:
            failed += 1

    for i in range(n_total):
        due = t0 + i / rate
        wait = due - time.monotonic()
        if wait > 0.0005:
            time.sleep(wait)
        card = f"c{rng.randrange(20_000)}"
        doc = (
            f'{{"event_id":"f{i}","card_id":"{card}","merchant_id":"m{rng.randrange(2000)}",'
            f'"amount":{round(rng.lognormvariate(3.4, 0.8), 2)},'
            f'"event_time":{int(time.time() * 1000)}}}'
        )
        p.produce(topic, doc.encode(), key=card.encode(), on_delivery=on_delivery)
        p.poll(0)
    p.flush(60)
    if failed:
        raise SystemExit(f"{failed} paced deliveries failed")


# -- measured runs ------------------------------------------------------------------
class _WriteClock:
    """The flow's Redis sink calls this after each write."""

    def __init__(self) -> None:
        self.last = 0.0
        self.last_cpu = 0.0
        self.freshness_ms: list[float] = []
        self.record = False

    def __call__(self, writes: Sequence[FeatureWrite], now: float) -> None:
        self.last = now
        self.last_cpu = time.process_time()
        if self.record:
            now_ms = now * 1000.0
            self.freshness_ms.extend(now_ms - w.oldest_ms for w in writes if w.oldest_ms)


def _records_read() -> float:
    feature_metrics()  # registered on first use
    return REGISTRY.get_sample_value("loopline_features_records_total") or 0.0


def _first_read_time(stop: threading.Event, out: list[float]) -> None:
    start = _records_read()  # the counter is process-wide
    while not stop.is_set():
        if _records_read() > start:
            out += [time.time(), time.process_time()]
            return
        time.sleep(0.02)


def bytewax_throughput(settings: Settings, n: int, recovery: Path) -> tuple[float, float]:
    """Events/s, and the process's CPU seconds per event (all its threads)."""
    clock = _WriteClock()
    stop, first = threading.Event(), []
    watcher = threading.Thread(target=_first_read_time, args=(stop, first), daemon=True)
    watcher.start()
    run_features(
        settings,
        RunOptions(recovery=True, recovery_path=recovery, metrics=False, drain_idle_s=1.0),
        on_written=clock,
    )
    stop.set()
    if not first:
        raise SystemExit("the flow read nothing")
    return n / (clock.last - first[0]), (clock.last_cpu - first[1]) / n


def baseline_throughput(settings: Settings, n: int) -> tuple[float, float]:
    """A bare consumer doing the flow's work with the flow's code, no Bytewax."""
    cfg = FeatureFlowConfig.from_settings(settings)
    conf = consumer_config(settings.kafka, f"baseline-{uuid.uuid4().hex[:6]}")
    conf["enable.partition.eof"] = True
    consumer = Consumer(conf)
    parts = settings.topics.partitions
    consumer.assign([TopicPartition(cfg.topic, p, -2) for p in range(parts)])
    decoders = {
        p: EventDecoder(
            cfg.feature_set,
            cfg.sources[0][1],
            shards=cfg.shards,
            allowed_lateness_s=cfg.allowed_lateness_s,
            max_future_s=cfg.max_future_s,
        )
        for p in range(parts)
    }
    shards: dict[int, FeatureShard] = {}
    client = redis.Redis(host=settings.redis.host, port=settings.redis.port)
    writer = FeatureWriter(client, cfg.ttl_s)
    ended: set[int] = set()
    first = last = first_cpu = last_cpu = 0.0
    while len(ended) < parts:
        msgs = consumer.consume(cfg.batch_size, 0.1)
        if msgs and not first:
            first, first_cpu = time.time(), time.process_time()
        by_part: dict[int, list[SourceRecord]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
                continue
            ended.discard(m.partition())
            by_part.setdefault(m.partition(), []).append(
                SourceRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value())
            )
        writes: list[FeatureWrite] = []
        for part, records in by_part.items():
            batch = decoders[part].decode(records)
            for s, updates in batch.by_shard.items():
                shard = shards.get(s)
                if shard is None:
                    shard = shards[s] = FeatureShard(
                        cfg.feature_set, cfg.layout, evict_after_s=cfg.evict_after_s
                    )
                writes.extend(shard.apply(updates).writes)
        if writes:
            writer.write(writes)
            last, last_cpu = time.time(), time.process_time()
    consumer.close()
    writer.close()
    return n / (last - first), (last_cpu - first_cpu) / n


def freshness(
    settings: Settings, recovery: Path, rate: float, seconds: float
) -> tuple[list[float], float]:
    clock = _WriteClock()
    clock.record = True
    # Time for the flow to start and reach the partitions; it stops once idle
    # for longer than that after the producer is done.
    start_at = time.time() + 4.0
    child = multiprocessing.get_context("spawn").Process(
        target=_paced_producer,
        args=(settings.kafka.bootstrap_servers, Topics(settings.kafka.topic_prefix).events),
        kwargs={"rate": rate, "seconds": seconds, "start_at": start_at},
    )
    child.start()
    run_features(
        settings,
        RunOptions(recovery=True, recovery_path=recovery, metrics=False, drain_idle_s=6.0),
        on_written=clock,
    )
    child.join(60)
    if child.exitcode != 0:
        raise SystemExit(f"the paced producer failed (exit {child.exitcode})")
    return clock.freshness_ms, time.time() - start_at


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)]


def _same_store(client: redis.Redis, a: str, b: str) -> tuple[bool, int]:
    def dump(prefix: str) -> dict[bytes, bytes]:
        keys = list(client.scan_iter(match=f"{prefix}:f:*", count=2000))
        vals = client.mget(keys) if keys else []
        return {k[len(prefix) :]: v for k, v in zip(keys, vals, strict=True)}

    da, db = dump(a), dump(b)
    return da == db, len(da)


def _cleanup(client: redis.Redis, prefixes: Sequence[str]) -> None:
    for prefix in prefixes:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=2000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="events for the throughput runs")
    ap.add_argument("--rate", type=float, default=5000.0, help="events/s for freshness")
    ap.add_argument("--seconds", type=float, default=45.0, help="duration of the freshness run")
    args = ap.parse_args(argv)

    base = load_settings()
    load_before = os.getloadavg()[0]
    run_id = uuid.uuid4().hex[:8]
    tput_topics = Topics(f"bench{run_id}.")
    fresh_topics = Topics(f"bench{run_id}f.")
    prefixes = [f"bench{run_id}bw", f"bench{run_id}bl", f"bench{run_id}fr"]
    s_bw = _settings(base, tput_topics.prefix, prefixes[0])
    s_bw = replace(s_bw, streams=replace(s_bw.streams, features_snapshot_interval_s=5.0))
    s_bl = _settings(base, tput_topics.prefix, prefixes[1])
    s_fr = _settings(base, fresh_topics.prefix, prefixes[2])
    client = redis.Redis(host=base.redis.host, port=base.redis.port, socket_timeout=30)
    client.ping()
    tmp = Path(tempfile.mkdtemp(prefix="loopline-bench-"))
    try:
        ensure_topics(s_bw, tput_topics)
        ensure_topics(s_fr, fresh_topics)
        _say(f"producing {args.events} simulated events to {tput_topics.events} ...")
        produce_simulated(s_bw, tput_topics.events, args.events, cards=20_000)

        _say("throughput: Bytewax features flow, 1 worker, recovery on (snapshot every 5 s) ...")
        eps, cpu = bytewax_throughput(s_bw, args.events, tmp / "recovery-tput")
        _say(f"  {eps:,.0f} events/s, {cpu * 1e6:.0f} us CPU per event")
        _say("throughput: baseline (bare confluent-kafka consumer, same work) ...")
        base_eps, base_cpu = baseline_throughput(s_bl, args.events)
        _say(f"  {base_eps:,.0f} events/s, {base_cpu * 1e6:.0f} us CPU per event")
        same, keys = _same_store(client, prefixes[0], prefixes[1])
        if not same:
            raise SystemExit("the flow and the baseline left different values in Redis")
        _say(f"  both left the same {keys} values in Redis")

        _say(
            f"freshness: {args.rate:,.0f} events/s for {args.seconds:.0f} s, flow running live ..."
        )
        samples, _ = freshness(s_fr, tmp / "recovery-fresh", args.rate, args.seconds)
        if not samples:
            raise SystemExit("no freshness samples")
        p50, p99 = _quantile(samples, 0.5), _quantile(samples, 0.99)
    finally:
        _cleanup(client, prefixes)
        shutil.rmtree(tmp, ignore_errors=True)
        for topics, s in ((tput_topics, s_bw), (fresh_topics, s_fr)):
            try:
                delete_topics(s, topics.all(), timeout_s=30)
            except Exception as e:  # best effort: leftovers only cost disk
                _say(f"(could not delete {topics.prefix}* topics: {e})")

    ratio = eps / base_eps
    rows = [
        ("throughput", f"{eps:,.0f} events/s", f"target >= {TARGET_EPS:,}; {args.events:,} events"),
        ("baseline", f"{base_eps:,.0f} events/s", "bare confluent-kafka consumer, same work"),
        ("ratio", f"{ratio:.2f}", f"target >= {TARGET_RATIO}"),
        (
            "CPU/event",
            f"{cpu * 1e6:.0f} us vs {base_cpu * 1e6:.0f} us",
            f"flow vs baseline process CPU, all threads; 1/CPU = {1 / cpu:,.0f} events/CPU-s",
        ),
        (
            "freshness",
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            f"at {args.rate:,.0f} events/s, {len(samples):,} writes, mean "
            f"{statistics.fmean(samples):.1f} ms; target p99 <= {TARGET_P99_MS:.0f} ms",
        ),
    ]
    print(
        f"features pipeline (real Kafka + Redis, 1 worker; {os.cpu_count()} cores, load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after: other work on the machine "
        "slows every figure)"
    )
    for name, value, note in rows:
        print(f"  {name:<10} {value:>28}  ({note})")
    print(
        json.dumps(
            {
                "throughput_eps": round(eps, 1),
                "baseline_throughput_eps": round(base_eps, 1),
                "throughput_ratio": round(ratio, 3),
                "freshness_p50_ms": round(p50, 2),
                "freshness_p99_ms": round(p99, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
