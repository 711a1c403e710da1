"""The labels flow's integration tests: a prediction/outcome stream, the flow's settings,
and checks that each expected example landed exactly once."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from flow_process import FlowProcess
from fraud_repo import FRAUD_FEATURES
from kafka_support import kafka_env, produce_records, read_to_end

from loopline.contracts.schemas import LabeledExample, Outcome, PredictionLog, decode, encode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.storage.offline_store import data_files, partitions, read_examples
from loopline.streams.labels.inputs import PredictionIn, SourceRecord, decode_prediction

T0 = 1_700_000_000_000
N_FEATURES = len(FRAUD_FEATURES.model_features)

# (kind: "p" prediction or "o" outcome, key, value)
LabelsRecord = tuple[str, bytes, bytes]


# -- data -----------------------------------------------------------------------------------
def prediction(i: int, t: int, *, eid: str | None = None, rid: str | None = None) -> PredictionLog:
    rng = random.Random(i)
    return PredictionLog(
        request_id=rid or f"r{i}",
        model_name="fraud",
        model_version="3",
        feature_set="fraud",
        fingerprint=FRAUD_FEATURES.fingerprint,
        entities={"card": f"c{i % 97}", "merchant": f"m{i % 13}"},
        features=[rng.random() * 100 for _ in range(N_FEATURES)],
        score=rng.random(),
        event_time=t,
        served_at_ms=t + 2,
        event_id=f"e{i}" if eid is None else eid,
    )


def prediction_in(log: PredictionLog, partition: int = 1, offset: int = 0) -> PredictionIn:
    """``log`` as the labels flow's join receives it, decoded from its Kafka record."""
    raw = SourceRecord("preds", partition, offset, log.request_id.encode(), encode(log))
    item = decode_prediction(raw)
    assert isinstance(item, PredictionIn), item
    return item


def expected_label(i: int) -> tuple[int, str]:
    """Every 4th event gets an outcome (every 8th is fraud); the others time out as legit."""
    if i % 4:
        return 0, "timeout"
    return (1 if i % 8 == 0 else 0), "outcome"


def in_time_order(timed: list[tuple[int, str, bytes, bytes]]) -> list[LabelsRecord]:
    """(time, kind, key, value) sorted by time, the time dropped."""
    timed.sort(key=lambda x: x[0])
    return [(kind, key, value) for _, kind, key, value in timed]


def stream(start: int, n: int) -> list[LabelsRecord]:
    """Predictions in event-time order; outcomes 2 s after their event."""
    out: list[tuple[int, str, bytes, bytes]] = []
    for i in range(start, start + n):
        t = T0 + i * 10
        out.append((t, "p", f"r{i}".encode(), encode(prediction(i, t))))
        if i % 4 == 0:
            outcome = Outcome(f"e{i}", expected_label(i)[0], t + 2_000)
            out.append((t + 2_000, "o", f"e{i}".encode(), encode(outcome)))
    return in_time_order(out)


def sentinel(i: int) -> LabelsRecord:
    """A prediction far ahead: the watermark passes every other window, it stays pending."""
    t = T0 + i * 10 + 3_600_000
    return "p", b"sentinel", encode(prediction(i, t, rid="sentinel", eid="sentinel"))


# -- running the flow -----------------------------------------------------------------------
def produce(
    settings: Settings, topics: Topics, records: list[LabelsRecord], rate: float = 0
) -> None:
    """Predictions and outcomes on their topics, acknowledged; ``rate`` in records/s."""
    names = {"p": topics.predictions, "o": topics.outcomes}
    produce_records(
        settings, ((names[kind], key, value) for kind, key, value in records), rate=rate
    )


def flow_settings(isolated_settings: Settings, store: Path, **labels: Any) -> Settings:
    defaults: dict[str, Any] = {"maturity_s": 60.0, "allowed_lateness_s": 5.0, "shards": 8}
    defaults.update(labels)
    return replace(
        isolated_settings,
        trainer=replace(isolated_settings.trainer, offline_store=store),
        labels=replace(isolated_settings.labels, **defaults),
    )


def labels_flow(settings: Settings, recovery: Path, log: Path, *args: str) -> FlowProcess:
    """``python -m loopline.streams run labels`` with ``settings`` passed in its environment."""
    labels = settings.labels
    env = {
        **kafka_env(settings),
        "LOOPLINE_TRAINER__OFFLINE_STORE": str(settings.trainer.offline_store),
        "LOOPLINE_LABELS__MATURITY_S": str(labels.maturity_s),
        "LOOPLINE_LABELS__ALLOWED_LATENESS_S": str(labels.allowed_lateness_s),
        "LOOPLINE_LABELS__SHARDS": str(labels.shards),
        "LOOPLINE_LABELS__WRITERS": str(labels.writers),
        "LOOPLINE_LABELS__FLUSH_INTERVAL_S": str(labels.flush_interval_s),
    }
    return FlowProcess("labels", env, log, "--no-metrics", "--recovery-dir", str(recovery), *args)


# -- what came out ----------------------------------------------------------------------------
def store_files(root: Path) -> list[Path]:
    return [f for part in partitions(root) for f in data_files(part)]


def store_rows(root: Path) -> list[LabeledExample]:
    """Every row of every complete file: duplicates would show here."""
    return [e for f in store_files(root) for e in read_examples(f)]


def labeled_on_topic(settings: Settings, topic: str) -> list[LabeledExample]:
    return [decode(LabeledExample, m.value() or b"") for m in read_to_end(settings, topic)]


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


def first_part_then_steady(
    settings: Settings,
    topics: Topics,
    flow: FlowProcess,
    first: int,
    second: int,
    *,
    timeout_s: float,
    interval_s: float,
) -> threading.Thread:
    """Wait until ``flow`` stored the first part's examples (its windows close once
    the flow is idle at the end of it), then start sending the second part at a
    steady 6,000/s; returns the sending thread (a crash is due in the middle of it)."""
    store = settings.trainer.offline_store
    expected_first = {f"r{i}": expected_label(i) for i in range(first - 6_500)}
    flow.until(
        lambda: expected_first.keys() <= summary(store_rows(store)).keys(),
        "the first part's examples",
        timeout_s=timeout_s,
        interval_s=interval_s,
    )
    producer = threading.Thread(
        target=produce, args=(settings, topics, stream(first, second), 6_000.0)
    )
    producer.start()
    return producer
