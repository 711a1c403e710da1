"""Raw records of the predictions and labeled topics, decoded for the drift monitor.

Engine-neutral: a dataflow adapter reads Kafka, calls :func:`decode_input` per
record, keys the :class:`DriftInput` values by model name, feeds them to
:func:`monitor_batch` with that model's :class:`DriftMonitor`, and publishes
what comes out. Bad input never stops anything: it becomes a
:class:`DeadLetter` naming its source.

>>> from loopline.contracts.schemas import encode, PredictionLog
>>> log = PredictionLog("r1", "fraud", "3", "fraud", "fp", {}, [1.0, 2.0], 0.1, 5, 6)
>>> item = decode_input(PREDICTIONS, encode(log), topic="loopline.predictions", partition=0,
...                     offset=41)
>>> item.model_name, item.offset, item.payload.score
('fraud', 41, 0.1)
>>> bad = decode_input(LABELED, b"{oops", topic="loopline.labeled", partition=2, offset=7)
>>> bad.reason, bad.source_topic, bad.offset
('malformed', 'loopline.labeled', 7)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import DeadLetter, DriftEvent, LabeledExample, PredictionLog, decode
from loopline.streams.drift.monitor import DriftMonitor

PREDICTIONS = "predictions"
LABELED = "labeled"
REASON_MALFORMED = "malformed"
REASON_INVALID = "invalid"


@dataclass(frozen=True)
class DriftInput:
    """One decoded payload with where it came from (for dead letters)."""

    stream: str  # PREDICTIONS | LABELED
    model_name: str
    payload: PredictionLog | LabeledExample
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


@dataclass
class BatchResult:
    """What one batch of inputs produced for one model."""

    events: list[DriftEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (stream, outcome) -> count; outcome: "monitored" | "skipped" | "invalid"
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, stream: str, outcome: str) -> None:
        self.counts[stream, outcome] = self.counts.get((stream, outcome), 0) + 1


def decode_input(
    stream: str,
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None = None,
    now_ms: int = 0,
) -> DriftInput | DeadLetter:
    """Decode one record of ``stream``; a malformed one becomes a dead letter."""
    cls = PredictionLog if stream == PREDICTIONS else LabeledExample
    try:
        payload = decode(cls, value or b"")
    except SchemaError as e:
        return DeadLetter.of(
            source_topic=topic,
            partition=partition,
            offset=offset,
            reason=REASON_MALFORMED,
            error=str(e),
            value=value,
            key=key,
            time_ms=now_ms,
        )
    return DriftInput(stream, payload.model_name, payload, topic, partition, offset, key, value)


def monitor_batch(monitor: DriftMonitor, inputs: list[DriftInput], now_ms: int) -> BatchResult:
    """Feed one model's inputs to its monitor, in order."""
    result = BatchResult()
    for item in inputs:
        before = monitor.n_skipped
        try:
            if item.stream == PREDICTIONS:
                assert isinstance(item.payload, PredictionLog)
                events = monitor.update_prediction(item.payload)
            else:
                assert isinstance(item.payload, LabeledExample)
                events = monitor.update_labeled(item.payload)
        except SchemaError as e:
            result.count(item.stream, REASON_INVALID)
            result.dead_letters.append(
                DeadLetter.of(
                    source_topic=item.topic,
                    partition=item.partition,
                    offset=item.offset,
                    reason=REASON_INVALID,
                    error=f"drift monitor refused it: {e}",
                    value=item.value,
                    key=item.key,
                    time_ms=now_ms,
                )
            )
            continue
        result.count(item.stream, "skipped" if monitor.n_skipped > before else "monitored")
        result.events.extend(events)
    return result
