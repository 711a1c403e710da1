"""Regression labels through the labels flow's pure parts: outcome decoding by task,
the join's timeout (dropped), the offline store's float labels and the config check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from labels_support import prediction_in

from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import (
    DeadLetter,
    LabeledExample,
    Outcome,
    PredictionLog,
    decode,
    encode,
)
from loopline.contracts.settings import Settings
from loopline.storage import offline_store
from loopline.streams.labels.config import LabelsFlowConfig
from loopline.streams.labels.inputs import (
    OutcomeIn,
    PredictionIn,
    SourceRecord,
    Tick,
    decode_outcome,
)
from loopline.streams.labels.join import JoinPolicy, JoinShard

pytestmark = pytest.mark.unit

MIN = 60_000
T0 = 1_700_000_000_000


def record(doc: dict[str, object], offset: int = 0) -> SourceRecord:
    return SourceRecord("outs", 0, offset, None, json.dumps(doc).encode())


def pred(rid: str, eid: str, t: int, score: float = 41.5) -> PredictionIn:
    log = PredictionLog(rid, "price", "1", "fs", "f" * 64, {}, [1.0], score, t, t + 1, eid)
    return prediction_in(log, partition=0)


# -- decoding -----------------------------------------------------------------------------
def test_a_float_label_is_accepted_for_regression() -> None:
    item = decode_outcome(
        record({"event_id": "e1", "label": 123.25, "event_time": T0}), task="regression"
    )
    assert isinstance(item, OutcomeIn)
    assert item.label == 123.25 and isinstance(item.label, float)


def test_an_integer_or_negative_label_is_a_number_for_regression() -> None:
    item = decode_outcome(
        record({"event_id": "e1", "label": -7, "event_time": T0}), None, "regression"
    )
    assert isinstance(item, OutcomeIn) and item.label == -7.0


def test_binary_label_3_is_still_dead_lettered_as_invalid() -> None:
    raw = {"event_id": "e1", "label": 3, "event_time": T0}
    for task in ("binary", None):
        item = decode_outcome(record(raw), task=task) if task else decode_outcome(record(raw))
        assert isinstance(item, DeadLetter)
        assert (item.reason, item.error) == ("invalid", "Outcome.label: must be 0 or 1")


def test_binary_labels_stay_integers() -> None:
    item = decode_outcome(record({"event_id": "e1", "label": 1.0, "event_time": T0}))
    assert isinstance(item, OutcomeIn)
    assert item.label == 1 and type(item.label) is int


@pytest.mark.parametrize("label", ["12.5", None, True, [1.0], {"v": 1}])
def test_a_non_number_is_rejected_with_a_precise_message(label: object) -> None:
    item = decode_outcome(
        record({"event_id": "e1", "label": label, "event_time": T0}), task="regression"
    )
    assert isinstance(item, DeadLetter)
    assert item.reason == "invalid"
    assert item.error.startswith("Outcome.label: expected a number, got ")
    assert type(label).__name__ in item.error


def test_a_non_finite_label_never_passes() -> None:
    # JSON has no NaN, but Python's json module reads one: it must not become a label.
    value = b'{"event_id":"e1","label":NaN,"event_time":1700000000000}'
    item = decode_outcome(SourceRecord("outs", 0, 0, None, value), task="regression")
    assert isinstance(item, DeadLetter)
    assert item.error == "Outcome.label: must be finite"


def test_the_schema_alone_accepts_any_number() -> None:
    assert decode(Outcome, b'{"event_id":"e","label":2.5,"event_time":1}').label == 2.5
    assert decode(Outcome, encode(Outcome("e", 1, 1))) == Outcome("e", 1, 1)


# -- the join -----------------------------------------------------------------------------
def test_regression_join_labels_with_the_observed_value_and_drops_timeouts() -> None:
    shard = JoinShard(JoinPolicy(maturity_ms=MIN, timeout_label=None))
    out = decode_outcome(
        record({"event_id": "e1", "label": 40.0, "event_time": T0 + 5_000}), task="regression"
    )
    first = shard.process([pred("r1", "e1", T0), out, pred("r2", "e2", T0 + 1_000)])
    assert [(e.request_id, e.label, e.resolution) for e in first.examples] == [
        ("r1", 40.0, "outcome")
    ]
    later = shard.process([Tick(T0 + 2 * MIN)])
    assert later.examples == []
    assert later.counts == {("predictions", "timeout_dropped"): 1}
    assert shard.pending_predictions == 0


# -- the offline store --------------------------------------------------------------------
def example(label: float, rid: str = "r1") -> LabeledExample:
    return LabeledExample(rid, "e1", "price", "1", "f" * 64, {}, [1.0], 39.5, label, T0, T0 + 9)


def test_the_store_keeps_float_labels(tmp_path: Path) -> None:
    (path,) = offline_store.write_examples(tmp_path, [example(40.125)], "b1")
    assert offline_store.read_examples(path) == [example(40.125)]
    assert pq.read_schema(path).field("label").type == pa.float64()


def test_files_with_int8_labels_still_read(tmp_path: Path) -> None:
    old_schema = offline_store.LABELED_SCHEMA.set(
        offline_store.LABELED_SCHEMA.get_field_index("label"),
        pa.field("label", pa.int8(), nullable=False),
    )
    table = offline_store.to_table([example(1, "r0")]).cast(old_schema)
    old = tmp_path / "old.parquet"
    pq.write_table(table, old)
    (new,) = offline_store.write_examples(tmp_path, [example(0.5)], "b2")
    assert offline_store.read_examples(old) == [example(1.0, "r0")]
    both = pa.concat_tables(offline_store.read_table(p, ["label"]) for p in (old, new))
    assert both.column("label").to_pylist() == [1.0, 0.5]


# -- the config ---------------------------------------------------------------------------
def settings_with(policy: str) -> Settings:
    s = Settings()
    return replace(s, labels=replace(s.labels, timeout_policy=policy))


@pytest.mark.parametrize("policy", ["negative", "positive"])
def test_regression_with_a_timeout_label_is_refused(policy: str) -> None:
    with pytest.raises(ConfigError, match=r'labels.timeout_policy = "drop"') as err:
        LabelsFlowConfig.from_settings(settings_with(policy), task="regression")
    assert repr(policy) in str(err.value)


def test_regression_with_drop_and_binary_defaults() -> None:
    cfg = LabelsFlowConfig.from_settings(settings_with("drop"), task="regression")
    assert (cfg.task, cfg.policy.timeout_label) == ("regression", None)
    assert LabelsFlowConfig.from_settings(Settings()).task == "binary"


def test_an_unknown_task_is_refused() -> None:
    with pytest.raises(ConfigError, match="task must be one of"):
        LabelsFlowConfig.from_settings(settings_with("drop"), task="multiclass")
