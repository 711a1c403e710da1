"""`loopline run policy`: the retrain policy between the drift and retrain topics.

A thin Kafka loop around :class:`RetrainPolicy`. On start it replays the
retrain topic's history into the policy (what was already requested, when,
for which drift events), then consumes the drift topic in the consumer group
``retrain-policy``. Each retrain event is produced keyed by model name and
acknowledged by the broker before anything is committed; an unacknowledged
one stays in an outbox and is sent again on the next tick. Drift offsets are
committed only while no trigger is pending and the outbox is empty, so a
restart re-reads the drift events that a pending trigger was built from.
Malformed drift events go to the dead-letter topic.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message
from prometheus_client import CollectorRegistry

from loopline.config.cli import service_group, settings_of
from loopline.config.kafka import consumer_config
from loopline.contracts import metric_names as mn
from loopline.contracts.errors import DeliveryError, SchemaError, StackError
from loopline.contracts.schemas import DriftEvent, RetrainEvent, decode, encode
from loopline.contracts.settings import KafkaSettings, Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.kafka.checked_producer import CheckedProducer
from loopline.kafka.errors import transient
from loopline.telemetry.prometheus import counter, gauge
from loopline.trainer.kafka_io import (
    dead_letter,
    delivering_producer,
    end_offset,
    offsets_at,
    raise_if_fatal,
    read_history,
    topic_partitions,
)
from loopline.trainer.policy.rules import Decision, NewRows, RetrainPolicy

log = logging.getLogger("loopline.trainer.policy.rules")

CONSUMER_GROUP = "retrain-policy"
COUNT_ATTEMPTS = 8
RETRY_PAUSE_S = 0.2


class KafkaRowCounter:
    """The ``new_rows`` port: labeled rows whose Kafka timestamp is at or after ``since_ms``.

    Counts with offsets, never by reading: per partition, the high watermark
    minus the first offset at or after the time.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        # Only metadata and offset lookups: this consumer never subscribes or commits.
        self._consumer = Consumer(consumer_config(kafka, f"policy-rows-{uuid.uuid4().hex[:8]}"))

    def __call__(self, since_ms: int) -> int:
        # Metadata lags behind a new topic and a partition's leader moves (a broker
        # restart, a busy broker fenced for a moment): both pass within a few refreshes.
        for attempt in range(COUNT_ATTEMPTS - 1):
            try:
                return self._count(since_ms)
            except StackError:  # the topic is not (yet) in the metadata
                pass
            except KafkaException as e:
                if not transient(e):
                    raise StackError(f"counting rows of {self.topic!r}: {e}") from e
            time.sleep(min(RETRY_PAUSE_S * (attempt + 1), 2.0))
        try:
            return self._count(since_ms)
        except KafkaException as e:
            if not transient(e):
                raise StackError(f"counting rows of {self.topic!r}: {e}") from e
            # Not a reason to stop the service: a pending trigger waits for the next
            # evaluation, when the broker has settled.
            log.warning("counting rows of %r failed (%s); again later", self.topic, e)
            return 0

    def _count(self, since_ms: int) -> int:
        parts = topic_partitions(self._consumer, self.topic)
        found = offsets_at(self._consumer, self.topic, parts, since_ms)
        return sum(
            max(0, end_offset(self._consumer, self.topic, p) - offset)
            for p, offset in found.items()
            if offset >= 0  # -1: no message at or after since_ms
        )

    def close(self) -> None:
        self._consumer.close()


class PolicyMetrics:
    """The loop's Prometheus metrics (names from ``loopline.contracts.metric_names``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        self.drift_events = counter(mn.POLICY_DRIFT_EVENTS, registry)
        self.retrain_events = counter(mn.POLICY_RETRAIN_EVENTS, registry)
        self.held = counter(mn.POLICY_HELD, registry)
        self.pending = gauge(mn.POLICY_PENDING, registry)
        self.last_retrain = gauge(mn.POLICY_LAST_RETRAIN_TIMESTAMP, registry)


class RetrainPolicyLoop:
    """Drift topic -> :class:`RetrainPolicy` -> retrain topic."""

    def __init__(
        self,
        settings: Settings,
        *,
        new_rows: NewRows | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.kafka.topic_prefix)
        self.model_name = model_of(settings).name
        self._counter = None
        if new_rows is None:
            self._counter = KafkaRowCounter(settings.kafka, self.topics.labeled)
            new_rows = self._counter
        self.policy = RetrainPolicy(settings.policy, self.model_name, new_rows)
        self.metrics = PolicyMetrics(registry or CollectorRegistry())
        self.clock = clock
        self.emitted: list[RetrainEvent] = []
        self._outbox: list[RetrainEvent] = []

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def restore(self) -> int:
        """Replay the retrain topic's history into the policy; returns events learned."""
        events = []
        for raw in read_history(self.settings.kafka, self.topics.retrain):
            try:
                events.append(decode(RetrainEvent, raw))
            except SchemaError as e:
                log.warning("retrain history: skipping a malformed event: %s", e)
        restored = self.policy.restore(events)
        if self.policy.last_retrain_ms:
            self.metrics.last_retrain.set(self.policy.last_retrain_ms / 1000)
        return restored

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        deadline_s: float | None = None,
        max_retrains: int | None = None,
    ) -> int:
        """Run until ``stop`` is set (or the deadline / count); returns retrain events sent."""
        stop = stop or threading.Event()
        kafka = self.settings.kafka
        self.restore()
        consumer = Consumer(consumer_config(kafka, CONSUMER_GROUP))
        producer = delivering_producer(kafka)
        consumer.subscribe([self.topics.drift])
        until = None if deadline_s is None else time.monotonic() + deadline_s
        tick_every = max(0.05, self.settings.policy.tick_s)
        next_tick = 0.0
        uncommitted = False
        sent = 0
        try:
            while not stop.is_set():
                if until is not None and time.monotonic() > until:
                    break
                if max_retrains is not None and len(self.emitted) >= max_retrains:
                    break
                msg = consumer.poll(min(0.2, tick_every))
                if msg is not None:
                    uncommitted |= self._consume(msg, producer)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick_every
                    for decision in self.policy.tick(self.now_ms()):
                        self._apply(decision)
                sent += self._flush(producer)
                self.metrics.pending.set(1 if self.policy.pending is not None else 0)
                if uncommitted and self.policy.pending is None and not self._outbox:
                    consumer.commit(asynchronous=False)
                    uncommitted = False
        finally:
            consumer.close()
            producer.close()
            if self._counter is not None:
                self._counter.close()
        return sent

    # -- one message --------------------------------------------------------------------
    def _consume(self, msg: Message, producer: CheckedProducer) -> bool:
        """Handle one polled message; True when its offset awaits a commit."""
        err = msg.error()
        if err is not None:
            raise_if_fatal(err, "drift consumer")
            log.warning("drift consumer: %s", err)
            return False
        try:
            event = decode(DriftEvent, msg.value() or b"")
        except SchemaError as e:
            self.metrics.drift_events.labels("invalid").inc()
            log.warning("drift topic offset %s: %s (dead-lettered)", msg.offset(), e)
            letter = dead_letter(msg, self.topics.drift, str(e), self.now_ms())
            producer.send_and_wait(self.topics.dead_letters, encode(letter), msg.key())
            return True
        decision = self.policy.on_drift(event, self.now_ms())
        self.metrics.drift_events.labels(decision.action).inc()
        log.info("drift event %s (%s %s): %s %s", event.id, event.kind, event.severity,
                 decision.action, decision.reason)  # fmt: skip
        self._apply(decision)
        return True

    def _apply(self, decision: Decision) -> None:
        if decision.action == "pending":
            self.metrics.held.labels(decision.reason).inc()
        elif decision.action == "expired":
            self.metrics.held.labels("expired").inc()
        if decision.event is not None:
            self._outbox.append(decision.event)

    def _flush(self, producer: CheckedProducer) -> int:
        sent = 0
        while self._outbox:
            event = self._outbox[0]
            try:
                producer.send_and_wait(self.topics.retrain, encode(event), self.model_name.encode())
            except DeliveryError as e:
                self.metrics.retrain_events.labels(event.trigger, "failed").inc()
                log.error("retrain event %s not delivered (retrying): %s", event.id, e)
                return sent
            self._outbox.pop(0)
            self.emitted.append(event)
            sent += 1
            self.metrics.retrain_events.labels(event.trigger, "delivered").inc()
            self.metrics.last_retrain.set(event.time_ms / 1000)
            log.info("retrain requested: %s (%s)", event.id, event.reason)
        return sent


# -- CLI ----------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add ``run policy`` (alias ``retrain-policy``) to a subparsers object."""
    run = service_group(subparsers)
    p = run.add_parser(
        "policy",
        aliases=["retrain-policy"],
        help="turn drift events into retrain events (thresholds, rows, interval, cap)",
        description="Consume the drift topic and request retraining on the retrain topic "
        "according to Settings.policy.",
    )
    p.add_argument("--max-retrains", type=int, help="exit after requesting this many")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default policy.metrics_port)")
    p.set_defaults(func=run_retrain_policy)


def run_retrain_policy(args: argparse.Namespace, settings: Settings | None = None) -> int:
    settings = settings_of(args, settings)
    import signal

    # Its decisions (held, requested, dead-lettered) are INFO lines an operator reads.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    port = args.metrics_port if args.metrics_port is not None else settings.policy.metrics_port
    if port:
        start_http_server(port, registry=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    loop = RetrainPolicyLoop(settings, registry=registry)
    try:
        sent = loop.run(stop, max_retrains=args.max_retrains)
    except KeyboardInterrupt:
        stop.set()
        sent = len(loop.emitted)
    print(f"retrain events requested: {sent}")
    return 0
