"""The labels flow on the real stack: Kafka in, the offline store and the labeled topic out.

Each expected example must be in the offline store once (as read by the
``offline_store`` reader functions *and* counting raw rows across files) and
on the labeled topic once (read_committed), whatever happens: outcomes before
or after their predictions, bad input, a ``kill -9`` mid-stream, a crash
between the Kafka commit and the Parquet files, a transaction left open.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from fraud_repo import FRAUD_FEATURES

from loopline.config.kafka import consumer_config, producer_config
from loopline.contracts.schemas import (
    DeadLetter,
    LabeledExample,
    Outcome,
    PredictionLog,
    decode,
    encode,
)
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.storage.offline_store import data_files, partitions, read_examples
from loopline.streams.features.run import RunOptions
from loopline.streams.labels import output as labels_output
from loopline.streams.labels.config import LabelsFlowConfig
from loopline.streams.labels.metrics import label_metrics
from loopline.streams.labels.output import LabeledWriter
from loopline.streams.labels.run import run_labels

T0 = 1_700_000_000_000
FP = FRAUD_FEATURES.fingerprint
N_FEATURES = len(FRAUD_FEATURES.model_features)


# -- data -----------------------------------------------------------------------------------
def prediction(i: int, t: int, *, eid: str | None = None, rid: str | None = None) -> PredictionLog:
    rng = random.Random(i)
    return PredictionLog(
        request_id=rid or f"r{i}",
        model_name="fraud",
        model_version="3",
        feature_set="fraud",
        fingerprint=FP,
        entities={"card": f"c{i % 97}", "merchant": f"m{i % 13}"},
        features=[rng.random() * 100 for _ in range(N_FEATURES)],
        score=rng.random(),
        event_time=t,
        served_at_ms=t + 2,
        event_id=f"e{i}" if eid is None else eid,
    )


def expected_label(i: int) -> tuple[int, str]:
    """Every 4th event gets an outcome (every 8th is fraud); the others time out as legit."""
    if i % 4:
        return 0, "timeout"
    return (1 if i % 8 == 0 else 0), "outcome"


def stream(start: int, n: int) -> list[tuple[str, bytes, bytes]]:
    """(topic kind, key, value) in event-time order; outcomes 2 s after their event."""
    out: list[tuple[int, str, bytes, bytes]] = []
    for i in range(start, start + n):
        t = T0 + i * 10
        out.append((t, "p", f"r{i}".encode(), encode(prediction(i, t))))
        if i % 4 == 0:
            outcome = Outcome(f"e{i}", expected_label(i)[0], t + 2_000)
            out.append((t + 2_000, "o", f"e{i}".encode(), encode(outcome)))
    out.sort(key=lambda x: x[0])
    return [(kind, key, value) for _, kind, key, value in out]


def sentinel(i: int) -> tuple[str, bytes, bytes]:
    """A prediction far ahead: the watermark passes every other window, it stays pending."""
    t = T0 + i * 10 + 3_600_000
    return "p", b"sentinel", encode(prediction(i, t, rid="sentinel", eid="sentinel"))


# -- Kafka and store helpers ------------------------------------------------------------------
def produce(
    settings: Settings, topics: Topics, records: list[tuple[str, bytes, bytes]], rate: float = 0
) -> None:
    producer = Producer(
        producer_config(settings.kafka, **{"queue.buffering.max.messages": 500_000})
    )
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    started = time.monotonic()
    names = {"p": topics.predictions, "o": topics.outcomes}
    for n, (kind, key, value) in enumerate(records):
        while True:
            try:
                producer.produce(names[kind], value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if rate and n % 200 == 0:
            producer.poll(0)
            ahead = started + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    assert producer.flush(60) == 0 and not failures, failures


def read_topic(settings: Settings, topic: str) -> list[Message]:
    """Every committed message of ``topic`` right now."""
    consumer = Consumer(
        consumer_config(
            settings.kafka, f"check-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, -2) for p in parts])
    out: list[Message] = []
    open_parts = set(parts)
    deadline = time.monotonic() + 60
    try:
        while open_parts and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                open_parts.discard(msg.partition())
    finally:
        consumer.close()
    assert not open_parts, f"{topic}: partitions {open_parts} not read to the end"
    return out


def store_files(root: Path) -> list[Path]:
    return [f for part in partitions(root) for f in data_files(part)]


def store_rows(root: Path) -> list[LabeledExample]:
    """Every row of every complete file: duplicates would show here."""
    return [e for f in store_files(root) for e in read_examples(f)]


def labeled(settings: Settings, topics: Topics) -> list[LabeledExample]:
    return [decode(LabeledExample, m.value() or b"") for m in read_topic(settings, topics.labeled)]


def summary(rows: list[LabeledExample]) -> dict[str, tuple[int, str]]:
    return {e.request_id: (e.label, e.resolution) for e in rows}


def assert_each_once(rows: list[LabeledExample], expected: dict[str, tuple[int, str]]) -> None:
    dupes = [rid for rid, n in Counter(e.request_id for e in rows).items() if n > 1]
    assert not dupes, f"{len(dupes)} request ids more than once, e.g. {dupes[:5]}"
    got = summary(rows)
    assert got.keys() == expected.keys(), (
        f"missing {sorted(expected.keys() - got.keys())[:5]}, "
        f"unexpected {sorted(got.keys() - expected.keys())[:5]}"
    )
    wrong = {rid: (got[rid], expected[rid]) for rid in got if got[rid] != expected[rid]}
    assert not wrong, f"{len(wrong)} wrong labels, e.g. {list(wrong.items())[:5]}"


def flow_settings(isolated_settings: Settings, store: Path, **labels: Any) -> Settings:
    defaults: dict[str, Any] = {"maturity_s": 60.0, "allowed_lateness_s": 5.0, "shards": 8}
    defaults.update(labels)
    return replace(
        isolated_settings,
        trainer=replace(isolated_settings.trainer, offline_store=store),
        labels=replace(isolated_settings.labels, **defaults),
    )


# -- tests ------------------------------------------------------------------------------------
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
    on_topic = labeled(settings, topics)
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
        decode(DeadLetter, m.value() or b"") for m in read_topic(settings, topics.dead_letters)
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


class Flow:
    """``python -m loopline.streams run labels`` as a child process."""

    def __init__(self, settings: Settings, recovery: Path, log: Path, *args: str) -> None:
        env = dict(os.environ)
        env.update(
            {
                "LOOPLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "LOOPLINE_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
                "LOOPLINE_KAFKA__CONSUMER_GROUP_PREFIX": settings.kafka.consumer_group_prefix,
                "LOOPLINE_TRAINER__OFFLINE_STORE": str(settings.trainer.offline_store),
                "LOOPLINE_LABELS__MATURITY_S": str(settings.labels.maturity_s),
                "LOOPLINE_LABELS__ALLOWED_LATENESS_S": str(settings.labels.allowed_lateness_s),
                "LOOPLINE_LABELS__SHARDS": str(settings.labels.shards),
                "LOOPLINE_LABELS__WRITERS": str(settings.labels.writers),
                "LOOPLINE_LABELS__FLUSH_INTERVAL_S": str(settings.labels.flush_interval_s),
            }
        )
        cmd = [sys.executable, "-m", "loopline.streams", "run", "labels", "--no-metrics"]
        cmd += ["--recovery-dir", str(recovery), *args]
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in wait/kill9
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait(self, timeout_s: float = 180.0) -> None:
        try:
            code = self.proc.wait(timeout_s)
        finally:
            self._out.close()
        assert code == 0, f"flow exited {code}:\n{self.log.read_text()[-3000:]}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._out.close()


def test_kill_9_mid_stream_then_restart_writes_each_example_once(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = flow_settings(
        isolated_settings, tmp_path / "offline", writers=2, flush_interval_s=0.5
    )
    store, recovery, log = settings.trainer.offline_store, tmp_path / "recovery", tmp_path / "log"
    first, second = 8_000, 24_000
    produce(settings, topics, stream(0, first))
    flow = Flow(settings, recovery, log)
    # The first part's windows close once the flow is idle at the end of it.
    expected_first = {f"r{i}": expected_label(i) for i in range(first - 6_500)}
    deadline = time.monotonic() + 120
    while not expected_first.keys() <= summary(store_rows(store)).keys():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        assert flow.proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.3)
    # The second part arrives at a steady pace; the flow dies in the middle of it.
    producer = threading.Thread(
        target=produce, args=(settings, topics, stream(first, second), 6_000.0)
    )
    producer.start()
    time.sleep(2.0)
    flow.kill9()
    producer.join()
    produce(settings, topics, [sentinel(first + second + 100)])
    expected = {f"r{i}": expected_label(i) for i in range(first + second)}
    before = summary(store_rows(store))
    assert len(before) < len(expected), "the kill came too late to test anything"

    # Killed again while catching up (the restart's own reconciliation state must survive).
    again = Flow(settings, recovery, log)
    deadline = time.monotonic() + 60
    while len(summary(store_rows(store))) <= len(before):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        assert again.proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)
    again.kill9()
    Flow(settings, recovery, log, "--drain", "2").wait()

    rows = store_rows(store)
    assert_each_once(rows, expected)
    assert len(rows) == len(expected)  # raw rows across files: no duplicate at all
    on_topic = read_topic(settings, topics.labeled)
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
    on_topic = [
        decode(LabeledExample, m.value() or b"")
        for m in read_topic(isolated_settings, writer_cfg.labeled_topic)
    ]
    assert sorted(on_topic, key=lambda e: e.request_id) == sorted(
        everything, key=lambda e: e.request_id
    )


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
