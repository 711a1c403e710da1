"""Announce a rollout decision this server made on the model-updates topic.

Rare (a plan aborted by serving's policy), so the producer is made on first
use and every send waits for the broker's acknowledgement: an abort that was
not announced raises :class:`DeliveryError` (the registry still holds it, and
other servers see it on their next registry poll).
"""

from __future__ import annotations

from loopline.config.kafka import producer_config
from loopline.contracts.errors import ModelNotFoundError
from loopline.contracts.schemas import encode
from loopline.contracts.settings import KafkaSettings
from loopline.kafka.checked_producer import CheckedProducer
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
        self._producer: CheckedProducer | None = None

    def __call__(self, plan: RolloutPlan) -> None:
        champion = self.registry.resolve(plan.model, CHAMPION)
        if champion is None:
            raise ModelNotFoundError(f"{plan.model}: no champion to announce with the plan")
        update = model_update(champion, CHAMPION, "rollout", plan)
        if self._producer is None:
            config = producer_config(
                self.kafka, **{"message.timeout.ms": int(self.timeout_s * 1000)}
            )
            self._producer = CheckedProducer(config, flush_timeout_s=self.timeout_s + 5)
        self._producer.send_and_wait(self.topic, encode(update), plan.model)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
