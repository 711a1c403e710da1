"""Metrics match scikit-learn's (installed with onnxmltools; used here only as a reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from loopline.trainer import metrics


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    # Rounded scores create ties, which AUC must count as half.
    p = np.clip(np.round(rng.random(500) * 0.8 + y * 0.15, 2), 0.01, 0.99)
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metrics.log_loss(y, p) == pytest.approx(sk_log_loss(y, p), abs=1e-12)
    assert metrics.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_auc_is_nan_with_one_class_and_ece_of_perfect_calibration_is_zero() -> None:
    assert math.isnan(metrics.auc(np.zeros(5), np.linspace(0, 1, 5)))
    y = np.array([0, 0, 0, 1] * 25)
    assert metrics.ece(y, np.full(100, 0.25)) == pytest.approx(0.0)
    assert metrics.ece(y, np.full(100, 0.75)) == pytest.approx(0.5)
