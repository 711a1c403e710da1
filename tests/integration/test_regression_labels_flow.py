"""The labels flow with a regression task, on the real stack (Kafka + Redis fixtures):
float labels joined exactly, timed-out predictions dropped, a non-number dead-lettered."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest
from kafka_support import read_to_end
from labels_support import (
    T0,
    LabelsRecord,
    flow_settings,
    in_time_order,
    labeled_on_topic,
    prediction,
    produce,
    store_rows,
)

from loopline.contracts.schemas import Outcome, encode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.streams.features.run import RunOptions
from loopline.streams.labels.run import run_labels

pytestmark = pytest.mark.integration

N = 400


def target(i: int) -> float:
    return 100.0 + i * 0.25 - (i % 7) * 1.125  # exact binary fractions: compared with ==


def records() -> list[LabelsRecord]:
    """Predictions of a price; every event but each 4th gets its outcome 2 s later."""
    out: list[tuple[int, str, bytes, bytes]] = []
    for i in range(N):
        t = T0 + i * 10
        log = replace(prediction(i, t), model_name="price", score=target(i) + 3.0)
        out.append((t, "p", log.request_id.encode(), encode(log)))
        if i % 4 != 3:
            outcome = Outcome(f"e{i}", target(i), t + 2_000)
            out.append((t + 2_000, "o", f"e{i}".encode(), encode(outcome)))
    return in_time_order(out)


def test_regression_labels_flow_joins_floats_and_drops_timeouts(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = flow_settings(
        isolated_settings, tmp_path / "offline", flush_interval_s=0.5, timeout_policy="drop"
    )
    bad = [("o", b"bad", b'{"event_id":"e3","label":"12.5","event_time":%d}' % (T0 + 99))]
    far = replace(prediction(N + 100, T0 + 3_600_000, rid="sentinel", eid="sentinel"))
    produce(settings, topics, records()[:300] + bad + records()[300:])
    produce(settings, topics, [("p", b"sentinel", encode(far))])  # moves the watermark on

    run_labels(
        settings, RunOptions(recovery=False, metrics=False, drain_idle_s=2.0), task="regression"
    )

    rows = store_rows(settings.trainer.offline_store)
    expected = {f"r{i}": target(i) for i in range(N) if i % 4 != 3}
    assert {e.request_id: e.label for e in rows} == expected
    assert len(rows) == len(expected)  # each once; timed-out predictions dropped
    assert {e.resolution for e in rows} == {"outcome"}
    assert all(e.score == e.label + 3.0 for e in rows)
    on_topic = labeled_on_topic(settings, topics.labeled)
    key = lambda e: e.request_id  # noqa: E731
    assert sorted(on_topic, key=key) == sorted(rows, key=key)
    letters = [json.loads(m.value() or b"{}") for m in read_to_end(settings, topics.dead_letters)]
    invalid = [
        d for d in letters if base64.b64decode(d["value_b64"]).startswith(b'{"event_id":"e3"')
    ]
    assert [(d["reason"], d["error"]) for d in invalid] == [
        ("invalid", "Outcome.label: expected a number, got str '12.5'")
    ]
