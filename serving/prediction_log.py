"""Every served prediction to the predictions topic, off the response path.

The request thread only appends a tuple to a bounded in-memory queue; a
background thread builds the :class:`PredictionLog`, produces it (key:
request id) and serves the producer's delivery callbacks, which count
delivered and failed messages. When the queue is full the prediction is
dropped and counted: the response never waits for Kafka. :meth:`close`
drains the queue and flushes the producer (graceful shutdown).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from loopline.contracts.kafka_config import producer_config
from loopline.contracts.schemas import PredictionLog, encode
from loopline.contracts.settings import KafkaSettings
from loopline.serving.core import Prediction
from loopline.serving.features import FeatureStatus
from loopline.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

# How long the background thread waits in the producer between drains.
POLL_S = 0.005


class KafkaPredictionLog:
    """A non-blocking :class:`~loopline.serving.core.PredictionSink` writing to Kafka."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        feature_set: str,
        metrics: ServingMetrics,
        queue_size: int,
        **producer_overrides: Any,
    ) -> None:
        self.topic = topic
        self.feature_set = feature_set
        self.metrics = metrics
        self.queue_size = queue_size
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._producer = Producer(producer_config(kafka, **producer_overrides))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def log(
        self,
        prediction: Prediction,
        event_time_ms: int,
        event_id: str,
        feature_names: Sequence[str],
    ) -> None:
        if len(self._queue) >= self.queue_size or self._stopping.is_set():
            self.dropped += 1
            self.metrics.predictions_logged.labels("dropped").inc()
            return
        self._queue.append(
            (prediction, event_time_ms, event_id, feature_names, int(time.time() * 1000))
        )

    @property
    def pending(self) -> int:
        """Predictions not yet acknowledged (queued here or in the producer)."""
        return len(self._queue) + len(self._producer)

    def close(self, timeout_s: float = 10.0) -> int:
        """Drain and flush; returns how many messages were still undelivered."""
        self._stopping.set()
        self._thread.join(timeout_s)
        left = self._producer.flush(max(0.1, timeout_s))
        if left:
            log.error("%d prediction log messages undelivered at shutdown", left)
        return left + len(self._queue)

    def _run(self) -> None:
        queue, producer = self._queue, self._producer
        while True:
            while queue:
                self._produce(queue.popleft())
            if self._stopping.is_set() and not queue:
                return
            producer.poll(POLL_S)

    def _produce(self, item: tuple[Any, ...]) -> None:
        prediction, event_time_ms, event_id, names, served_at_ms = item
        record = PredictionLog(
            request_id=prediction.request_id,
            model_name=prediction.model.name,
            model_version=prediction.model.version,
            feature_set=self.feature_set,
            fingerprint=prediction.model.manifest.fingerprint,
            entities=dict(prediction.entities),
            features=prediction.features,
            score=prediction.score,
            event_time=event_time_ms,
            served_at_ms=served_at_ms,
            event_id=event_id,
            # Only features that were not fresh: absent means ok.
            feature_status=(
                {
                    n: s.value
                    for n, s in zip(names, prediction.statuses, strict=True)
                    if s is not FeatureStatus.OK
                }
                if prediction.degraded
                else {}
            ),
        )
        payload = encode(record)
        for attempt in range(2):
            try:
                self._producer.produce(
                    self.topic,
                    payload,
                    key=record.request_id.encode(),
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                # librdkafka's own queue is full: give it a moment once, then drop.
                if attempt == 0:
                    self._producer.poll(0.05)
        self.dropped += 1
        self.metrics.predictions_logged.labels("dropped").inc()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self.metrics.predictions_logged.labels("delivered").inc()
        else:
            self.failed += 1
            self.metrics.predictions_logged.labels("failed").inc()
            log.warning("prediction log delivery failed: %s", err)
