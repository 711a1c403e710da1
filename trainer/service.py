"""`loopline run trainer`: one training per retrain event, each event handled once.

Retrain events are idempotent by ``id``: an id is skipped when the ledger
recorded it or a published version's manifest names it (so a crash between
publishing and recording still never trains twice). When a crash fell between
publishing an accepted version and making it champion (or starting its
rollout), the redelivered event finishes that placement instead of training. The offset is committed
after the event is handled, so a crash before that redelivers it and the
checks above make the redelivery harmless. A malformed event goes to the
dead-letter topic; a training that fails is recorded with its reason and the
service moves on, except when the registry refused the write (disk full,
read-only): nothing is recorded or committed, and the event is tried again
after a backoff (doubling up to ``RETRY_MAX_S``) until the registry takes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from loopline.config.kafka import consumer_config
from loopline.contracts.errors import LooplineError, RegistryWriteError, SchemaError
from loopline.contracts.schemas import RetrainEvent, decode, encode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.kafka.checked_producer import CheckedProducer
from loopline.registry.directory import ModelRegistry
from loopline.trainer.dataset import TrainingSet
from loopline.trainer.kafka_io import dead_letter, delivering_producer, raise_if_fatal
from loopline.trainer.ledger import RetrainLedger
from loopline.trainer.pipeline import Trainer, TrainingReport

log = logging.getLogger("loopline.trainer")

CONSUMER_GROUP = "trainer"
# A training can take minutes; the group must not evict the consumer meanwhile.
MAX_POLL_INTERVAL_MS = 3_600_000
# How many recent versions to search for an event id already published.
MANIFEST_LOOKBACK = 50
# Backoff between tries of an event the registry refused to store (disk full, read-only).
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0


@dataclass(frozen=True)
class Handled:
    event_id: str
    outcome: str  # "published" | "rejected" | "duplicate" | "failed" | "deferred"
    version: str = ""
    detail: str = ""
    report: TrainingReport | None = None


class RetrainService:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        trainer: Trainer,
        load_data: Callable[[], TrainingSet],
        *,
        ledger: RetrainLedger | None = None,
        on_handled: Callable[[Handled], None] | None = None,
        retry_first_s: float = RETRY_FIRST_S,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.trainer = trainer
        self.load_data = load_data
        self.ledger = ledger or RetrainLedger(settings.trainer.state_dir / "retrain-ledger.json")
        self.on_handled = on_handled
        self.retry_first_s = retry_first_s
        self.topics = Topics(settings.kafka.topic_prefix)

    # -- one event ------------------------------------------------------------
    def handle(self, event: RetrainEvent) -> Handled:
        published = self._published_for(event.id)
        if self.ledger.seen(event.id):
            result = Handled(event.id, "duplicate", published, "already handled")
        else:
            result = self._resume(event, published) if published else self._train(event)
            if result.outcome != "deferred":  # a deferred event is tried again
                self.ledger.record(
                    event.id, result.outcome, version=result.version, detail=result.detail
                )
        r = result.report
        facts = ""
        if r:
            # The task's first metric: auc (binary) or rmse (regression).
            metric = next(iter(r.metrics), "")
            value = f", holdout {metric} {r.metrics[metric]:.4f}" if metric else ""
            rows = sum(r.rows[k] for k in ("train", "valid", "holdout"))
            facts = f" (rows {rows}{value}, {r.duration_s:.1f} s)"
        log.info(
            "retrain %s: %s v%s%s: %s",
            event.id,
            result.outcome,
            result.version or "-",
            facts,
            result.detail,
        )
        if self.on_handled is not None:
            self.on_handled(result)
        return result

    def _train(self, event: RetrainEvent) -> Handled:
        extra = {
            "retrain_event_id": event.id,
            "trigger": event.trigger,
            "reason": event.reason,
            "drift_event_ids": list(event.drift_event_ids),
        }
        try:
            report = self.trainer.train(self.load_data(), force=event.force, extra=extra)
        except RegistryWriteError as e:  # the registry's storage, not the event: try again
            return Handled(event.id, "deferred", detail=f"{type(e).__name__}: {e}")
        except LooplineError as e:
            return Handled(event.id, "failed", detail=f"{type(e).__name__}: {e}")
        except Exception as e:  # a bug must not stop the service; it is logged and recorded
            log.exception("retrain %s crashed", event.id)
            return Handled(event.id, "failed", detail=f"{type(e).__name__}: {e}")
        outcome = "published" if report.accepted else "rejected"
        return Handled(event.id, outcome, report.version, report.decision, report)

    def _resume(self, event: RetrainEvent, version: str) -> Handled:
        """``version`` was published for ``event`` before a crash: place it if it never was."""
        placement = self.trainer.placement
        mv = self.registry.get(placement.model_name, version)
        if not placement.stranded(mv):
            return Handled(event.id, "duplicate", version, "already handled")
        try:
            outcome = placement.place(mv, force=event.force)
        except RegistryWriteError as e:
            return Handled(event.id, "deferred", version, f"{type(e).__name__}: {e}")
        except LooplineError as e:
            return Handled(event.id, "failed", version, f"placing after a restart: {e}")
        note = f"published before a restart; placed now as {outcome.published_as}"
        return Handled(event.id, "published", version, note + outcome.note)

    def _published_for(self, event_id: str) -> str:
        model = model_of(self.settings).name
        for mv in reversed(self.registry.versions(model)[-MANIFEST_LOOKBACK:]):
            if mv.manifest.extra.get("retrain_event_id") == event_id:
                return mv.manifest.version
        return ""

    # -- the Kafka loop -------------------------------------------------------
    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_events: int | None = None,
        deadline_s: float | None = None,
    ) -> int:
        """Consume the retrain topic until ``stop`` is set; returns events handled."""
        stop = stop or threading.Event()
        kafka = self.settings.kafka
        consumer = Consumer(
            consumer_config(kafka, CONSUMER_GROUP, **{"max.poll.interval.ms": MAX_POLL_INTERVAL_MS})
        )
        producer = delivering_producer(kafka, self.settings.trainer.announce_timeout_s)
        consumer.subscribe([self.topics.retrain])
        handled = 0
        last_slot = -1
        retry_s = self.retry_first_s
        until = None if deadline_s is None else time.monotonic() + deadline_s
        try:
            while not stop.is_set():
                if until is not None and time.monotonic() > until:
                    break
                last_slot = self._maybe_schedule(producer, last_slot)
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    raise_if_fatal(err, "retrain consumer")
                    log.warning("retrain consumer: %s", err)
                    continue
                result = self._process(msg, producer)
                if result is not None and result.outcome == "deferred":
                    # Read it again after the backoff; nothing was committed.
                    consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
                    log.warning("retrain %s deferred; next try in %.0f s", result.event_id, retry_s)
                    stop.wait(retry_s)
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
                    continue
                retry_s = self.retry_first_s
                consumer.commit(message=msg, asynchronous=False)
                handled += 1
                if max_events is not None and handled >= max_events:
                    break
        finally:
            consumer.close()
            producer.close()
        return handled

    def _process(self, msg: Message, producer: CheckedProducer) -> Handled | None:
        try:
            event = decode(RetrainEvent, msg.value() or b"")
        except SchemaError as e:
            log.warning("retrain topic offset %s: %s (dead-lettered)", msg.offset(), e)
            letter = dead_letter(msg, self.topics.retrain, str(e), int(time.time() * 1000))
            producer.send_and_wait(self.topics.dead_letters, encode(letter), msg.key())
            return None
        return self.handle(event)

    def _maybe_schedule(self, producer: CheckedProducer, last_slot: int) -> int:
        every = self.settings.trainer.schedule_s
        if every <= 0:
            return last_slot
        slot = int(time.time() // every)
        if slot == last_slot:
            return slot
        model = model_of(self.settings).name
        slot_ms = int(slot * every * 1000)
        # One id per slot: several trainer instances request one training.
        event = RetrainEvent(
            id=f"schedule-{model}-{slot_ms}",
            time_ms=int(time.time() * 1000),
            trigger="schedule",
            reason=f"scheduled every {every:g} s",
        )
        producer.send_and_wait(self.topics.retrain, encode(event), model.encode())
        return slot
