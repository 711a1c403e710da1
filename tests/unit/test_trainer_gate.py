"""The gate's decision rules."""

from __future__ import annotations

import math

from loopline.trainer.gate import GateMargins, decide

MARGINS = GateMargins(auc=0.01, log_loss=0.02, brier=0.005)
CHAMP = {"auc": 0.90, "log_loss": 0.30, "brier": 0.08}


def test_within_margin_is_accepted_beyond_is_rejected_per_metric() -> None:
    assert decide({"auc": 0.895, "log_loss": 0.315, "brier": 0.084}, CHAMP, MARGINS).accepted
    for worse in ({"auc": 0.88}, {"log_loss": 0.33}, {"brier": 0.09}):
        d = decide({**CHAMP, **worse}, CHAMP, MARGINS)
        assert not d.accepted
        (metric,) = worse
        assert d.reason.startswith(f"rejected: {metric} ")
        assert [c.metric for c in d.checks if not c.passed] == [metric]


def test_force_accepts_and_says_so() -> None:
    d = decide({**CHAMP, "auc": 0.5}, CHAMP, MARGINS, force=True)
    assert d.accepted and d.reason.startswith("forced: auc")


def test_nan_metrics_are_not_compared() -> None:
    d = decide({**CHAMP, "auc": math.nan}, {**CHAMP, "log_loss": 0.1}, MARGINS)
    assert not d.accepted and "log_loss" in d.reason
    assert {c.metric for c in d.checks} == {"log_loss", "brier"}
