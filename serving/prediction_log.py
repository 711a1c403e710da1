"""Every served prediction to the predictions topic, off the response path.

:class:`PredictionRecorder` gives each answer its request id and hands it to
the sink. The Kafka sink, :class:`KafkaPredictionLog`, only queues it: a
:class:`~loopline.serving.batch_worker.BatchWorker` encodes the queued
records, produces them (key: request id) and serves the producer's delivery
reports. Only failures are reported one by one (librdkafka's
``delivery.report.only.error``: a Python callback per delivered message cost
the serving process more than encoding it); a message is delivered once it
has left the producer's queue without a failure report, so the delivered
count is reconciled after each drain as produced - failed - still queued.
When the queue is full
the prediction is dropped and counted: the response never waits for Kafka.
:meth:`KafkaPredictionLog.close` drains the queue and flushes the producer
(graceful shutdown).

The record is encoded straight from its fields with orjson (about 6x
cheaper than ``schemas.encode``'s ``asdict`` + ``json``; the same JSON, though
floats may be spelled differently, e.g. ``1e-5`` for ``1e-05``), since it runs
in the serving process for every prediction. orjson writes NaN as ``null``
where the contract refuses it, so a non-finite value is refused here: that
record is counted as failed and logged, and the log goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer

from loopline.config.kafka import producer_config
from loopline.contracts.errors import ConfigError, SchemaError
from loopline.contracts.schemas import PredictionLog
from loopline.contracts.settings import KafkaSettings, ServingSettings
from loopline.serving.batch_worker import BatchWorker
from loopline.serving.features import FeatureStatus
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import LoadedModel
from loopline.serving.requests import (
    FeatureRow,
    PredictInput,
    Prediction,
    RequestIds,
    prediction_of,
)

log = logging.getLogger(__name__)

# The log's thread releases the GIL after this many records.
YIELD_EVERY = 8


class PredictionSink(Protocol):
    """Where served predictions go (the Kafka predictions topic); must not block."""

    def log(
        self, prediction: Prediction, event_time_ms: int, event_id: str, names: Sequence[str]
    ) -> None: ...


class PredictionRecorder:
    """Names each answer (its request id, or a generated one) and logs it to ``sink``."""

    def __init__(self, sink: PredictionSink | None) -> None:
        self.sink = sink
        self.ids = RequestIds()

    def answer(
        self,
        inp: PredictInput,
        model: LoadedModel,
        score: float,
        row: FeatureRow,
        *,
        arm: str,
        ordered: list[float] | None = None,
    ) -> Prediction:
        """The prediction ``model`` (the arm that answered) made for ``inp``, logged."""
        prediction = prediction_of(
            model,
            score,
            row,
            request_id=inp.request_id or self.ids.next(),
            entities=inp.entities,
            arm=arm,
            ordered=ordered,
        )
        if self.sink is not None:
            self.sink.log(
                prediction, inp.logged_time_ms(), inp.event_id, model.manifest.feature_names
            )
        return prediction

    def matrix(
        self,
        model: LoadedModel,
        matrix: np.ndarray,
        positive: np.ndarray,
        request_id: str,
        all_ok: Sequence[FeatureStatus],
    ) -> None:
        """Log each row of a raw feature matrix as a prediction with no entities.

        Row ``r`` of a several-row request is ``<request_id>-<r>``.
        """
        if self.sink is None:
            return
        n = matrix.shape[0]
        now_ms = int(time.time() * 1000)
        for r in range(n):
            rid = request_id if n == 1 else f"{request_id}-{r}" if request_id else ""
            prediction = Prediction(
                request_id=rid or self.ids.next(),
                score=float(positive[r]),
                model=model,
                features=[float(v) for v in matrix[r]],
                statuses=all_ok,
                degraded=False,
            )
            self.sink.log(prediction, now_ms, "", model.manifest.feature_names)


class KafkaPredictionLog:
    """A non-blocking :class:`PredictionSink` writing to Kafka."""

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
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._produced = 0
        self._producer = Producer(
            producer_config(kafka, **{"delivery.report.only.error": True, **producer_overrides})
        )
        self._delivered_metric = metrics.predictions_logged.labels("delivered")
        self._worker: BatchWorker[tuple[Any, ...]] = BatchWorker(
            "prediction-log",
            self._produce,
            queue_size=queue_size,
            yield_every=YIELD_EVERY,
            after_batch=self._reports,
        )

    def log(
        self, prediction: Prediction, event_time_ms: int, event_id: str, names: Sequence[str]
    ) -> None:
        item = (prediction, event_time_ms, event_id, names, int(time.time() * 1000))
        if not self._worker.offer(item):
            self._drop()

    @property
    def pending(self) -> int:
        """Predictions not yet acknowledged (queued here or in the producer)."""
        return self._worker.pending + len(self._producer)

    def close(self, timeout_s: float = 10.0) -> int:
        """Drain and flush; returns how many messages were still undelivered."""
        self._worker.stop(timeout_s)
        left = self._producer.flush(max(0.1, timeout_s))
        self._count_delivered()
        if left:
            log.error("%d prediction log messages undelivered at shutdown", left)
        return left + self._worker.pending

    def _drop(self) -> None:
        self.dropped += 1
        self.metrics.predictions_logged.labels("dropped").inc()

    def _produce(self, item: tuple[Any, ...]) -> None:
        prediction, event_time_ms, event_id, names, served_at_ms = item
        key = prediction.request_id.encode()
        try:
            payload = encode_prediction(
                prediction,
                feature_set=self.feature_set,
                event_time_ms=event_time_ms,
                event_id=event_id,
                feature_names=names,
                served_at_ms=served_at_ms,
            )
        except (SchemaError, TypeError) as e:
            # An exception here would end the log's thread: count it and go on
            # (TypeError: orjson met a value it cannot encode).
            self.failed += 1
            self.metrics.predictions_logged.labels("failed").inc()
            log.error("prediction %s not logged: %s", prediction.request_id, e)
            return
        for attempt in range(2):
            try:
                self._producer.produce(self.topic, payload, key=key, on_delivery=self._on_delivery)
                self._produced += 1
                return
            except BufferError:
                # librdkafka's own queue is full: give it a moment once, then drop.
                if attempt == 0:
                    self._producer.poll(0.05)
        self._drop()

    def _reports(self) -> None:
        self._producer.poll(0)  # failure reports
        self._count_delivered()

    def _count_delivered(self) -> None:
        # Failures are reported before their message leaves the queue, so this
        # never counts a failed message as delivered.
        delivered = self._produced - self.failed - len(self._producer)
        if delivered > self.delivered:
            self._delivered_metric.inc(delivered - self.delivered)
            self.delivered = delivered

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # not reported with delivery.report.only.error; counted anyway
            return
        self.failed += 1
        self.metrics.predictions_logged.labels("failed").inc()
        log.warning("prediction log delivery failed: %s", err)


def prediction_log_overrides(conf: ServingSettings) -> dict[str, Any]:
    """The prediction log's producer settings from ``serving.*``.

    >>> prediction_log_overrides(ServingSettings())
    {'linger.ms': 20, 'message.timeout.ms': 300000}
    """
    if conf.prediction_log_timeout_s <= 0:
        raise ConfigError(
            f"serving.prediction_log_timeout_s must be > 0 (got {conf.prediction_log_timeout_s}); "
            "it is how long a prediction may wait for the broker"
        )
    return {
        "linger.ms": conf.prediction_log_linger_ms,
        "message.timeout.ms": int(conf.prediction_log_timeout_s * 1000),
    }


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
    """The JSON ``schemas.encode(PredictionLog(...))`` gives, built directly.

    ``feature_status`` lists only features that were not fresh (absent: ok).
    Raises :class:`SchemaError` for a NaN or infinite score or feature, which
    the contract's encoder refuses too.
    """
    if not math.isfinite(prediction.score) or not all(map(math.isfinite, prediction.features)):
        raise SchemaError(
            f"prediction {prediction.request_id}: a non-finite score or feature is not JSON"
        )
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
    return orjson.dumps(dict(zip(_FIELDS, values, strict=True)), option=orjson.OPT_SERIALIZE_NUMPY)
