"""The demo's client side: transactions scored over gRPC, then sent to Kafka.

A card network asks for a score while authorizing a payment, before the
payment becomes an event; the outcome (chargeback or not) follows later. The
driver does the same for every simulated transaction, paced in real time.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
from confluent_kafka import Producer

from loopline.contracts.errors import DeliveryError
from loopline.contracts.schemas import Outcome, Transaction, encode
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc


@dataclass
class PredictRecord:
    """One Predict call as the client saw it."""

    wall_s: float
    latency_ms: float
    ok: bool
    model_version: str = ""
    score: float = float("nan")
    label: int = 0
    error: str = ""


@dataclass
class TrafficStats:
    """What the driver did; read by the console while it runs."""

    events_sent: int = 0
    outcomes_sent: int = 0
    records: list[PredictRecord] = field(default_factory=list)
    behind_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failures(self) -> list[PredictRecord]:
        with self.lock:
            return [r for r in self.records if not r.ok]

    def versions_served(self) -> list[str]:
        with self.lock:
            seen: dict[str, None] = {}
            for r in self.records:
                if r.ok:
                    seen.setdefault(r.model_version)
            return list(seen)


class CheckedProducer:
    """A producer whose every message must be acknowledged (failures are raised, not lost)."""

    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self.failed: list[str] = []

    def _done(self, err: object, msg: object) -> None:
        if err is not None:
            self.failed.append(str(err))

    def send(self, topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key.encode(), on_delivery=self._done)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        left = self._producer.flush(timeout_s)
        if left or self.failed:
            raise DeliveryError(
                f"{left} message(s) undelivered, {len(self.failed)} failed: {self.failed[:3]}"
            )


def restamp(tx: Transaction, offset_ms: int) -> Transaction:
    return dataclasses.replace(tx, event_time=tx.event_time + offset_ms)


class Driver:
    """Paces transactions in real time: Predict, produce the event, later its outcome."""

    def __init__(
        self,
        *,
        target: str,
        producer: CheckedProducer,
        events_topic: str,
        outcomes_topic: str,
        stats: TrafficStats,
        deadline_s: float = 3.0,
    ) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.InferenceStub(self.channel)
        self.producer = producer
        self.events_topic = events_topic
        self.outcomes_topic = outcomes_topic
        self.stats = stats
        self.deadline_s = deadline_s
        self._due: list[tuple[int, int, Outcome]] = []
        self._seq = itertools.count()

    def run(
        self,
        live: Iterator[tuple[Transaction, int, float]],
        stop: threading.Event,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """Send each ``(transaction, label, outcome_delay_s)`` when its event time comes."""
        for tx, label, delay_s in live:
            if stop.is_set():
                break
            wait_s = tx.event_time / 1000 - time.time()
            if wait_s > 0:
                self._flush_outcomes(tx.event_time)
                stop.wait(wait_s)
            else:
                self.stats.behind_s = -wait_s
            self._flush_outcomes(tx.event_time)
            self._score(tx, label)
            self.producer.send(self.events_topic, tx.card_id, encode(tx))
            self.stats.events_sent += 1
            out = Outcome(tx.event_id, label, tx.event_time + int(delay_s * 1000))
            heapq.heappush(self._due, (out.event_time, next(self._seq), out))
            if on_tick is not None:
                on_tick()

    def drain_outcomes(self, until_ms: int, stop: threading.Event) -> None:
        """Keep sending outcomes as they come due, up to ``until_ms`` (wall clock)."""
        while self._due and not stop.is_set():
            now = int(time.time() * 1000)
            if now >= until_ms:
                break
            self._flush_outcomes(now)
            stop.wait(0.05)

    def close(self) -> None:
        self.channel.close()

    def _flush_outcomes(self, now_ms: int) -> None:
        while self._due and self._due[0][0] <= now_ms:
            out = heapq.heappop(self._due)[2]
            self.producer.send(self.outcomes_topic, out.event_id, encode(out))
            self.stats.outcomes_sent += 1

    def _score(self, tx: Transaction, label: int) -> None:
        request = pb.PredictRequest(
            request_id=tx.event_id,
            event_id=tx.event_id,
            entities={"card_id": tx.card_id, "merchant_id": tx.merchant_id},
            fields={"amount": tx.amount},
            event_time_ms=tx.event_time,
        )
        start = time.perf_counter()
        try:
            reply = self.stub.Predict(request, timeout=self.deadline_s)
        except grpc.RpcError as e:
            record = PredictRecord(
                wall_s=time.time(),
                latency_ms=(time.perf_counter() - start) * 1000,
                ok=False,
                label=label,
                error=f"{e.code().name}: {e.details()}",
            )
        else:
            record = PredictRecord(
                wall_s=time.time(),
                latency_ms=(time.perf_counter() - start) * 1000,
                ok=True,
                model_version=reply.model_version,
                score=reply.score,
                label=label,
            )
        with self.stats.lock:
            self.stats.records.append(record)
