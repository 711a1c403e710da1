"""How good a model is on labeled traffic, for either task, and old vs new on the same rows.

>>> import numpy as np
>>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
>>> y = np.array([1.0, 3.0])
>>> rmse(y, np.array([2.0, 3.0])), mae(y, np.array([2.0, 5.0]))
(0.7071067811865476, 1.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

# The output a binary model's ONNX graph names its class probabilities.
PROBABILITIES = "probabilities"


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN without both classes."""
    pos, neg = int(labels.sum()), int(len(labels) - labels.sum())
    if pos == 0 or neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def rmse(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Root mean squared error; NaN on no rows."""
    if len(labels) == 0:
        return math.nan
    return float(np.sqrt(np.mean((np.asarray(predictions) - np.asarray(labels)) ** 2)))


def mae(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean absolute error; NaN on no rows."""
    if len(labels) == 0:
        return math.nan
    return float(np.mean(np.abs(np.asarray(predictions) - np.asarray(labels))))


def per_window(task: str) -> tuple[str, Callable[[np.ndarray, np.ndarray], float]]:
    """The metric the report plots over time: AUC (binary) or RMSE (regression)."""
    return ("RMSE", rmse) if task == "regression" else ("AUC", auc)


def score_with(model_path: Path, rows: np.ndarray) -> np.ndarray:
    """A model's scores for ``rows``: the positive-class probability, or the predicted value."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    if PROBABILITIES in outputs:
        probs = session.run([PROBABILITIES], {name: rows.astype(np.float32)})[0]
        return np.asarray(probs)[:, 1]
    # Regression graphs have one output, [n, 1] (trainer/export.py names it "variable").
    values = session.run([outputs[0]], {name: rows.astype(np.float32)})[0]
    return np.asarray(values, dtype=np.float64).reshape(len(rows), -1)[:, 0]


def compare(task: str, labels: np.ndarray, old: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """Old vs new model's metrics on the same labeled rows (keys ``<metric>_old|new``)."""
    out = {"rows": float(len(labels))}
    if task == "regression":
        out["label_mean"] = float(np.mean(labels)) if len(labels) else math.nan
        for name, scores in (("old", old), ("new", new)):
            out[f"rmse_{name}"] = rmse(labels, scores)
            out[f"mae_{name}"] = mae(labels, scores)
        return out
    out["positives"] = float(labels.sum())
    out["auc_old"] = auc(labels, old)
    out["auc_new"] = auc(labels, new)
    return out


def describe(task: str, c: dict[str, float]) -> str:
    """One line for the text report."""
    old, new = int(c["version_old"]), int(c["version_new"])
    rows = f"on the same {int(c['rows']):,} labeled requests"
    if task == "regression":
        return (
            f"post-drift RMSE {rows} (mean label {c['label_mean']:.3g}): old v{old} "
            f"{c['rmse_old']:.4g} -> new v{new} {c['rmse_new']:.4g} "
            f"(MAE {c['mae_old']:.4g} -> {c['mae_new']:.4g})"
        )
    return (
        f"post-drift AUC {rows} ({int(c['positives'])} positive): old v{old} "
        f"{c['auc_old']:.3f} -> new v{new} {c['auc_new']:.3f}"
    )
