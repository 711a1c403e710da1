"""Announce a rollout decision this server made on the model-updates topic.

Rare (a plan aborted by serving's policy), so the producer is made on first
use and every send waits for the broker's acknowledgement: an abort that was
not announced raises :class:`DeliveryError` (the registry still holds it, and
other servers see it on their next registry poll).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Producer

from loopline.config.kafka import producer_config
from loopline.contracts.errors import DeliveryError, ModelNotFoundError
from loopline.contracts.schemas import encode
from loopline.contracts.settings import KafkaSettings
from loopline.registry.directory import ModelRegistry, model_update
from loopline.rollout.plan import CHAMPION, RolloutPlan


class RolloutAnnouncer:
    """``announce(plan)``: the champion and the plan as one compacted-topic record."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, registry: ModelRegistry, timeout_s: float = 10.0
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.registry = registry
        self.timeout_s = timeout_s
        self._producer: Producer | None = None

    def __call__(self, plan: RolloutPlan) -> None:
        champion = self.registry.resolve(plan.model, CHAMPION)
        if champion is None:
            raise ModelNotFoundError(f"{plan.model}: no champion to announce with the plan")
        update = model_update(champion, CHAMPION, "rollout", plan)
        if self._producer is None:
            timeout_ms = int(self.timeout_s * 1000)
            self._producer = Producer(
                producer_config(self.kafka, **{"message.timeout.ms": timeout_ms})
            )
        outcome: list[KafkaError | None] = []
        try:
            self._producer.produce(
                self.topic,
                key=plan.model.encode(),
                value=encode(update),
                on_delivery=lambda err, _msg: outcome.append(err),
            )
        except (BufferError, KafkaException) as e:
            raise DeliveryError(f"could not send to {self.topic}: {e}") from e
        self._producer.flush(self.timeout_s + 5)
        if not outcome:
            raise DeliveryError(f"{self.topic}: not acknowledged within {self.timeout_s:.0f} s")
        if outcome[0] is not None:
            raise DeliveryError(f"{self.topic}: delivery failed: {outcome[0]}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
