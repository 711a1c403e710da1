"""The regression task in the trainer: labels, metrics, gate, export parity, publish."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import model_factory
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fraud_repo import FRAUD_FEATURES
from rich.console import Console

from loopline.contracts.errors import ConfigError, ModelError, SchemaError
from loopline.contracts.schemas import LabeledExample
from loopline.contracts.settings import TrainerSettings
from loopline.registry.directory import DirectoryRegistry, Manifest, ManifestFields
from loopline.storage.offline_store import HOUR_MS, partition_dir, to_table
from loopline.trainer import metrics
from loopline.trainer.booster import BoosterParams, train_booster
from loopline.trainer.dataset import TrainingSet, check_enough, split_by_time
from loopline.trainer.errors import InsufficientDataError
from loopline.trainer.export import check_parity, native_scores, onnx_scores, to_onnx
from loopline.trainer.gate import GateMargins, decide
from loopline.trainer.offline import load_window
from loopline.trainer.pipeline import Trainer
from loopline.trainer.report import summary

NAMES = tuple(FRAUD_FEATURES.model_features)
SETTINGS = TrainerSettings(num_trees=60, early_stopping_rounds=10, num_threads=1, min_rows=200)
MARGINS = GateMargins(auc=0.005, log_loss=0.01, brier=0.002, rmse=0.01, mae=0.02)


def regression_set(n: int = 1500, seed: int = 0) -> TrainingSet:
    x, _ = model_factory.synthetic_rows(n, len(NAMES), seed)
    y = model_factory.synthetic_targets(x, seed)
    return TrainingSet.from_rows(
        features=x,
        labels=y,
        event_time_ms=[1_700_000_000_000 + 1000 * i for i in range(n)],
        ids=[f"e{i}" for i in range(n)],
        feature_names=NAMES,
        source="synthetic",
        task="regression",
    )


# -- metrics -----------------------------------------------------------------------
def test_regression_metrics_are_in_the_targets_units() -> None:
    y = np.array([10.0, 20.0, 30.0])
    p = np.array([12.0, 18.0, 30.0])
    assert metrics.rmse(y, p) == pytest.approx(math.sqrt(8 / 3))
    assert metrics.mae(y, p) == pytest.approx(4 / 3)
    assert metrics.r2(y, p) == pytest.approx(1 - 8 / 200)
    got = metrics.evaluate_task("regression", y, p)
    assert set(got) == {"rmse", "mae", "r2", "rows", "label_mean"}
    assert got["label_mean"] == 20.0
    assert "auc" in metrics.evaluate_task("binary", np.array([0, 1]), np.array([0.2, 0.7]))
    assert math.isnan(metrics.rmse(np.zeros(0), np.zeros(0)))


# -- gate --------------------------------------------------------------------------
def test_regression_gate_margins_are_relative_to_the_champion() -> None:
    champ = {"rmse": 100.0, "mae": 80.0}
    ok = decide({"rmse": 100.9, "mae": 81.5}, champ, MARGINS, task="regression")
    assert ok.accepted and [c.metric for c in ok.checks] == ["rmse", "mae"]
    worse = decide({"rmse": 101.5, "mae": 70.0}, champ, MARGINS, task="regression")
    assert not worse.accepted
    assert worse.reason == (
        "rejected: rmse 101.5000 vs champion 100.0000 (worse by 1.50% > margin 1%)"
    )
    assert decide({"rmse": 101.5, "mae": 70.0}, champ, MARGINS, task="regression", force=True)
    better = decide({"rmse": 90.0, "mae": 70.0}, champ, MARGINS, task="regression")
    assert better.accepted and better.reason.startswith("accepted: rmse 90.0000")


def test_gate_metric_must_improve_by_min_improvement() -> None:
    champ = {"rmse": 100.0, "mae": 80.0}
    kw = {"task": "regression", "gate_metric": "mae", "min_improvement": 0.05}
    assert not decide({"rmse": 99.0, "mae": 78.0}, champ, MARGINS, **kw).accepted
    d = decide({"rmse": 99.0, "mae": 75.0}, champ, MARGINS, **kw)
    assert d.accepted and d.checks[-1].kind == "improvement"
    # Binary metrics: the improvement is absolute.
    bchamp = {"auc": 0.90, "log_loss": 0.2, "brier": 0.05}
    mine = {"auc": 0.905, "log_loss": 0.2, "brier": 0.05}
    assert not decide(mine, bchamp, MARGINS, gate_metric="auc", min_improvement=0.01).accepted
    assert decide(mine, bchamp, MARGINS, gate_metric="auc", min_improvement=0.004).accepted
    with pytest.raises(ConfigError, match="'auc' is not a regression metric"):
        decide(champ, champ, MARGINS, task="regression", gate_metric="auc")
    with pytest.raises(ConfigError, match=r"task must be one of .*not 'ranking'"):
        decide(champ, champ, MARGINS, task="ranking")


def test_binary_gate_ignores_regression_metrics() -> None:
    champ = {"auc": 0.90, "log_loss": 0.2, "brier": 0.05, "rmse": 1.0}
    d = decide({"auc": 0.90, "log_loss": 0.2, "brier": 0.05, "rmse": 9.0}, champ, MARGINS)
    assert d.accepted and [c.metric for c in d.checks] == ["auc", "log_loss", "brier"]


# -- labels and data checks --------------------------------------------------------
def test_labels_are_cast_for_the_task() -> None:
    base = {
        "features": [[1.0], [2.0], [3.0]],
        "event_time_ms": [1, 2, 3],
        "ids": ["a", "b", "c"],
        "feature_names": ("x",),
        "source": "t",
    }
    binary = TrainingSet.from_rows(labels=np.array([0.0, 1.0, 1.0]), **base)
    assert binary.labels.dtype == np.int8 and binary.positives == 2 and not binary.is_regression
    reg = TrainingSet.from_rows(labels=np.array([3, 250, 7]), task="regression", **base)
    assert reg.labels.tolist() == [3.0, 250.0, 7.0] and reg.is_regression  # no int8 overflow
    with pytest.raises(SchemaError, match="binary labels must be 0 or 1; got 2"):
        TrainingSet.from_rows(labels=[0, 1, 2], **base)
    with pytest.raises(SchemaError, match="regression labels must be finite"):
        TrainingSet.from_rows(labels=[0.5, math.nan, 1.0], task="regression", **base)


def test_min_positives_applies_to_binary_only() -> None:
    ts = regression_set(300)
    split = split_by_time(ts, 0.15, 0.15)
    check_enough(split, min_rows=200, min_positives=10_000, task="regression")
    with pytest.raises(InsufficientDataError, match="only 300 labeled rows"):
        check_enough(split, min_rows=301, min_positives=0, task="regression")
    flat = dataclasses.replace(ts, labels=np.full(len(ts), 4.0))
    with pytest.raises(InsufficientDataError, match="every training label is 4"):
        check_enough(split_by_time(flat, 0.15, 0.15), 200, 0, task="regression")


def _write_float_labels(root: Path, labels: list[float], t0: int) -> None:
    k = len(NAMES)
    rows = [
        LabeledExample(
            request_id=f"r{i}",
            event_id=f"e{i}",
            model_name="m",
            model_version="1",
            fingerprint=FRAUD_FEATURES.fingerprint,
            entities={"card": "c"},
            features=[float(i)] * k,
            score=0.0,
            label=0,
            event_time=t0 + i,
            labeled_at_ms=t0 + i + 1,
        )
        for i in range(len(labels))
    ]
    table = to_table(rows)
    i = table.schema.get_field_index("label")
    # The label column as the float schema writes it, whatever this checkout's schema says.
    table = table.set_column(i, pa.field("label", pa.float64()), pa.array(labels, pa.float64()))
    directory = partition_dir(root, t0)
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / "f.parquet")


def test_offline_store_float_labels_load_for_either_task(tmp_path: Path) -> None:
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS
    _write_float_labels(tmp_path, [0.0, 1.0, 2.5, math.nan, 1.0], t0)
    reg = load_window(tmp_path, FRAUD_FEATURES, 2, t0 + HOUR_MS, task="regression")
    assert reg.labels.tolist() == [0.0, 1.0, 2.5, 1.0] and reg.dropped == {"bad_label": 1}
    binary = load_window(tmp_path, FRAUD_FEATURES, 2, t0 + HOUR_MS)
    assert binary.labels.tolist() == [0, 1, 1] and binary.labels.dtype == np.int8
    assert binary.dropped == {"bad_label": 2}


# -- export and parity -------------------------------------------------------------
def test_regressor_exports_with_parity_and_its_task() -> None:
    import onnx

    split = split_by_time(regression_set(), 0.15, 0.15)
    params = BoosterParams.from_settings(SETTINGS, task="regression")
    booster = train_booster(split.train, split.valid, params)
    raw = to_onnx(booster, FRAUD_FEATURES)
    model = onnx.load_from_string(raw)
    assert [o.name for o in model.graph.output] == ["variable"]
    assert {p.key: p.value for p in model.metadata_props}["task"] == "regression"
    native = native_scores(booster, split.holdout.features)
    scores = onnx_scores(raw, split.holdout.features, "regression")
    assert scores.shape == native.shape and native.std() > 10  # real values, not probabilities
    assert check_parity(native, scores, 1e-5, relative=True) < 1e-5
    with pytest.raises(ModelError, match="no output 'probabilities'"):
        onnx_scores(raw, split.holdout.features, "binary")


# -- the whole run -----------------------------------------------------------------
def test_trainer_publishes_and_gates_a_regression_model(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    trainer = Trainer(SETTINGS, reg, task="regression")
    first = trainer.train(regression_set(seed=0))
    assert first.accepted and first.task == "regression"
    assert {"rmse", "mae", "r2"} <= set(first.metrics) and "auc" not in first.metrics
    assert first.rows == {"train": 1050, "valid": 225, "holdout": 225}
    m = reg.get("fraud", first.version).manifest
    assert (m.task, m.probability_output) == ("regression", "variable")
    assert m.extra["params"]["objective"] == "regression"
    assert len(m.golden_inputs) == SETTINGS.golden_rows
    again = onnx_scores(
        reg.get("fraud", "1").read_verified(), np.asarray(m.golden_inputs), "regression"
    )
    assert again.tolist() == pytest.approx(m.golden_scores, rel=1e-6)
    reg.set_alias("fraud", "champion", first.version)
    # A challenger trained on shuffled labels predicts little more than the mean: rejected.
    ts = regression_set(seed=0)
    y = ts.labels.copy()
    y[:1050] = np.random.default_rng(1).permutation(y[:1050])
    second = trainer.train(dataclasses.replace(ts, labels=y))
    assert not second.accepted and second.decision.startswith("rejected: rmse")
    assert second.champion_metrics is not None
    assert second.metrics["rmse"] > 1.5 * second.champion_metrics["rmse"]
    assert [c["metric"] for c in reg.get("fraud", "2").manifest.extra["gate"]["checks"]] == [
        "rmse",
        "mae",
    ]
    text = _render(second)
    assert "rmse" in text and "mae" in text and "class balance" not in text


def test_a_champion_of_the_other_task_is_not_comparable(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    model_factory.publish(reg)  # a binary champion v1
    report = Trainer(SETTINGS, reg, task="regression").train(regression_set())
    assert report.accepted and report.champion_metrics is None
    assert "champion v1 is a binary model" in report.decision


def test_training_set_must_be_loaded_for_the_trainers_task(tmp_path: Path) -> None:
    binary = TrainingSet.from_rows(
        features=np.zeros((4, len(NAMES))),
        labels=[0, 1, 0, 1],
        event_time_ms=[1, 2, 3, 4],
        ids=list("abcd"),
        feature_names=NAMES,
        source="t",
    )
    with pytest.raises(ConfigError, match=r"loaded for a binary task .* DataRequest\(task="):
        Trainer(SETTINGS, DirectoryRegistry(tmp_path), task="regression").train(binary)
    with pytest.raises(ConfigError, match="task must be one of"):
        Trainer(SETTINGS, DirectoryRegistry(tmp_path), task="multiclass")


# -- the manifest ------------------------------------------------------------------
def test_manifest_task_round_trips_and_old_manifests_are_binary(tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path)
    fields = ManifestFields("fs", "f" * 64, ["a"], probability_output="variable", task="regression")
    v = reg.publish("m", b"onnx", fields)
    back = reg.get("m", v.manifest.version).manifest
    assert (back.task, back.probability_output) == ("regression", "variable")
    assert Manifest.from_json(back.to_json()) == back
    old = json.loads(back.to_json())
    del old["task"]
    old["probability_output"] = "probabilities"
    assert Manifest.from_json(json.dumps(old)).task == "binary"
    with pytest.raises(ModelError, match=r"\['task'\] cannot change"):
        reg.update_manifest("m", v.manifest.version, task="binary")


def _render(report: object) -> str:
    console = Console(record=True, width=160)
    console.print(summary(report))  # type: ignore[arg-type]
    return console.export_text()
