"""The features flow as real processes (``loopline run features``), timed from outside.

:func:`produce_simulated` fills a topic with the fraud example's simulated
events; :func:`run_features_flow` drains it with the real command at a given
``--processes`` x ``--workers`` and reads its progress the way an operator
would: the Prometheus endpoint of every process (records read, Redis keys
written) and ``/proc`` (CPU and peak RSS of the process tree).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import redis
from confluent_kafka import Producer

from loopline.contracts.settings import Settings
from loopline.featurerepo.loader import builtin_example
from loopline.simulation.api import SimulationConfig, load_simulation
from loopline.simulation.timeline import encode_record
from loopline.stack.ports import free_port_run
from support.proc_tree import TreeUsage, busy_fraction, machine_jiffies

# One sample every 0.1 s: the window is timed to that, and each scrape costs the
# flow a little CPU (its metrics endpoint renders under the GIL).
SAMPLE_S = 0.1
_RECORDS = re.compile(r"^loopline_features_records_total (\S+)$", re.M)
_KEYS = re.compile(r"^loopline_features_redis_keys_total\{[^}]*\} (\S+)$", re.M)


def produce_simulated(settings: Settings, topic: str, n: int, *, cards: int) -> None:
    """``n`` events of the fraud simulator over ``cards`` cards and 2,000 merchants,
    dated within the last hour, keyed by card (spread over every partition)."""
    example = builtin_example()
    if example is None:
        raise SystemExit("the benchmark needs examples/fraud (a source checkout)")
    config = SimulationConfig(
        seed=42,
        start_ms=int(time.time() * 1000) - 3_600_000,
        duration_s=3600.0,
        max_events=n,
        rate=max(n / 3600.0 * 1.3, 1.0),  # ends at max_events, well within the hour
        params={"cards": cards, "merchants": 2_000, "fraud_rate": 0.01},
    )
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    failed: list[str] = []
    for ev in load_simulation(example).simulate(config):
        producer.produce(
            topic,
            encode_record(ev.record, "bench"),
            key=ev.key.encode(),
            on_delivery=lambda err, _msg: err and failed.append(str(err)),
        )
        producer.poll(0)
    if producer.flush(120) or failed:
        raise SystemExit(f"producing the benchmark events failed: {failed[:3]}")


@dataclass(frozen=True)
class FlowRun:
    """One drained run: what it read in its measured window, and what that cost."""

    processes: int
    workers: int
    records: int  # read within the window (the first sample's count excluded)
    seconds: float  # first sample with records read -> last Redis write seen
    cpu_s: float  # the process tree's CPU within the window
    peak_rss: int  # bytes, summed over the processes running the flow
    machine_busy: float  # share of the machine's CPU in use within the window (any process)
    redis_keys: int  # feature values the flow sent to Redis (written or stale), whole run
    events_total: int  # events of the whole run (``records`` counts the window only)

    @property
    def layout(self) -> str:
        return f"{self.processes}x{self.workers}"

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def writes_per_event(self) -> float:
        return self.redis_keys / self.events_total

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.records * 1e6


class Sample(NamedTuple):
    """One look at a running flow."""

    at: float  # monotonic seconds
    records: float  # read so far, every process
    keys: float  # Redis keys sent so far, every process
    tree_cpu_s: float
    machine: tuple[int, int]  # machine_jiffies()


def consecutive_free_ports(n: int) -> int:
    """The first of ``n`` consecutive loopback ports free now (process i serves on +i)."""
    return free_port_run(n)


def _progress(ports: list[int]) -> tuple[float, float]:
    """Records read and Redis keys sent, summed over the processes that answer."""
    records = keys = 0.0
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            continue  # not up yet, or gone
        records += sum(float(v) for v in _RECORDS.findall(text))
        keys += sum(float(v) for v in _KEYS.findall(text))
    return records, keys


def run_features_flow(
    settings: Settings,
    key_prefix: str,
    work: Path,
    *,
    processes: int,
    workers: int,
    expected: int,
    drain_s: float,
    name: str = "",
    timeout_s: float = 600.0,
) -> FlowRun:
    """Drain ``settings``' events topic with ``loopline run features`` (recovery on, a
    fresh recovery directory per ``name``), writing under ``key_prefix``; fails unless
    it read ``expected`` records."""
    layout = f"{name}{processes}x{workers}"
    metrics_port = consecutive_free_ports(processes)
    env = {
        **os.environ,
        "LOOPLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LOOPLINE_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "LOOPLINE_REDIS__HOST": settings.redis.host,
        "LOOPLINE_REDIS__PORT": str(settings.redis.port),
        "LOOPLINE_STREAMS__REDIS_KEY_PREFIX": key_prefix,
        "LOOPLINE_STREAMS__METRICS_PORT": str(metrics_port),
        # Never the repository's own recovery directory.
        "LOOPLINE_STREAMS__RECOVERY_DIR": str(work / f"recovery-default-{layout}"),
    }
    command = [sys.executable, "-m", "loopline.streams", "run", "features"]
    command += ["--workers", str(workers), "--processes", str(processes)]
    command += ["--drain", str(drain_s), "--recovery-dir", str(work / f"recovery-{layout}")]
    log = work / f"flow-{layout}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    usage = TreeUsage(proc.pid)
    ports = [metrics_port + i for i in range(processes)]
    samples: list[Sample] = []
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"flow {layout} did not drain in {timeout_s:.0f} s; see {log}")
        records, keys = _progress(ports)
        samples.append(Sample(time.monotonic(), records, keys, usage.sample(), machine_jiffies()))
        time.sleep(SAMPLE_S)
    if proc.returncode:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"flow {layout} failed (exit {proc.returncode}):\n{tail}")
    return _window(samples, usage, processes, workers, expected)


def _window(
    samples: list[Sample],
    usage: TreeUsage,
    processes: int,
    workers: int,
    expected: int,
) -> FlowRun:
    """The measured window: first sample with records read -> first with the final keys."""
    read = [s for s in samples if s.records > 0]
    if not read or max(s.records for s in read) != expected:
        got = max((s.records for s in samples), default=0)
        raise SystemExit(f"flow {processes}x{workers} read {got:.0f} of {expected} records")
    final_keys = max(s.keys for s in read)
    start = read[0]
    end = next(s for s in read if s.keys == final_keys)
    return FlowRun(
        processes=processes,
        workers=workers,
        records=int(expected - start.records),
        seconds=end.at - start.at,
        cpu_s=end.tree_cpu_s - start.tree_cpu_s,
        peak_rss=usage.largest_peaks_rss(processes),
        machine_busy=busy_fraction(start.machine, end.machine),
        redis_keys=int(final_keys),
        events_total=expected,
    )


def stored_values(store: redis.Redis, key_prefix: str) -> dict[bytes, bytes]:
    """Every feature value under ``key_prefix``, keyed without the prefix."""
    keys = list(store.scan_iter(match=f"{key_prefix}:f:*", count=5000))
    out: dict[bytes, bytes] = {}
    for i in range(0, len(keys), 5000):
        chunk = keys[i : i + 5000]
        for key, value in zip(chunk, store.mget(chunk), strict=True):
            out[key[len(key_prefix) :]] = value
    return out


def redis_cpu_s(store: redis.Redis) -> float:
    """CPU seconds the Redis server has used so far (all clients, not only ours)."""
    cpu = store.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def drop_prefix(store: redis.Redis, key_prefix: str) -> None:
    keys = list(store.scan_iter(match=f"{key_prefix}:*", count=5000))
    for i in range(0, len(keys), 5000):
        store.delete(*keys[i : i + 5000])
