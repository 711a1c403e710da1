"""The labels flow on the real stack, in process: Kafka in, the offline store and the
labeled topic out.

Each expected example must be in the offline store once (as read by the
``offline_store`` reader functions *and* counting raw rows across files) and
on the labeled topic once (read_committed), whatever the input: outcomes before
or after their predictions, shadow-arm logs, logs without an event id, bad input.
Crash recovery is in test_labels_recovery.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from fraud_repo import FRAUD_FEATURES
from kafka_support import read_to_end
from labels_support import (
    T0,
    assert_each_once,
    expected_label,
    flow_settings,
    labeled_on_topic,
    prediction,
    produce,
    sentinel,
    store_rows,
    stream,
)

from loopline.contracts.schemas import DeadLetter, Outcome, decode, encode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.streams.features.run import RunOptions
from loopline.streams.labels.metrics import label_metrics
from loopline.streams.labels.run import run_labels


def test_end_to_end_join_to_the_offline_store_and_the_labeled_topic(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = flow_settings(isolated_settings, tmp_path / "offline", flush_interval_s=0.5)
    n = 3000
    records = stream(0, n)
    # Outcomes of the first 400 events are on the outcomes topic before any prediction.
    early = [r for r in records if r[0] == "o" and int(r[1][1:]) < 400]
    records = [r for r in records if r not in early]
    # Shadow-arm logs of the same events, and logs without an event id (joined by request id).
    extra = []
    for i in range(0, 200, 8):
        log = replace(prediction(i, T0 + i * 10, rid=f"r{i}-shadow"), arm="challenger")
        extra.append(("p", log.request_id.encode(), encode(log)))
    for i in range(n, n + 40):
        log = prediction(i, T0 + 25_000, eid="")
        extra.append(("p", log.request_id.encode(), encode(log)))
        if i % 2:
            extra.append(
                ("o", log.request_id.encode(), encode(Outcome(log.request_id, 1, T0 + 26_000)))
            )
    orphans = [("o", f"x{i}".encode(), encode(Outcome(f"x{i}", 1, T0 + i))) for i in range(10)]
    bad = [
        ("p", b"b1", b"{not json"),
        ("p", b"b2", encode(prediction(9_999_999, T0)).replace(b'"score":', b'"score":"x","_":')),
        ("o", b"b3", b"[]"),
        ("o", b"b4", encode(Outcome("e1", 1, T0)).replace(b'"label":1', b'"label":7')),
    ]
    duplicate = records[10]  # the same prediction log twice
    produce(settings, topics, early + orphans)
    produce(settings, topics, records[:1500] + bad + [duplicate] + extra + records[1500:])
    produce(settings, topics, [sentinel(n + 100)])
    unmatched = label_metrics().records.labels("outcomes", "unmatched")
    before = unmatched._value.get()

    run_labels(settings, RunOptions(recovery=False, metrics=False, drain_idle_s=2.0))

    expected = {f"r{i}": expected_label(i) for i in range(n)}
    expected.update({f"r{i}-shadow": expected_label(i) for i in range(0, 200, 8)})
    expected.update(
        {f"r{i}": (1, "outcome") if i % 2 else (0, "timeout") for i in range(n, n + 40)}
    )
    rows = store_rows(settings.trainer.offline_store)
    assert_each_once(rows, expected)
    on_topic = labeled_on_topic(settings, topics.labeled)
    assert sorted(on_topic, key=lambda e: e.request_id) == sorted(rows, key=lambda e: e.request_id)
    by_id = {e.request_id: e for e in rows}
    src = prediction(8, T0 + 80)
    assert (by_id["r8"].features, by_id["r8"].entities, by_id["r8"].score) == (
        src.features,
        src.entities,
        src.score,
    )
    assert by_id["r8"].labeled_at_ms == T0 + 80 + 2_000  # when the outcome happened
    assert by_id["r1"].labeled_at_ms == T0 + 10 + 60_000  # when the window closed
    assert by_id["r8-shadow"].arm == "challenger" and by_id[f"r{n + 1}"].event_id == f"r{n + 1}"
    letters = [
        decode(DeadLetter, m.value() or b"") for m in read_to_end(settings, topics.dead_letters)
    ]
    assert sorted((d.source_topic, d.reason, d.original_value()) for d in letters) == sorted(
        [
            (topics.predictions, "malformed", bad[0][2]),
            (topics.predictions, "invalid", bad[1][2]),
            (topics.outcomes, "malformed", bad[2][2]),
            (topics.outcomes, "invalid", bad[3][2]),
        ]
    )
    assert unmatched._value.get() - before == 10

    # The trainer's reader sees the same rows, and no duplicate to drop.
    from loopline.trainer.offline import load_window

    ts = load_window(settings.trainer.offline_store, FRAUD_FEATURES, window_hours=24)
    assert sorted(ts.ids) == sorted(e.event_id for e in rows)
    assert "duplicates" not in ts.dropped


def test_processing_time_windows_run_on_the_wall_clock(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    """Old event times, yet nothing times out until the window has passed on the wall clock."""
    settings = flow_settings(
        isolated_settings,
        tmp_path / "offline",
        time="processing",
        maturity_s=1.5,
        allowed_lateness_s=0.0,
        flush_interval_s=0.5,
    )
    records = stream(0, 400)
    produce(settings, topics, records)
    started = time.time() * 1000

    run_labels(settings, RunOptions(recovery=False, metrics=False, drain_idle_s=4.0))

    rows = store_rows(settings.trainer.offline_store)
    assert_each_once(rows, {f"r{i}": expected_label(i) for i in range(400)})
    timeouts = [e for e in rows if e.resolution == "timeout"]
    # Labeled when the window passed on the wall clock, not at event time + maturity.
    assert all(e.labeled_at_ms >= started + 1_500 for e in timeouts)
    assert all(e.labeled_at_ms <= time.time() * 1000 for e in rows)
