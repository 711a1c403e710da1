"""Batch scoring uses the champion ONNX model and exactly the shared feature code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fraud_repo import FRAUD_FEATURES, TRANSACTIONS
from synthetic_fraud import Transaction, as_json_rows, synthetic_history
from trainer_support import training_set_of

from loopline.contracts.errors import FingerprintMismatchError, ModelError
from loopline.contracts.settings import TrainerSettings
from loopline.featurecore.entity_state import replay
from loopline.registry.directory import DirectoryRegistry, ManifestFields
from loopline.trainer.export import session
from loopline.trainer.pipeline import Trainer
from loopline.trainer.scoring import ScoringModel, score_file

SETTINGS = TrainerSettings(
    num_trees=60, early_stopping_rounds=15, num_threads=1, min_rows=200, min_positives=10
)


@pytest.fixture(scope="module")
def events() -> list[Transaction]:
    return synthetic_history(n_cards=300, hours=36, seed=5)[0]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> DirectoryRegistry:
    txs, outcomes = synthetic_history(n_cards=300, hours=36, seed=4)
    ts = training_set_of(txs, outcomes, window_hours=36)
    reg = DirectoryRegistry(tmp_path_factory.mktemp("registry"))
    Trainer(SETTINGS, reg).train(ts)
    return reg


def one_by_one(onnx: bytes, x: np.ndarray) -> np.ndarray:
    """What a server does per request: one row per ONNX run."""
    sess = session(onnx)
    rows = [
        sess.run(["probabilities"], {"input": r[None, :].astype(np.float32)})[0][0, 1] for r in x
    ]
    return np.asarray(rows, dtype=np.float64)


def test_event_scores_equal_single_row_onnx_on_replayed_features(
    tmp_path: Path, registry: DirectoryRegistry, events: list[Transaction]
) -> None:
    rows = as_json_rows(events[:600])
    rows.reverse()  # any input order; output keeps it
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "events.parquet")
    model = ScoringModel.load(registry, "fraud", FRAUD_FEATURES, TRANSACTIONS)
    summary = score_file(
        model, tmp_path / "events.parquet", tmp_path / "scores.parquet", with_features=True
    )
    assert (summary.rows, summary.failed, summary.mode, summary.model_version) == (
        600,
        0,
        "replay",
        "1",
    )

    out = pq.read_table(tmp_path / "scores.parquet")
    assert out["event_id"].to_pylist() == [r["event_id"] for r in rows]
    assert set(out["model_version"].to_pylist()) == {"1"}
    assert out.schema.metadata[b"fingerprint"] == FRAUD_FEATURES.fingerprint.encode()
    # The features are exactly the contracts' point-in-time replay, in the manifest's order.
    expected = {
        str(r.event["event_id"]): r.features
        for r in replay(FRAUD_FEATURES, (t.as_record() for t in events[:600]))
    }
    x = np.asarray(out["features"].to_pylist())
    want = np.asarray([expected[e] for e in out["event_id"].to_pylist()], dtype=np.float32)
    np.testing.assert_array_equal(x.astype(np.float32), want)
    onnx = registry.resolve("fraud", "champion").read_verified()  # type: ignore[union-attr]
    np.testing.assert_array_equal(out["score"].to_numpy(), one_by_one(onnx, want))


def test_feature_vectors_and_columns_are_scored_as_given_and_bad_rows_flagged(
    tmp_path: Path, registry: DirectoryRegistry, events: list[Transaction]
) -> None:
    x = np.asarray(
        [r.features for r in replay(FRAUD_FEATURES, (t.as_record() for t in events[:50]))]
    )
    vectors = [*x.tolist(), [1.0, 2.0]]
    pq.write_table(pa.table({"id": range(51), "features": vectors}), tmp_path / "v.parquet")
    model = ScoringModel.load(registry, "fraud", FRAUD_FEATURES, TRANSACTIONS, version="1")
    s = score_file(model, tmp_path / "v.parquet", tmp_path / "out.parquet")
    out = pq.read_table(tmp_path / "out.parquet")
    assert (s.mode, s.rows, s.failed) == ("features", 51, 1)
    assert out["score"].null_count == 1 and "20 values" in out["error"][50].as_py()
    onnx = registry.get("fraud", "1").read_verified()
    expected = one_by_one(onnx, x)
    np.testing.assert_array_equal(out["score"].to_numpy(zero_copy_only=False)[:50], expected)

    columns = {name: x[:, i] for i, name in enumerate(FRAUD_FEATURES.model_features)}
    pq.write_table(pa.table(columns), tmp_path / "c.parquet")
    assert score_file(model, tmp_path / "c.parquet", tmp_path / "c-out.parquet").mode == "columns"
    by_column = pq.read_table(tmp_path / "c-out.parquet")["score"].to_numpy()
    np.testing.assert_array_equal(by_column, expected)


def test_queries_against_a_history_see_only_older_events(
    tmp_path: Path, registry: DirectoryRegistry, events: list[Transaction]
) -> None:
    history, later = events[:800], events[800:840]
    pq.write_table(pa.Table.from_pylist(as_json_rows(history)), tmp_path / "history.parquet")
    bad = {"event_id": "x", "card_id": "c", "merchant_id": "m", "amount": -1.0, "event_time": 5}
    pq.write_table(pa.Table.from_pylist([*as_json_rows(later), bad]), tmp_path / "q.parquet")
    model = ScoringModel.load(registry, "fraud", FRAUD_FEATURES, TRANSACTIONS)
    s = score_file(
        model,
        tmp_path / "q.parquet",
        tmp_path / "out.parquet",
        history=tmp_path / "history.parquet",
        with_features=True,
    )
    assert (s.mode, s.failed) == ("as-of", 1)
    out = pq.read_table(tmp_path / "out.parquet")
    assert "amount" in out["error"][40].as_py() and out["score"][40].as_py() is None
    # Each query equals a replay of the history followed by that event alone.
    for i in (0, 17, 39):
        rows = list(replay(FRAUD_FEATURES, (t.as_record() for t in [*history, later[i]])))
        np.testing.assert_array_equal(
            np.asarray(out["features"][i].as_py(), dtype=np.float32),
            np.asarray(rows[-1].features, dtype=np.float32),
        )


def test_models_for_other_features_or_failing_golden_rows_are_refused(
    tmp_path: Path, registry: DirectoryRegistry
) -> None:
    good = registry.get("fraud", "1")
    other = DirectoryRegistry(tmp_path)
    fields = dataclasses.asdict(good.manifest)
    for k in ("model_name", "version", "sha256", "created_ms", "signature"):
        fields.pop(k)

    onnx = good.read_verified()
    other.publish("a", onnx, ManifestFields(**{**fields, "fingerprint": "0" * 64}))
    other.set_alias("a", "champion", "1")
    with pytest.raises(FingerprintMismatchError):
        ScoringModel.load(other, "a", FRAUD_FEATURES, TRANSACTIONS)
    wrong = [s + 0.01 for s in good.manifest.golden_scores]
    other.publish("b", onnx, ManifestFields(**{**fields, "golden_scores": wrong}))
    with pytest.raises(ModelError, match="golden"):
        ScoringModel.load(other, "b", FRAUD_FEATURES, TRANSACTIONS, version="1")
