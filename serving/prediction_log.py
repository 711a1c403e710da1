"""Every served prediction to the predictions topic, off the response path.

The request thread only appends a tuple to a bounded in-memory queue; a
background thread wakes every few milliseconds, encodes the queued
:class:`PredictionLog` records, produces them (key: request id) and serves
the producer's delivery callbacks, which count delivered and failed
messages. Waking per batch rather than per prediction costs a third of the
CPU (measured: a wake-up per message nearly doubled the server's CPU per
call); the thread yields the GIL every few records so a request never waits
behind a whole batch. When the queue is full the prediction is
dropped and counted: the response never waits for Kafka. :meth:`close`
drains the queue and flushes the producer (graceful shutdown).

The record is encoded straight from its fields (5x cheaper than
``schemas.encode``'s ``asdict``, same bytes), since it runs in the serving
process for every prediction.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from loopline.config.kafka import producer_config
from loopline.contracts.schemas import PredictionLog
from loopline.contracts.settings import KafkaSettings
from loopline.serving.features import FeatureStatus
from loopline.serving.metrics import ServingMetrics
from loopline.serving.requests import Prediction

log = logging.getLogger(__name__)

# The background thread drains the queue this often...
BATCH_INTERVAL_S = 0.005
# ...and releases the GIL after this many records.
YIELD_EVERY = 8


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
        q, producer = self._queue, self._producer
        while True:
            n = 0
            while q:
                self._produce(q.popleft())
                n += 1
                if n % YIELD_EVERY == 0:
                    time.sleep(0)  # let a waiting request thread have the GIL
            producer.poll(0)  # delivery callbacks
            if self._stopping.is_set() and not q:
                return
            # A plain sleep: poll(timeout) would return at every delivery report
            # and turn the batches back into one wake-up per message.
            time.sleep(BATCH_INTERVAL_S)

    def _produce(self, item: tuple[Any, ...]) -> None:
        prediction, event_time_ms, event_id, names, served_at_ms = item
        key = prediction.request_id.encode()
        payload = encode_prediction(
            prediction,
            feature_set=self.feature_set,
            event_time_ms=event_time_ms,
            event_id=event_id,
            feature_names=names,
            served_at_ms=served_at_ms,
        )
        for attempt in range(2):
            try:
                self._producer.produce(self.topic, payload, key=key, on_delivery=self._on_delivery)
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


_FIELDS = tuple(f.name for f in dataclasses.fields(PredictionLog))


def encode_prediction(
    prediction: Prediction,
    *,
    feature_set: str,
    event_time_ms: int,
    event_id: str,
    feature_names: Sequence[str],
    served_at_ms: int,
) -> bytes:
    """The JSON bytes ``schemas.encode(PredictionLog(...))`` gives, built directly.

    ``feature_status`` lists only features that were not fresh (absent: ok).
    """
    status = (
        {
            n: s.value
            for n, s in zip(feature_names, prediction.statuses, strict=True)
            if s is not FeatureStatus.OK
        }
        if prediction.degraded
        else {}
    )
    model = prediction.model
    values = (
        prediction.request_id,
        model.name,
        model.version,
        feature_set,
        model.manifest.fingerprint,
        dict(prediction.entities),
        prediction.features,
        prediction.score,
        event_time_ms,
        served_at_ms,
        event_id,
        prediction.arm,
        status,
    )
    return json.dumps(
        dict(zip(_FIELDS, values, strict=True)), separators=(",", ":"), allow_nan=False
    ).encode()
