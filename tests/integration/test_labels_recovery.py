"""The labels flow's crash recovery on the real stack: each example once, whatever happens.

A ``kill -9`` mid-stream and again while catching up, a crash between the
Kafka commit and the Parquet files, a transaction left open by a dead writer:
each expected example still ends up in the offline store once and on the
labeled topic once (read_committed).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka_support import read_to_end
from labels_support import (
    T0,
    assert_each_once,
    expected_label,
    first_part_then_steady,
    flow_settings,
    labeled_on_topic,
    labels_flow,
    prediction,
    produce,
    sentinel,
    store_files,
    store_rows,
    stream,
    summary,
)

from loopline.contracts.schemas import LabeledExample, decode, encode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.streams.labels import output as labels_output
from loopline.streams.labels.config import LabelsFlowConfig
from loopline.streams.labels.output import LabeledWriter


def test_kill_9_mid_stream_then_restart_writes_each_example_once(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = flow_settings(
        isolated_settings, tmp_path / "offline", writers=2, flush_interval_s=0.5
    )
    store, recovery, log = settings.trainer.offline_store, tmp_path / "recovery", tmp_path / "log"
    first, second = 8_000, 24_000
    produce(settings, topics, stream(0, first))
    flow = labels_flow(settings, recovery, log)
    producer = first_part_then_steady(
        settings, topics, flow, first, second, timeout_s=120, interval_s=0.3
    )
    time.sleep(2.0)
    flow.kill9()
    producer.join()
    produce(settings, topics, [sentinel(first + second + 100)])
    expected = {f"r{i}": expected_label(i) for i in range(first + second)}
    before = summary(store_rows(store))
    assert len(before) < len(expected), "the kill came too late to test anything"

    # Killed again while catching up (the restart's own reconciliation state must survive).
    again = labels_flow(settings, recovery, log)
    again.until(
        lambda: len(summary(store_rows(store))) > len(before),
        "progress after the restart",
        timeout_s=60,
        interval_s=0.1,
    )
    again.kill9()
    labels_flow(settings, recovery, log, "--drain", "2").wait()

    rows = store_rows(store)
    assert_each_once(rows, expected)
    assert len(rows) == len(expected)  # raw rows across files: no duplicate at all
    on_topic = read_to_end(settings, topics.labeled)
    keys = Counter(m.key() for m in on_topic)
    assert max(keys.values()) == 1 and len(keys) == len(expected)
    assert_each_once([decode(LabeledExample, m.value() or b"") for m in on_topic], expected)
    # Files are named after the writer and its flush number, one per touched hour.
    names = {f.name for f in store_files(store)}
    assert {n[:8] for n in names} == {"lbl-000-", "lbl-001-"}


@pytest.fixture
def writer_cfg(isolated_settings: Settings, tmp_path: Path) -> LabelsFlowConfig:
    settings = flow_settings(isolated_settings, tmp_path / "offline", transaction_timeout_s=10.0)
    return LabelsFlowConfig.from_settings(settings)


def example(i: int, hour: int) -> LabeledExample:
    t = T0 + hour * 3_600_000 + i
    p = prediction(i, t)
    return LabeledExample(
        request_id=p.request_id,
        event_id=p.event_id,
        model_name=p.model_name,
        model_version=p.model_version,
        fingerprint=p.fingerprint,
        entities=p.entities,
        features=p.features,
        score=p.score,
        label=i % 2,
        event_time=t,
        labeled_at_ms=t + 1,
    )


def test_writer_repairs_a_crash_between_commit_and_parquet_and_aborts_open_transactions(
    writer_cfg: LabelsFlowConfig, isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = writer_cfg.store_root
    first = [example(i, hour=i % 2) for i in range(3)]
    a = LabeledWriter(writer_cfg, "000")
    assert a.add((e, 0.0) for e in first) == 0
    assert a.flush() is not None
    state = a.state()
    assert state[1] == 1

    # Flush 1 commits to Kafka, then dies after the first of its two hour files.
    second = [example(i, hour=i % 2) for i in range(3, 7)]
    real_write = labels_output.write_examples

    def first_hour_then_die(root_: Any, examples: list[LabeledExample], name: str) -> list[Path]:
        hour0 = [e for e in examples if (e.event_time - T0) // 3_600_000 == 0]
        real_write(root_, hour0, name)
        raise KeyboardInterrupt("killed between two Parquet files")

    monkeypatch.setattr(labels_output, "write_examples", first_hour_then_die)
    a.add((e, 0.0) for e in second)
    with pytest.raises(KeyboardInterrupt):
        a.flush()
    monkeypatch.setattr(labels_output, "write_examples", real_write)

    # Restart from the snapshot taken after flush 0: flush 1 is rebuilt from the topic.
    b = LabeledWriter(writer_cfg, "000", state)
    assert b.reconciled.next_seq == 2 and len(b.reconciled.repaired) == 2
    assert b.reconciled.suppressed == len(second)
    assert sorted(e.request_id for e in store_rows(root)) == sorted(
        e.request_id for e in first + second
    )
    # The replay emits flush 1's examples again: suppressed; a new one goes to flush 2.
    new = example(7, hour=0)
    assert b.add((e, 0.0) for e in [*second, new]) == len(second)
    result = b.flush()
    assert result is not None and result.seq == 2 and [e for e, _ in result.examples] == [new]

    # A transaction left open by a dead writer is aborted by its successor.
    producer = b._producer
    producer.begin_transaction()
    producer.produce(writer_cfg.labeled_topic, encode(example(99, 0)), b"r99")
    assert producer.flush(10) == 0
    c = LabeledWriter(writer_cfg, "000", b.state())
    assert c.reconciled.next_seq == 3 and c.reconciled.suppressed == 0

    everything = [*first, *second, new]
    assert sorted(e.request_id for e in store_rows(root)) == sorted(
        e.request_id for e in everything
    )
    on_topic = labeled_on_topic(isolated_settings, writer_cfg.labeled_topic)
    assert sorted(on_topic, key=lambda e: e.request_id) == sorted(
        everything, key=lambda e: e.request_id
    )
