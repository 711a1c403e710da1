"""The features flow falls behind by a large backlog, then catches up.

A real ``loopline run features`` (1 process, recovery on) on the run's own
events topic and Redis key prefix reads live traffic (``--events-per-s``,
fraud-shaped events stamped with the wall clock, over a fixed set of cards
and merchants, so the flow's state does not grow with the backlog). After a
warm-up the flow stalls (SIGSTOP of its process group, as a frozen node or a
long pause would) while ``--backlog-events`` more (1,000,000 by default) are
produced as fast as the producer goes, then resumes (SIGCONT) and catches up;
live traffic goes on throughout, until the freshness condition clears.

Sampled every second from outside, as an operator would: the flow's
``/metrics`` (records read, dead letters, consumer lag, the freshness
histogram) and ``/proc`` (RSS and open files of its process tree). The alert
conditions of ``deploy/prometheus/rules/loopline.rules.yml`` are evaluated on
those samples: ``LooplineFeaturesConsumerLag`` (lag > 10,000) as written, and
``LooplineFeatureFreshnessSlow`` (p99 > 1 s) over a 30 s window instead of the
rule's 5 m, so a short run can show it rise and clear; whether the real alert
would have fired depends on its ``for`` (5 and 10 minutes), reported beside.
Invariants: every event read, none dead-lettered, both conditions cleared
after the catch-up, and RSS bounded (peak under twice the warm-up's).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from loopline.stack.ports import free_port
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_scenarios._rig import ChaosRun
from support.chaos_stack import poll_until, wait_or_fail
from support.proc_tree import tree_now

NAME = "backlog"
SUMMARY = "features flow behind by a large backlog, caught up: alarms fire and clear, RSS bounded"
# Few enough that the warm-up sees nearly every entity: state does not grow in the backlog.
CARDS, MERCHANTS = 2_000, 500
WARMUP_S = 20.0
CLEAR_TIMEOUT_S = 300.0  # live traffic after the catch-up, until freshness clears
FRESHNESS_WINDOW_S = 30.0
LAG_LIMIT = 10_000  # LooplineFeaturesConsumerLag
FRESHNESS_LIMIT_S = 1.0  # LooplineFeatureFreshnessSlow
RULE_FOR_S = {"consumer_lag": 300.0, "freshness": 600.0}


@dataclass
class Sample:
    at: float
    records: float
    dead_letters: float
    lag: float
    buckets: dict[float, float]
    rss: int
    fds: int


def run(options: ChaosOptions) -> ScenarioResult:
    rig = ChaosRun.start(history_events=0, seed=options.seed)
    try:
        return _run(rig, options)
    finally:
        rig.close()


def _event(rng: random.Random) -> bytes:
    card = f"c{rng.randrange(CARDS)}"
    record = {
        "event_id": uuid.uuid4().hex,
        "card_id": card,
        "merchant_id": f"m{rng.randrange(MERCHANTS)}",
        "amount": round(rng.uniform(1, 500), 2),
        "event_time": int(time.time() * 1000),
    }
    return json.dumps(record, separators=(",", ":")).encode()


class Producing:
    """Live traffic at ``rate`` per second, and a backlog burst on request."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seed: int) -> None:
        self.topic = topic
        self.rate = rate
        self.rng = random.Random(seed)
        self.sent = 0
        self.failed: list[str] = []
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                                  "compression.type": "lz4",
                                  "queue.buffering.max.messages": 1_000_000})  # fmt: skip
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._live, daemon=True)

    def _send(self, n: int) -> None:
        with self.lock:
            for _ in range(n):
                value = _event(self.rng)
                while True:
                    try:
                        self.producer.produce(self.topic, value, on_delivery=self._delivered)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                self.sent += 1
            self.producer.poll(0)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))

    def _live(self) -> None:
        tick = 0.05
        while not self.stop.is_set():
            self._send(max(1, round(self.rate * tick)))
            self.stop.wait(tick)

    def burst(self, n: int) -> float:
        """Produce ``n`` events as fast as possible; returns the seconds it took."""
        t = time.monotonic()
        for _ in range(n // 10_000):
            self._send(10_000)
        self._send(n % 10_000)
        self.producer.flush(300)
        return time.monotonic() - t

    def close(self) -> int:
        self.stop.set()
        self.thread.join(5)
        if self.producer.flush(120):
            self.failed.append("unflushed messages")
        return self.sent


def _scrape(port: int) -> tuple[float, float, float, dict[float, float]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    records = dead = lag = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "loopline_features_records_total":
                records += s.value
            elif s.name == "loopline_features_dead_letters_total":
                dead += s.value
            elif s.name == "loopline_features_consumer_lag":
                lag += s.value
            elif s.name == "loopline_features_freshness_seconds_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return records, dead, lag, buckets


def p99_between(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The p99 (s) of the observations between two scrapes: the upper bound of the bucket
    holding the rank, as ``histogram_quantile`` answers at a bucket edge."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = 0.99 * counts[-1]
    return next(b for b, c in zip(bounds, counts, strict=True) if c >= rank)


def _spans(flags: list[tuple[float, bool]]) -> tuple[float | None, float | None, float]:
    """First time true, last time true, and the longest run of true (s)."""
    first = last = None
    longest = 0.0
    run_start = None
    for at, on in flags:
        if on:
            first = at if first is None else first
            last = at
            run_start = at if run_start is None else run_start
            longest = max(longest, at - run_start)
        else:
            run_start = None
    return first, last, longest


def _run(rig: ChaosRun, options: ChaosOptions) -> ScenarioResult:
    s = rig.bench.settings
    port = free_port()
    recovery = rig.work / "recovery"
    flow = rig.proc("features", "run", "features", "--recovery-dir", str(recovery),
                    env={"LOOPLINE_STREAMS__METRICS_PORT": str(port)})  # fmt: skip
    flow.start()
    wait_or_fail("the flow's metrics", lambda: _scrape(port), 120, 0.5)
    producing = Producing(s.kafka.bootstrap_servers, rig.bench.topics.events,
                          options.events_per_s, options.seed)  # fmt: skip
    producing.thread.start()
    samples: list[Sample] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            got = _scrape(port)
            if got is not None:
                rss, fds = tree_now(flow.pid)
                samples.append(Sample(time.monotonic(), *got, rss, fds))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    time.sleep(WARMUP_S)
    # The flow stalls (SIGSTOP of its process group: a frozen node, a long pause)
    # while the backlog and live traffic pile up on the topic, then resumes.
    os.killpg(flow.pid, signal.SIGSTOP)
    backlog_at = time.monotonic()
    try:
        burst_s = producing.burst(options.backlog_events)
    finally:
        os.killpg(flow.pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    produced_by_burst_end = producing.sent
    caught = wait_or_fail(
        "caught up",
        lambda: (
            samples
            and samples[-1].at > resumed_at
            and samples[-1].records >= produced_by_burst_end
            and samples[-1].lag <= options.events_per_s  # within a second of live traffic
            and samples[-1].at
        ),
        7200,
        0.5,
    )
    # Live traffic goes on until the freshness condition clears (or not: reported).
    poll_until(lambda: _fresh_again(samples, caught), CLEAR_TIMEOUT_S, 1.0)
    total = producing.close()
    wait_or_fail("every event read", lambda: samples[-1].records >= total, 300, 0.5)
    time.sleep(1.5)
    stop.set()
    sampler.join(5)
    flow.stop()
    return _result(samples, t0=t0, backlog_at=backlog_at, burst_s=burst_s, caught_at=caught,
                   resumed_at=resumed_at, total=total, producing=producing,
                   options=options)  # fmt: skip


def _window_p99(samples: list[Sample], x: Sample) -> float | None:
    """The freshness p99 (s) over the FRESHNESS_WINDOW_S before sample ``x``."""
    base = next((y for y in samples if y.at >= x.at - FRESHNESS_WINDOW_S), None)
    return None if base is None or base is x else p99_between(base.buckets, x.buckets)


def _fresh_again(samples: list[Sample], since: float) -> bool:
    last = samples[-1]
    if last.at < since + FRESHNESS_WINDOW_S:
        return False
    p99 = _window_p99(samples, last)
    return p99 is not None and p99 <= FRESHNESS_LIMIT_S


def _result(
    samples: list[Sample],
    *,
    t0: float,
    backlog_at: float,
    burst_s: float,
    caught_at: float,
    resumed_at: float,
    total: int,
    producing: Producing,
    options: ChaosOptions,
) -> ScenarioResult:
    lag_flags = [(x.at, x.lag > LAG_LIMIT) for x in samples]
    fresh: list[tuple[float, bool]] = []
    p99s: list[tuple[float, float]] = []
    for x in samples:
        p99 = _window_p99(samples, x)
        if p99 is not None:
            fresh.append((x.at, p99 > FRESHNESS_LIMIT_S))
            p99s.append((x.at, p99))
    warm = [x for x in samples if x.at < backlog_at]
    baseline_rss = warm[-1].rss if warm else samples[0].rss
    peak = max(samples, key=lambda x: x.rss)
    end = samples[-1]
    alarms = {}
    for name, flags in (("consumer_lag", lag_flags), ("freshness", fresh)):
        first, last, longest = _spans(flags)
        cleared = bool(flags) and not flags[-1][1]
        alarms[name] = {
            "raised_s": None if first is None else round(first - backlog_at, 1),
            "cleared_s": None if last is None else round(last - backlog_at, 1),
            "longest_s": round(longest, 1),
            "cleared_at_end": cleared,
            "real_alert_fires": longest >= RULE_FOR_S[name],
        }
    checks = {
        "every_event_read": end.records == total,
        "no_dead_letters": end.dead_letters == 0,
        "producer_lost_nothing": not producing.failed,
        "lag_alarm_raised_and_cleared": alarms["consumer_lag"]["raised_s"] is not None
        and alarms["consumer_lag"]["cleared_at_end"],
        "freshness_alarm_raised_and_cleared": alarms["freshness"]["raised_s"] is not None
        and alarms["freshness"]["cleared_at_end"],
        "rss_bounded": peak.rss <= 2 * baseline_rss,
    }
    timeline = [
        {"t": round(x.at - t0), "records": int(x.records), "lag": int(x.lag),
         "rss_mib": round(x.rss / 2**20)}
        for x in samples[:: max(1, len(samples) // 40)]
    ]  # fmt: skip
    details: dict[str, Any] = {
        "backlog_events": options.backlog_events,
        "burst_produce_s": round(burst_s, 1),
        "stalled_s": round(resumed_at - backlog_at, 1),
        "catch_up_s_after_resume": round(caught_at - resumed_at, 1),
        "catch_up_events_per_s": round(
            (options.backlog_events + options.events_per_s * (caught_at - backlog_at))
            / max(caught_at - resumed_at, 1e-9)
        ),
        "max_lag": int(max(x.lag for x in samples)),
        "warmup_p99_freshness_s": _window_p99(samples, warm[-1]) if warm else None,
        "max_p99_freshness_s": max((p for _, p in p99s), default=None),
        "end_p99_freshness_s": p99s[-1][1] if p99s else None,
        # (seconds after the stall began, p99 over the window before): its rise and fall.
        "p99_freshness_timeline": [
            (round(at - backlog_at), p) for at, p in p99s[:: max(1, len(p99s) // 30)]
        ],
        "alarms": alarms,
        "rss_mib": {
            "warmup": round(baseline_rss / 2**20),
            "peak": round(peak.rss / 2**20),
            "end": round(end.rss / 2**20),
            "peak_at_s": round(peak.at - backlog_at),
        },
        "open_fds": {"warmup": warm[-1].fds if warm else None, "end": end.fds},
        "timeline": timeline,
        "checks": checks,
    }
    return ScenarioResult(
        scenario=NAME,
        events_sent=total,
        events_acked=total - len(producing.failed),
        events_lost=int(total - end.records),
        recovery_s=round(caught_at - resumed_at, 1),
        invariant_ok=all(checks.values()),
        details=details,
    )
