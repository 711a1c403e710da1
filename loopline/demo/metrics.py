"""How good a model is on labeled traffic, for either task, and old vs new on the same rows.

The metrics are the trainer's own (:mod:`loopline.trainer.metrics`), so the
report judges models exactly as the gate does.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1])
>>> compare("binary", y, np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.1, 0.2, 0.7, 0.8]))
{'rows': 4.0, 'positives': 2.0, 'auc_old': 0.75, 'auc_new': 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from loopline.trainer.metrics import auc, mae, rmse

# The output a binary model's ONNX graph names its class probabilities.
PROBABILITIES = "probabilities"


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
