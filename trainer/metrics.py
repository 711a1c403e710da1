"""Holdout metrics in plain numpy (no scikit-learn dependency), per task.

Binary classification: AUC, log loss, Brier score, calibration error.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1])
>>> p = np.array([0.1, 0.4, 0.35, 0.8])
>>> auc(y, p)
0.75
>>> round(log_loss(y, p), 4), round(brier(y, p), 4)
(0.4723, 0.1581)
>>> evaluate(y, p)["positives"]
2.0

Regression: RMSE and MAE (the gate's), R2 (for reports).

>>> t = np.array([1.0, 2.0, 3.0, 4.0])
>>> v = np.array([1.5, 2.0, 2.0, 4.5])
>>> rmse(t, v), mae(t, v), r2(t, v)
(0.6123724356957945, 0.5, 0.7)
>>> evaluate_task("regression", t, v)["rows"]
4.0
"""

from __future__ import annotations

import math

import numpy as np

# Probabilities are clipped so one confident mistake costs a lot, not infinity.
EPS = 1e-15


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(len(p), dtype=np.float64)
    # Average ranks over runs of equal scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
    ends = np.r_[starts[1:], len(p)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probabilities (lower is better calibrated and sharper)."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y)) ** 2))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / len(p))


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Every metric the gate and the summary use, as plain floats."""
    y = np.asarray(y)
    return {
        "auc": auc(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "ece": ece(y, p),
        "rows": float(len(y)),
        "positives": float(np.sum(y)),
    }


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error, in the target's units; NaN without rows."""
    err = np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return float(np.sqrt(np.mean(err**2))) if len(err) else math.nan


def mae(y: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute error, in the target's units; NaN without rows."""
    err = np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return float(np.mean(np.abs(err))) if len(err) else math.nan


def r2(y: np.ndarray, p: np.ndarray) -> float:
    """Coefficient of determination; NaN when the labels do not vary.

    >>> r2(np.array([1.0, 1.0]), np.array([1.0, 2.0]))
    nan
    """
    y = np.asarray(y, dtype=np.float64)
    total = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    if total == 0.0:
        return math.nan
    resid = float(np.sum((np.asarray(p, dtype=np.float64) - y) ** 2))
    return 1.0 - resid / total


def evaluate_regression(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Every regression metric the gate and the summary use, as plain floats."""
    y = np.asarray(y, dtype=np.float64)
    return {
        "rmse": rmse(y, p),
        "mae": mae(y, p),
        "r2": r2(y, p),
        "rows": float(len(y)),
        "label_mean": float(y.mean()) if len(y) else math.nan,
    }


def evaluate_task(task: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """:func:`evaluate` for a binary task, :func:`evaluate_regression` for a regression."""
    return evaluate_regression(y, p) if task == "regression" else evaluate(y, p)
