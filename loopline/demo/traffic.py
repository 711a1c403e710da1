"""The demo's client side: scored events scored over gRPC, then sent to Kafka.

A business asks for a score while the event happens (a card network while
authorizing a payment), before it becomes an event on Kafka; the outcome
follows later. The driver does the same for every simulated event, paced in
real time; events the model does not score are only sent.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from loopline.config.grpc import GrpcClient
from loopline.demo.requests import RequestShape
from loopline.kafka.checked_producer import CheckedProducer
from loopline.simulation.api import SimEvent
from loopline.simulation.timeline import Message, Routes
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
    label: float = 0.0
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


class Driver:
    """Paces events in real time: Predict (scored ones), produce the event, later its outcome."""

    def __init__(
        self,
        *,
        client: GrpcClient,
        producer: CheckedProducer,
        routes: Routes,
        shape: RequestShape,
        stats: TrafficStats,
        deadline_s: float = 3.0,
    ) -> None:
        self.channel = client.channel()
        self.metadata = client.metadata
        self.stub = pb_grpc.InferenceStub(self.channel)
        self.producer = producer
        self.routes = routes
        self.shape = shape
        self.stats = stats
        self.deadline_s = deadline_s
        self._due: list[tuple[int, int, Message]] = []
        self._seq = itertools.count()

    def run(
        self,
        live: Iterator[SimEvent],
        stop: threading.Event,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """Send each event (already on the wall clock's time) when its time comes."""
        for ev in live:
            if stop.is_set():
                break
            wait_s = ev.time_ms / 1000 - time.time()
            if wait_s > 0:
                self._flush_outcomes(ev.time_ms)
                stop.wait(wait_s)
            else:
                self.stats.behind_s = -wait_s
            self._flush_outcomes(ev.time_ms)
            message = self.routes.event(ev)
            if ev.scored:
                self._score(ev, self.routes.event_id(ev))
            self.producer.send(message.topic, message.value, message.key)
            self.stats.events_sent += 1
            if ev.scored:
                out = self.routes.outcome(ev)
                heapq.heappush(self._due, (out.time_ms, next(self._seq), out))
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
            self.producer.send(out.topic, out.value, out.key)
            self.stats.outcomes_sent += 1

    def _score(self, ev: SimEvent, event_id: str) -> None:
        request = pb.PredictRequest(
            request_id=event_id,
            event_id=event_id,
            entities=self.shape.entities(ev),
            fields=self.shape.fields(ev),
            event_time_ms=ev.time_ms,
        )
        label = float(ev.label or 0.0)
        start = time.perf_counter()
        try:
            reply = self.stub.Predict(request, timeout=self.deadline_s, metadata=self.metadata)
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
