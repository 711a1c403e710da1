"""The load every chaos scenario drives while it injects a fault, and what it counts.

* :class:`EventStream` sends the fraud example's transactions at a steady rate
  from a thread, through an idempotent ``acks=all`` producer whose messages
  outlive a broker restart (``message.timeout.ms``): an event counts as *acked*
  only when its delivery report says so, and :meth:`EventStream.acked_events`
  is what must be found downstream. A ``poison`` callable mixes bad payloads
  in (counted apart, never acked as events). Scored events get an outcome on
  the outcomes topic ``outcome_delay_s`` after their acknowledgement.
* :class:`PredictLoop` calls ``Predict`` from client threads (each call with
  its deadline, optional retries on UNAVAILABLE), counting calls, failures by
  status code, degraded answers and the wall time of every call, and checking
  each answer with an optional ``check`` (a wrong answer is counted apart).

What a scenario checks afterwards is in :mod:`support.chaos_readback`.
"""

from __future__ import annotations

import heapq
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from confluent_kafka import (
    KafkaError,
    Message,
    Producer,
)

from loopline.config.kafka import producer_config
from loopline.contracts.settings import KafkaSettings
from loopline.v1 import inference_pb2 as pb

N_CARDS, N_MERCHANTS = 2_000, 200
# Longer than any broker outage here (a restart took 181 s at load 40): the
# producer keeps retrying idempotently. A message that times out makes
# librdkafka bump the idempotent producer's epoch, and what it had in flight
# can then land twice (measured: 21,929 duplicates with a 180 s timeout).
MESSAGE_TIMEOUT_MS = 600_000
PREDICT = "/loopline.v1.Inference/Predict"
# A fake payload maker: (key, value) of one bad message, given a random source.
Poison = Callable[[random.Random], tuple[bytes, bytes]]


def fraud_event(rng: random.Random, n: int, now_ms: int, tag: str) -> dict[str, Any]:
    """One transaction of the fraud example's schema."""
    return {
        "event_id": f"{tag}-{n}",
        "card_id": f"c{rng.randrange(N_CARDS)}",
        "merchant_id": f"m{rng.randrange(N_MERCHANTS)}",
        "amount": round(rng.lognormvariate(3.3, 0.9), 2),
        "event_time": now_ms,
    }


@dataclass
class EventCounts:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    poison_sent: int = 0
    poison_acked: int = 0
    outcomes_sent: int = 0
    outcomes_acked: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class EventStream:
    """Events (and their outcomes) at ``rate`` per second until :meth:`stop`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        rate: float,
        seed: int = 7,
        tag: str = "ev",
        outcomes_topic: str | None = None,
        outcome_delay_s: float = 2.0,
        poison: Poison | None = None,
        poison_share: float = 0.0,
    ) -> None:
        self.topic = topic
        self.rate = rate
        self.tag = tag
        self.outcomes_topic = outcomes_topic
        self.outcome_delay_s = outcome_delay_s
        self.poison = poison
        self.poison_share = poison_share
        self.counts = EventCounts()
        self._rng = random.Random(seed)
        self._producer = Producer(
            producer_config(kafka, **{"message.timeout.ms": MESSAGE_TIMEOUT_MS, "linger.ms": 5})
        )
        self._events: dict[str, dict[str, Any]] = {}  # event id -> sent document
        self._acked: list[str] = []  # event ids, in acknowledgement order
        self._due: list[tuple[float, str]] = []  # (when, event id) of outcomes to send
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-events", daemon=True)

    def start(self) -> EventStream:
        self._thread.start()
        return self

    def stop(self, flush_s: float = MESSAGE_TIMEOUT_MS / 1000) -> int:
        """Stop sending; wait up to ``flush_s`` for the acknowledgements. Returns how
        many messages were still unacknowledged (then counted as failed)."""
        self._stop.set()
        self._thread.join()
        left = self._producer.flush(flush_s)
        self.counts.failed += left
        return left

    @property
    def events_sent(self) -> int:
        return self.counts.sent

    def acked_events(self) -> list[dict[str, Any]]:
        """Every acknowledged event, in acknowledgement order."""
        with self._lock:
            return [self._events[i] for i in self._acked]

    def _run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stop.is_set():
            # Paced by the clock: a stall (a full local queue) is caught up afterwards.
            due = started + n / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                self._producer.poll(min(wait, 0.05))
                continue
            if self.poison is not None and self._rng.random() < self.poison_share:
                key, value = self.poison(self._rng)
                self._send(value, key, None)
                self.counts.poison_sent += 1
            else:
                doc = fraud_event(self._rng, n, int(time.time() * 1000), self.tag)
                with self._lock:
                    self._events[doc["event_id"]] = doc
                self._send(json.dumps(doc).encode(), doc["card_id"].encode(), doc["event_id"])
                self.counts.sent += 1
            n += 1
            self._send_due_outcomes()
            self._producer.poll(0)

    def _send(self, value: bytes, key: bytes, event_id: str | None) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            self._delivered(err, event_id, value)

        while True:
            try:
                self._producer.produce(self.topic, value, key=key, on_delivery=delivered)
                return
            except BufferError:  # the local queue is full (broker down): wait, never drop
                self._producer.poll(0.05)

    def _delivered(self, err: KafkaError | None, event_id: str | None, value: bytes) -> None:
        c = self.counts
        if err is not None:
            c.failed += 1
            c.errors[str(err)[:120]] += 1
            return
        if event_id is None:
            c.poison_acked += 1
            return
        with self._lock:
            self._acked.append(event_id)
            if self.outcomes_topic is not None:
                when = time.monotonic() + self.outcome_delay_s
                heapq.heappush(self._due, (when, event_id))
        c.acked += 1

    def _send_due_outcomes(self) -> None:
        if self.outcomes_topic is None:
            return
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._due or self._due[0][0] > now:
                    return
                _, event_id = heapq.heappop(self._due)
                doc = self._events[event_id]
            outcome = {
                "event_id": event_id,
                "label": int(self._rng.random() < 0.02),
                "event_time": doc["event_time"] + int(self.outcome_delay_s * 1000),
            }
            self.counts.outcomes_sent += 1
            self._producer.produce(
                self.outcomes_topic,
                json.dumps(outcome).encode(),
                key=event_id.encode(),
                on_delivery=self._outcome_delivered,
            )

    def _outcome_delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.counts.outcomes_acked += 1
        else:
            self.counts.errors[f"outcome: {err}"[:120]] += 1


def predict_request(rng: random.Random) -> pb.PredictRequest:
    """A Predict call for known-shaped entities of the event stream's pools."""
    return pb.PredictRequest(
        entities={
            "card_id": f"c{rng.randrange(N_CARDS)}",
            "merchant_id": f"m{rng.randrange(N_MERCHANTS)}",
        },
        fields={"amount": round(rng.uniform(1, 500), 2)},
    )


# An answer check: False when the response is wrong for the request.
Check = Callable[[pb.PredictRequest, pb.PredictResponse], bool]


@dataclass
class PredictCounts:
    calls: int = 0  # logical calls (a retried call counts once)
    ok: int = 0
    failed: int = 0  # no answer, even after the retries
    degraded: int = 0  # answered with features not fresh from the store (missing too)
    defaulted: int = 0  # of which the store did not answer (defaults or last known)
    defaulted_at: list[float] = field(default_factory=list)  # monotonic times of those
    wrong: int = 0  # answered, but ``check`` refused the answer
    retries: int = 0
    codes: Counter[str] = field(default_factory=Counter)  # final status of failed calls
    latencies_s: list[float] = field(default_factory=list)  # every logical call, failed too
    # The same by final status ("OK" for answered calls): how fast a refusal came.
    latencies_by_code: dict[str, list[float]] = field(default_factory=dict)
    # (monotonic time, ok) of each call: when answers stopped and came back.
    timeline: list[tuple[float, bool]] = field(default_factory=list)


class PredictLoop:
    """``threads`` clients calling Predict until :meth:`stop` (``rate`` per second in
    all, or as fast as the answers come with ``rate`` None)."""

    def __init__(
        self,
        target: str,
        *,
        threads: int = 4,
        rate: float | None = 200.0,
        deadline_s: float = 0.5,
        retries: int = 0,
        retry_codes: Iterable[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE,),
        check: Check | None = None,
        seed: int = 11,
        requests: Callable[[random.Random], pb.PredictRequest] = predict_request,
    ) -> None:
        self.target = target
        self.threads = threads
        self.rate = rate
        self.deadline_s = deadline_s
        self.retries = retries
        self.retry_codes = frozenset(retry_codes)
        self.check = check
        self.seed = seed
        self.requests = requests
        self.counts = PredictCounts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._run, args=(k,), name=f"chaos-predict-{k}", daemon=True)
            for k in range(threads)
        ]

    def start(self) -> PredictLoop:
        for t in self._workers:
            t.start()
        return self

    def stop(self) -> PredictCounts:
        self._stop.set()
        for t in self._workers:
            t.join()
        return self.counts

    def _run(self, k: int) -> None:
        rng = random.Random(self.seed * 1000 + k)
        per_thread = self.rate / self.threads if self.rate else None
        with grpc.insecure_channel(self.target) as channel:
            call = channel.unary_unary(
                PREDICT,
                request_serializer=pb.PredictRequest.SerializeToString,
                response_deserializer=pb.PredictResponse.FromString,
            )
            started = time.monotonic()
            n = 0
            while not self._stop.is_set():
                if per_thread:
                    wait = started + n / per_thread - time.monotonic()
                    if wait > 0:
                        self._stop.wait(wait)
                        continue
                n += 1
                self._one(call, self.requests(rng))

    def _one(self, call: Any, request: pb.PredictRequest) -> None:
        t0 = time.monotonic()
        code: grpc.StatusCode | None = None
        response = None
        tries = 0
        for tries in range(self.retries + 1):
            try:
                response = call(request, timeout=self.deadline_s)
                code = None
                break
            except grpc.RpcError as e:
                code = e.code()
                if code not in self.retry_codes or self._stop.is_set():
                    break
                time.sleep(min(0.05 * 2**tries, 0.5))
        elapsed = time.monotonic() - t0
        with self._lock:
            c = self.counts
            c.calls += 1
            c.retries += tries
            c.latencies_s.append(elapsed)
            name = "OK" if response is not None else code.name if code else "?"
            c.latencies_by_code.setdefault(name, []).append(elapsed)
            c.timeline.append((t0, response is not None))
            if response is None:
                c.failed += 1
                c.codes[code.name if code else "?"] += 1
                return
            c.ok += 1
            c.degraded += response.degraded
            if any(f.status == pb.FEATURE_STATUS_DEFAULTED for f in response.features):
                c.defaulted += 1
                c.defaulted_at.append(t0)
            if self.check is not None and not self.check(request, response):
                c.wrong += 1
