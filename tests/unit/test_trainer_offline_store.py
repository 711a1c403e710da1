"""The offline store layout (contracts) and the trainer's windowed reader."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fraud_repo import FRAUD_FEATURES

from loopline.contracts.errors import ConfigError, SchemaError
from loopline.contracts.schemas import LabeledExample
from loopline.contracts.settings import TrainerSettings
from loopline.storage.offline_store import (
    HOUR_MS,
    LABELED_SCHEMA,
    partition_dir,
    partitions,
    read_examples,
    to_table,
    write_examples,
)
from loopline.trainer.offline import latest_hour_end_ms, load_window

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS  # an hour boundary
K = len(FRAUD_FEATURES.model_features)


def example(i: int, t: int, **kw: object) -> LabeledExample:
    base: dict[str, object] = {
        "request_id": f"r{i}",
        "event_id": f"e{i}",
        "model_name": "fraud",
        "model_version": "1",
        "fingerprint": FRAUD_FEATURES.fingerprint,
        "entities": {"card": f"c{i % 3}", "merchant": "m1"},
        "features": [float(i)] * K,
        "score": 0.1,
        "label": i % 2,
        "event_time": t,
        "labeled_at_ms": t + 60_000,
    }
    return LabeledExample(**{**base, **kw})  # type: ignore[arg-type]


def test_layout_is_hourly_utc_partitions_with_the_contract_schema(tmp_path: Path) -> None:
    files = write_examples(tmp_path, [example(1, T0 + 5), example(2, T0 + HOUR_MS + 5)], "b1")
    rel = [f.relative_to(tmp_path).as_posix() for f in files]
    assert rel == [
        "labeled/date=2023-11-14/hour=22/b1.parquet",
        "labeled/date=2023-11-14/hour=23/b1.parquet",
    ]
    assert pq.read_schema(files[0]).remove_metadata() == LABELED_SCHEMA
    assert read_examples(files[0]) == [example(1, T0 + 5)]
    assert partition_dir(tmp_path, T0 + HOUR_MS - 1) == files[0].parent
    assert [p.name for p in partitions(tmp_path, T0 + HOUR_MS, None)] == ["hour=23"]
    # Same name again: the file is replaced, never duplicated.
    write_examples(tmp_path, [example(3, T0 + 7)], "b1")
    assert read_examples(files[0]) == [example(3, T0 + 7)]
    with pytest.raises(SchemaError):
        write_examples(tmp_path, [example(1, T0)], ".hidden")


def test_window_filters_dedupes_and_ignores_temporaries(tmp_path: Path) -> None:
    rows = [example(i, T0 + i * 600_000) for i in range(30)]  # 5 hours of data
    write_examples(tmp_path, rows[:15], "a")
    write_examples(tmp_path, rows[15:], "b")
    # A retried writer: the same request labeled again later (the latest label wins).
    write_examples(tmp_path, [example(20, rows[20].event_time, label=1, labeled_at_ms=T0 * 2)], "c")
    write_examples(tmp_path, [example(99, T0 + 1, fingerprint="0" * 64)], "d")
    write_examples(tmp_path, [example(98, T0 + 2, features=[1.0])], "e")
    # An in-flight temporary must never be read.
    part = partition_dir(tmp_path, T0)
    (part / ".f.parquet.tmp-1").write_bytes(b"partial")
    assert latest_hour_end_ms(tmp_path) == T0 + 5 * HOUR_MS

    ts = load_window(tmp_path, FRAUD_FEATURES, window_hours=3)
    assert ts.window_ms[0] >= T0 + 2 * HOUR_MS
    assert ts.ids == [f"e{i}" for i in range(12, 30)]
    assert ts.labels[ts.ids.index("e20")] == 1
    assert ts.dropped == {"duplicates": 1}
    assert ts.features.shape == (18, K)

    full = load_window(tmp_path, FRAUD_FEATURES, window_hours=24)
    assert len(full) == 30
    assert full.dropped == {"other_fingerprint": 1, "bad_length": 1, "duplicates": 1}


def test_shadow_scores_of_an_event_are_not_trained_on_twice(tmp_path: Path) -> None:
    rows = [example(i, T0 + i * 1000) for i in range(6)]
    shadows = [
        example(i, T0 + i * 1000, request_id=f"r{i}/shadow", model_version="2", arm="candidate")
        for i in range(6)
    ]
    # A canary answer is the only score of its event: it stays.
    canary = example(7, T0 + 7000, model_version="2", arm="candidate")
    write_examples(tmp_path, [*rows, *shadows, canary], "a")
    ts = load_window(tmp_path, FRAUD_FEATURES, window_hours=24)
    assert ts.ids == [f"e{i}" for i in range(6)] + ["e7"]
    assert ts.dropped == {"shadow": 6}


def test_empty_store_gives_an_empty_set(tmp_path: Path) -> None:
    ts = load_window(tmp_path, FRAUD_FEATURES, window_hours=24)
    assert len(ts) == 0 and ts.features.shape == (0, K)


def test_rows_served_with_defaulted_features_are_left_out_and_counted(tmp_path: Path) -> None:
    name = FRAUD_FEATURES.model_features[0]
    status = {0: "defaulted", 1: "missing", 2: "stale"}
    rows = [
        example(i, T0 + i * 1000, feature_status={name: status[i]} if i in status else {})
        for i in range(6)
    ]
    write_examples(tmp_path, rows, "a")
    assert read_examples(partition_dir(tmp_path, T0) / "a.parquet") == rows
    ts = load_window(tmp_path, FRAUD_FEATURES, window_hours=24)
    assert ts.ids == [f"e{i}" for i in range(1, 6)]
    assert ts.dropped == {"features_defaulted": 1}
    strict = load_window(
        tmp_path, FRAUD_FEATURES, window_hours=24, exclude_status=("defaulted", "missing")
    )
    assert strict.ids == ["e2", "e3", "e4", "e5"]
    assert strict.dropped == {"features_defaulted": 1, "features_missing": 1}
    assert len(load_window(tmp_path, FRAUD_FEATURES, window_hours=24, exclude_status=())) == 6


def test_files_written_before_feature_status_read_as_all_fresh(tmp_path: Path) -> None:
    rows = [example(i, T0 + i) for i in range(3)]
    part = partition_dir(tmp_path, T0)
    part.mkdir(parents=True)
    old_schema = LABELED_SCHEMA.remove(LABELED_SCHEMA.get_field_index("feature_status"))
    pq.write_table(
        to_table(rows).drop_columns(["feature_status"]).cast(old_schema), part / "old.parquet"
    )
    assert read_examples(part / "old.parquet") == rows
    assert load_window(tmp_path, FRAUD_FEATURES, window_hours=24).ids == ["e0", "e1", "e2"]


def test_an_unknown_excluded_status_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="exclude_feature_status: unknown status"):
        TrainerSettings(exclude_feature_status="defaulted,absent")
