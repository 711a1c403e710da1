"""What the demo reports comes from the running system: metrics and topics.

:class:`MetricsScraper` reads each service's Prometheus endpoint on a period
and keeps the series the report needs; :class:`TopicWatcher` follows the
drift, retrain and model-updates topics.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError
from prometheus_client.parser import text_string_to_metric_families

from loopline.contracts import metric_names as mn
from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import DriftEvent, LabeledExample, ModelUpdate, RetrainEvent, decode

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout_s: float = 2.0) -> Samples:
    """Every sample of one endpoint: ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the series called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def buckets(samples: Samples, histogram: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative ``(upper bound, count)`` pairs of a histogram, summed over other labels."""
    acc: dict[float, float] = {}
    want = set(labels.items())
    for (n, ls), v in samples.items():
        if n != histogram + "_bucket" or not want <= set(ls):
            continue
        le = float(dict(ls)["le"])
        acc[le] = acc.get(le, 0.0) + v
    return sorted(acc.items())


def quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile over cumulative buckets (linear within a bucket)."""
    if not cumulative or cumulative[-1][1] <= 0:
        return math.nan
    rank = q * cumulative[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in cumulative:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def delta(
    now: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    old = dict(before)
    return [(le, c - old.get(le, 0.0)) for le, c in now]


@dataclass
class Point:
    """One scrape of every service, reduced to what the report plots."""

    wall_s: float
    events_total: float
    predictions_ok: float
    predictions_failed: float
    freshness_p50_s: float
    freshness_p99_s: float
    serve_p50_s: float
    serve_p99_s: float
    model_versions: list[str]
    drift_alarms: float


class MetricsScraper:
    """Scrapes the services every ``period_s`` in a thread; keeps :class:`Point` s."""

    def __init__(self, endpoints: Mapping[str, str], period_s: float = 1.0) -> None:
        self.endpoints = dict(endpoints)
        self.period_s = period_s
        self.points: list[Point] = []
        self.last: dict[str, Samples] = {}
        # Samples when live traffic began: the report's figures are deltas from
        # here, so the replayed history does not count in them.
        self.baseline: dict[str, Samples] = {}
        self.errors: dict[str, str] = {}
        self._prev: dict[str, Samples] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-scraper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.scrape_once()

    def mark_baseline(self) -> None:
        self.scrape_once()
        self.baseline = dict(self.last)

    def live_buckets(
        self, service: str, histogram: str, **labels: str
    ) -> list[tuple[float, float]]:
        """A histogram's buckets over the live phase only."""
        return delta(
            buckets(self.last.get(service, {}), histogram, **labels),
            buckets(self.baseline.get(service, {}), histogram, **labels),
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.scrape_once()

    def scrape_once(self) -> None:
        now: dict[str, Samples] = {}
        for name, url in self.endpoints.items():
            try:
                now[name] = scrape(url)
            except OSError as e:
                self.errors[name] = str(e)
                now[name] = self.last.get(name, {})
        prev = self.last or now
        self.last = now
        serving, features = now.get("serve", {}), now.get("features", {})
        drift = now.get("drift", {})
        fresh = delta(
            buckets(features, mn.FEATURES_FRESHNESS_SECONDS.name),
            buckets(prev.get("features", {}), mn.FEATURES_FRESHNESS_SECONDS.name),
        )
        serve = delta(
            buckets(serving, mn.SERVING_STAGE_SECONDS.name, stage="total"),
            buckets(prev.get("serve", {}), mn.SERVING_STAGE_SECONDS.name, stage="total"),
        )
        requests = mn.SERVING_REQUESTS.series
        ok = total(serving, requests, method="Predict", code="OK")
        versions = sorted(
            dict(ls)["version"]
            for (n, ls), v in serving.items()
            if n == mn.SERVING_MODEL_INFO.name and v == 1
        )
        self.points.append(
            Point(
                wall_s=time.time(),
                events_total=total(features, mn.FEATURES_EVENTS.series),
                predictions_ok=ok,
                predictions_failed=total(serving, requests, method="Predict") - ok,
                freshness_p50_s=quantile(fresh, 0.5),
                freshness_p99_s=quantile(fresh, 0.99),
                serve_p50_s=quantile(serve, 0.5),
                serve_p99_s=quantile(serve, 0.99),
                model_versions=versions,
                drift_alarms=total(drift, mn.DRIFT_ALARMS.series),
            )
        )


@dataclass
class Happenings:
    """Drift alarms, retrain requests and model updates, in arrival order."""

    drift: list[DriftEvent] = field(default_factory=list)
    retrain: list[RetrainEvent] = field(default_factory=list)
    model_updates: list[ModelUpdate] = field(default_factory=list)


class TopicWatcher:
    """Follows the drift, retrain and model-updates topics from their start."""

    def __init__(self, kafka_conf: dict[str, Any], drift: str, retrain: str, updates: str) -> None:
        self.topics = {drift: DriftEvent, retrain: RetrainEvent, updates: ModelUpdate}
        self.happened = Happenings()
        self.undecodable = 0
        self._conf = {
            **kafka_conf,
            "group.id": f"loopline-demo-watch-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-topics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        consumer = Consumer(self._conf)
        consumer.subscribe(list(self.topics))
        lists: dict[type, list[Any]] = {
            DriftEvent: self.happened.drift,
            RetrainEvent: self.happened.retrain,
            ModelUpdate: self.happened.model_updates,
        }
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
                    continue
                if msg.error():
                    continue
                cls = self.topics[msg.topic()]
                try:
                    lists[cls].append(decode(cls, msg.value()))
                except SchemaError:
                    self.undecodable += 1  # counted and shown in the report, never fatal
        finally:
            consumer.close()


def read_labeled(
    kafka_conf: dict[str, Any], topic: str, idle_s: float = 3.0
) -> list[LabeledExample]:
    """Every labeled example on ``topic`` (deduplicated by request id)."""
    consumer = Consumer(
        {
            **kafka_conf,
            "group.id": f"loopline-demo-labeled-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: dict[str, LabeledExample] = {}
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            try:
                ex = decode(LabeledExample, msg.value())
            except SchemaError:
                continue  # the labels flow validated it; a foreign writer's junk is skipped
            seen[ex.request_id] = ex
    finally:
        consumer.close()
    return sorted(seen.values(), key=lambda e: e.event_time)
