"""The labeled topic from just before a plan started, for the rollout watcher.

Manual assignment in a private group and nothing committed: following a plan
never disturbs a consumer group, and a restarted watcher reads the plan's
evidence again from its start.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Protocol

from loopline.config.kafka import consumer_config
from loopline.contracts.errors import StackError
from loopline.contracts.settings import KafkaSettings, Settings
from loopline.contracts.topics import Topics
from loopline.rollout.plan import RolloutPlan

log = logging.getLogger("loopline.trainer.rollout")

# Producer timestamps come from wall clocks that may disagree a little: read from
# this long before the plan started (examples from before it are filtered anyway).
CLOCK_SKEW_MS = 60_000
POLL_BATCH = 500


class LabelSource(Protocol):
    def poll(self, timeout_s: float) -> list[bytes]: ...
    def close(self) -> None: ...


class KafkaLabelSource:
    """The labeled topic from a point in time: manual assignment, nothing committed."""

    def __init__(self, kafka: KafkaSettings, topic: str, since_ms: int, name: str) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        from loopline.trainer.kafka_io import end_offset, offsets_at, topic_partitions

        self.topic = topic
        group = f"rollout-watch-{name}-{uuid.uuid4().hex[:8]}"
        self._consumer = Consumer(consumer_config(kafka, group))
        try:
            parts = topic_partitions(self._consumer, topic)
            # The end before the time lookup: where "nothing at or after since_ms" starts.
            ends = {p: end_offset(self._consumer, topic, p) for p in parts}
            found = offsets_at(self._consumer, topic, parts, since_ms)
            start = {p: offset if offset >= 0 else ends[p] for p, offset in found.items()}
            self._consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
        except KafkaException as e:
            self._consumer.close()
            raise StackError(f"cannot read {topic!r}: {e} (is the stack up? `loopline up`)") from e
        except StackError:
            self._consumer.close()
            raise
        self.start_offsets = start

    def poll(self, timeout_s: float) -> list[bytes]:
        from confluent_kafka import KafkaError

        from loopline.trainer.kafka_io import raise_if_fatal

        out: list[bytes] = []
        for msg in self._consumer.consume(POLL_BATCH, timeout_s):
            err = msg.error()
            if err is None:
                value = msg.value()
                if value is not None:
                    out.append(value)
                continue
            raise_if_fatal(err, f"reading {self.topic!r}")
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("labeled: %s", err)
        return out

    def close(self) -> None:
        self._consumer.close()


def kafka_label_sources(settings: Settings) -> Callable[[RolloutPlan], LabelSource]:
    """Opens the labeled topic of ``settings`` from just before a plan started."""
    topic = Topics(settings.kafka.topic_prefix).labeled

    def open_source(plan: RolloutPlan) -> LabelSource:
        return KafkaLabelSource(
            settings.kafka, topic, plan.created_ms - CLOCK_SKEW_MS, plan.plan_id
        )

    return open_source
