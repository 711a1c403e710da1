"""Follow new model versions: the model-updates topic and a registry poll.

The registry alias is the source of truth; a message on the (compacted)
model-updates topic for this model and alias is a prompt to look at it now
rather than at the next poll. Reading the topic from its beginning at start
therefore only re-checks the alias, never loads intermediate versions.
Everything runs on this thread, off the request path.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from loopline.config.kafka import consumer_config
from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import ModelUpdate, decode
from loopline.contracts.settings import KafkaSettings
from loopline.serving.model_manager import ModelManager
from loopline.serving.rollout import RolloutFollower

log = logging.getLogger(__name__)


class ModelFollower:
    """A daemon thread keeping ``manager`` on the newest version of its alias."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        kafka: KafkaSettings | None,
        topic: str,
        poll_s: float,
        rollout: RolloutFollower | None = None,
    ) -> None:
        self.manager = manager
        self.rollout = rollout
        self.kafka = kafka
        self.topic = topic
        self.poll_s = poll_s
        self.messages_seen = 0
        self._warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        consumer = self._subscribe() if self.kafka is not None else None
        next_poll = time.monotonic() + self.poll_s if self.poll_s > 0 else float("inf")
        try:
            while not self._stop.is_set():
                wait = min(0.5, max(0.0, next_poll - time.monotonic()))
                if consumer is not None:
                    self._consume(consumer, wait)
                else:
                    self._stop.wait(wait)
                if self.rollout is not None:
                    self.rollout.decide()
                if time.monotonic() >= next_poll:
                    self.sync()
                    next_poll = time.monotonic() + self.poll_s
                    if consumer is None and self.kafka is not None:
                        consumer = self._subscribe()  # the topic may exist by now
        finally:
            if consumer is not None:
                consumer.close()

    def sync(self, announced: tuple[str, str] | None = None) -> None:
        """The champion alias first, then the rollout plan.

        In that order a promotion adopts the loaded candidate as champion
        before the plan's end drops it, so no request waits for a load.
        """
        outcome = self.manager.sync(announced)
        if outcome is not None and outcome.result not in ("current", "skipped"):
            log.info("%s v%s: %s", self.manager.model_name, outcome.version, outcome.result)
        if self.rollout is not None:
            self.rollout.sync()

    def _subscribe(self) -> Consumer | None:
        assert self.kafka is not None
        # Every server reads every update: a private group id, nothing committed.
        conf = consumer_config(self.kafka, f"serving-{uuid.uuid4().hex[:12]}")
        try:
            consumer = Consumer(conf)
            meta = consumer.list_topics(self.topic, timeout=10)
            parts = meta.topics[self.topic].partitions
            if not parts:
                raise KafkaException(f"topic {self.topic} has no partitions")
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            return consumer
        except KafkaException as e:
            if not self._warned:
                log.error("cannot follow %s (%s); polling the registry only", self.topic, e)
                self._warned = True
            return None

    def _consume(self, consumer: Consumer, wait_s: float) -> None:
        msg = consumer.poll(wait_s)
        if msg is None:
            return
        if msg.error():
            log.warning("model-updates: %s", msg.error())
            return
        try:
            update = decode(ModelUpdate, msg.value())
        except SchemaError as e:
            log.warning(
                "model-updates: ignoring a malformed message at offset %s: %s", msg.offset(), e
            )
            return
        self.messages_seen += 1
        if update.model_name != self.manager.model_name or update.alias != self.manager.alias:
            return
        log.debug("model update %s v%s (%s)", update.model_name, update.version, update.action)
        self.sync((update.version, update.sha256))
