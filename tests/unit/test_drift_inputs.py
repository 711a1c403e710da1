"""Decoding drift inputs and feeding a model's monitor: bad input becomes dead letters."""

from __future__ import annotations

from dataclasses import replace

from loopline.contracts.schemas import DeadLetter, LabeledExample, PredictionLog, encode
from loopline.streams.drift import DriftMonitor
from loopline.streams.drift.inputs import (
    LABELED,
    PREDICTIONS,
    DriftInput,
    decode_input,
    monitor_batch,
)

LOG = PredictionLog("r1", "fraud", "3", "fraud", "fp", {}, [1.0, 2.0], 0.1, 5, 6)
EXAMPLE = LabeledExample("r1", "e1", "fraud", "3", "fp", {}, [1.0, 2.0], 0.1, 0, 5, 7)


def item(stream: str, payload: object, offset: int) -> DriftInput:
    decoded = decode_input(
        stream, encode(payload), topic=f"t.{stream}", partition=1, offset=offset, key=b"k"
    )
    assert isinstance(decoded, DriftInput)
    return decoded


def test_each_stream_decodes_its_own_schema() -> None:
    assert item(PREDICTIONS, LOG, 1).payload == LOG
    assert item(LABELED, EXAMPLE, 2).payload == EXAMPLE
    # A prediction log is not a labeled example: it lacks the label.
    wrong = decode_input(LABELED, encode(LOG), topic="t.labeled", partition=0, offset=9)
    assert isinstance(wrong, DeadLetter) and wrong.reason == "malformed"
    assert "label" in wrong.error and wrong.original_value() == encode(LOG)


def test_a_batch_counts_outcomes_and_dead_letters_refused_vectors() -> None:
    monitor = DriftMonitor("fraud", ["a", "b"])
    batch = [
        item(PREDICTIONS, LOG, 1),
        item(PREDICTIONS, replace(LOG, features=[1.0]), 2),
        item(PREDICTIONS, replace(LOG, arm="shadow"), 3),
        item(LABELED, EXAMPLE, 4),
    ]
    result = monitor_batch(monitor, batch, now_ms=123)
    assert result.events == []
    assert result.counts == {
        (PREDICTIONS, "monitored"): 1,
        (PREDICTIONS, "invalid"): 1,
        (PREDICTIONS, "skipped"): 1,
        (LABELED, "monitored"): 1,
    }
    [letter] = result.dead_letters
    assert (letter.reason, letter.offset, letter.partition, letter.time_ms) == (
        "invalid",
        2,
        1,
        123,
    )
    assert "expected 2 values" in letter.error
    assert monitor.n_predictions == 1 and monitor.n_labeled == 1
