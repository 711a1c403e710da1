"""Labels flow inputs, configuration and metric names (pure, no sockets)."""

from __future__ import annotations

import pickle
import zlib
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from loopline.config.loader import load_settings
from loopline.contracts import metric_names
from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import DeadLetter, Outcome, PredictionLog, encode
from loopline.contracts.settings import Settings
from loopline.streams.labels.config import LabelsFlowConfig
from loopline.streams.labels.inputs import (
    OutcomeIn,
    PredictionIn,
    SourceRecord,
    decode_outcome,
    decode_prediction,
    shard_key,
    writer_key,
)
from loopline.streams.labels.metrics import label_metrics

LOG = PredictionLog("r1", "fraud", "1", "fraud", "fp", {"card": "c1"}, [1.0, 2.0], 0.3, 5, 6)


def rec(value: bytes | None, key: bytes | None = b"k") -> SourceRecord:
    return SourceRecord("loopline.predictions", 3, 41, key, value)


def test_a_prediction_without_event_id_joins_on_its_request_id() -> None:
    item = decode_prediction(rec(encode(LOG)))
    assert isinstance(item, PredictionIn)
    assert (item.request_id, item.join_key, item.t_ms) == ("r1", "r1", 5)
    assert (item.raw, item.partition, item.offset, item.key) == (encode(LOG), 3, 41, b"k")
    assert decode_prediction(rec(encode(LOG)), t_ms=99).t_ms == 99  # processing time
    assert pickle.loads(pickle.dumps(item)) == item


@pytest.mark.parametrize(
    ("value", "reason", "error"),
    [
        (None, "malformed", "empty message"),
        (b"\xff\xfe", "malformed", "not valid JSON"),
        (b"[1, 2]", "malformed", "expected a JSON object"),
        (encode(replace(LOG, event_time=0)), "invalid", "event_time"),
        (encode(LOG).replace(b'"score":0.3', b'"score":"high"'), "invalid", "score"),
        (encode(LOG).replace(b'"request_id":"r1",', b""), "invalid", "request_id"),
    ],
)
def test_bad_predictions_become_dead_letters_with_their_bytes(
    value: bytes | None, reason: str, error: str
) -> None:
    letter = decode_prediction(rec(value))
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.source_topic, letter.partition, letter.offset) == (
        reason,
        "loopline.predictions",
        3,
        41,
    )
    assert error in letter.error
    assert letter.original_value() == (value or b"")


def test_outcomes_decode_and_bad_ones_are_dead_letters() -> None:
    item = decode_outcome(rec(encode(Outcome("e1", 1, 7))))
    assert isinstance(item, OutcomeIn) and (item.event_id, item.label, item.t_ms) == ("e1", 1, 7)
    for bad in (b'{"event_id":"e1","label":1}', b'{"event_id":"","label":1,"event_time":3}'):
        letter = decode_outcome(rec(bad))
        assert isinstance(letter, DeadLetter) and letter.reason == "invalid"


def test_routing_keys_are_stable_and_in_range() -> None:
    keys = {shard_key(f"e{i}", 16) for i in range(1000)}
    assert keys == {str(i) for i in range(16)}
    # crc32, not hash(): the same in every process and every run.
    assert shard_key("e1", 16) == str(zlib.crc32(b"e1") % 16) == "7"
    assert {writer_key(f"r{i}", 3) for i in range(100)} == {"000", "001", "002"}


def test_config_from_settings_and_env() -> None:
    env = {
        "LOOPLINE_LABELS__MATURITY_S": "120",
        "LOOPLINE_LABELS__TIMEOUT_POLICY": "drop",
        "LOOPLINE_LABELS__TIME": "processing",
        "LOOPLINE_LABELS__MAX_PENDING_PREDICTIONS": "64",
        "LOOPLINE_TRAINER__OFFLINE_STORE": "/data/offline",
        "LOOPLINE_KAFKA__TOPIC_PREFIX": "x.",
    }
    cfg = LabelsFlowConfig.from_settings(load_settings(env=env))
    assert cfg.policy.maturity_ms == 120_000 and cfg.policy.timeout_label is None
    assert cfg.policy.max_predictions == 4 and cfg.time == "processing"
    assert str(cfg.store_root) == "/data/offline"
    assert (cfg.labeled_topic, cfg.policy.predictions_topic) == ("x.labeled", "x.predictions")
    assert cfg.consumer["isolation.level"] == "read_committed"


@pytest.mark.parametrize(
    ("key", "value"),
    [("timeout_policy", "maybe"), ("time", "wall"), ("shards", "0"), ("maturity_s", "0")],
)
def test_config_refuses_nonsense(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.split("_", maxsplit=1)[0]):
        LabelsFlowConfig.from_settings(
            load_settings(env={f"LOOPLINE_LABELS__{key.upper()}": value})
        )


def test_labels_metrics_are_the_declared_names() -> None:
    registry = CollectorRegistry()
    m = label_metrics(registry)
    m.records.labels("predictions", "accepted").inc()
    m.examples.labels("timeout").inc()
    m.set_pending("a", 3, 1)
    m.set_pending("b", 2, 0)
    m.join_latency.observe(0.5)
    m.watermark.set(1.0)
    m.replayed.inc()
    m.lag.labels("t", "0").set(0)
    declared = {x.name: x for x in metric_names.ALL if x.name.startswith("loopline_labels_")}
    seen = set()
    for family in registry.collect():
        assert family.name in declared, family.name
        metric = declared[family.name]
        assert family.type == metric.kind
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= set(metric.labels)
        seen.add(family.name)
    assert seen == set(declared)
    assert registry.get_sample_value("loopline_labels_pending", {"side": "predictions"}) == 5
    assert label_metrics(registry) is m


def test_settings_defaults_match_the_trainer_bootstrap() -> None:
    s = Settings()
    assert s.labels.timeout_policy == "negative"
