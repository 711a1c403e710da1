"""The champion/challenger gate: a pure decision over holdout metrics.

Both models are scored on the same recent holdout. The challenger becomes
champion only when no metric of its task is worse than the champion's by more
than its margin (or when forced); otherwise it is kept as a rejected candidate
and the reason says which metric failed and by how much.

Binary models compare AUC, log loss and Brier score with absolute margins.
Regression models compare RMSE and MAE with *relative* margins, a fraction of
the champion's value: the target has no fixed scale, so "0.01 worse" means
nothing, but "1 % worse" does.

>>> margins = GateMargins(auc=0.005, log_loss=0.01, brier=0.002)
>>> champ = {"auc": 0.90, "log_loss": 0.20, "brier": 0.05}
>>> decide({"auc": 0.91, "log_loss": 0.19, "brier": 0.05}, champ, margins).accepted
True
>>> d = decide({"auc": 0.85, "log_loss": 0.19, "brier": 0.05}, champ, margins)
>>> d.accepted, d.reason
(False, 'rejected: auc 0.8500 vs champion 0.9000 (worse by 0.0500 > margin 0.005)')
>>> decide({"auc": 0.85, "log_loss": 0.19, "brier": 0.05}, champ, margins, force=True).reason
'forced: auc 0.8500 vs champion 0.9000 (worse by 0.0500 > margin 0.005)'
>>> decide(champ, None, margins).reason
'accepted: no champion yet'

A regression challenger 2 % worse in RMSE, with a 1 % margin:

>>> reg = GateMargins(auc=0, log_loss=0, brier=0, rmse=0.01, mae=0.01)
>>> decide({"rmse": 10.2, "mae": 7.0}, {"rmse": 10.0, "mae": 7.0}, reg, task="regression").reason
'rejected: rmse 10.2000 vs champion 10.0000 (worse by 2.00% > margin 1%)'

A primary metric with a required improvement: within the margins is not enough.

>>> d = decide({"rmse": 9.95, "mae": 7.0}, {"rmse": 10.0, "mae": 7.0}, reg, task="regression",
...            gate_metric="rmse", min_improvement=0.01)
>>> d.accepted, d.reason
(False, 'rejected: rmse 9.9500 vs champion 10.0000 (better by 0.50% < required 1%)')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import TrainerSettings
from loopline.contracts.tasks import check_task

# metric -> True when higher is better
DIRECTIONS = {"auc": True, "log_loss": False, "brier": False, "rmse": False, "mae": False}
# The metrics each task's gate compares, in the order reasons name them.
TASK_METRICS = {"binary": ("auc", "log_loss", "brier"), "regression": ("rmse", "mae")}
# Metrics whose margins (and required improvement) are fractions of the champion's value.
RELATIVE = frozenset({"rmse", "mae"})


@dataclass(frozen=True)
class GateMargins:
    """How much worse than the champion each metric may be (rmse, mae: relative)."""

    auc: float
    log_loss: float
    brier: float
    rmse: float = 0.01
    mae: float = 0.01

    @staticmethod
    def from_settings(s: TrainerSettings) -> GateMargins:
        return GateMargins(
            auc=s.gate_auc_margin,
            log_loss=s.gate_log_loss_margin,
            brier=s.gate_brier_margin,
            rmse=s.gate_rmse_margin,
            mae=s.gate_mae_margin,
        )


@dataclass(frozen=True)
class ChampionScore:
    """The champion's side of the comparison, on the challenger's holdout rows."""

    version: str
    metrics: dict[str, float] | None  # None: not comparable (reason says why)
    reason: str = ""


@dataclass(frozen=True)
class Check:
    metric: str
    challenger: float
    champion: float
    margin: float
    passed: bool
    # "margin": may be at most `margin` worse; "improvement": must be at least `margin` better.
    kind: str = "margin"

    def describe(self) -> str:
        better = self.challenger - self.champion
        if not DIRECTIONS[self.metric]:
            better = -better
        head = f"{self.metric} {self.challenger:.4f} vs champion {self.champion:.4f}"
        if self.passed:
            return f"{head} (ok)"
        if self.kind == "improvement":
            return f"{head} (better by {self._amount(better)} < required {self._limit()})"
        return f"{head} (worse by {self._amount(-better)} > margin {self._limit()})"

    def _amount(self, x: float) -> str:
        if self.metric in RELATIVE:
            return f"{x / abs(self.champion):.2%}" if self.champion else "inf"
        return f"{x:.4f}"

    def _limit(self) -> str:
        return f"{self.margin:.0%}" if self.metric in RELATIVE else f"{self.margin:g}"


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str
    checks: tuple[Check, ...] = ()


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    margins: GateMargins,
    *,
    force: bool = False,
    no_champion_reason: str = "no champion yet",
    task: str = "binary",
    gate_metric: str | None = None,
    min_improvement: float = 0.0,
) -> GateDecision:
    """Accept or reject the challenger; metrics that are NaN on either side are not compared.

    ``gate_metric`` (one of the task's metrics) must also improve on the
    champion by at least ``min_improvement``, in the unit of its margin
    (absolute for binary metrics, a fraction of the champion's for rmse/mae).
    """
    metrics = TASK_METRICS[check_task(task)]
    if gate_metric is not None and gate_metric not in metrics:
        raise ConfigError(
            f"gate metric {gate_metric!r} is not a {task} metric; use one of {list(metrics)}"
        )
    if champion is None:
        return GateDecision(True, f"accepted: {no_champion_reason}")
    checks = []
    for metric in metrics:
        mine, theirs = challenger[metric], champion[metric]
        if math.isnan(mine) or math.isnan(theirs):
            continue
        margin = getattr(margins, metric)
        checks.append(Check(metric, mine, theirs, margin, _within(metric, mine, theirs, margin)))
    if gate_metric is not None and min_improvement > 0:
        # An improvement of 0 would only repeat the margin check, stricter: none asked.
        mine, theirs = challenger[gate_metric], champion[gate_metric]
        ok = _improves(gate_metric, mine, theirs, min_improvement)
        checks.append(Check(gate_metric, mine, theirs, min_improvement, ok, "improvement"))
    failed = [c for c in checks if not c.passed]
    if not failed:
        return GateDecision(
            True, "accepted: " + "; ".join(c.describe() for c in checks), tuple(checks)
        )
    why = "; ".join(c.describe() for c in failed)
    if force:
        return GateDecision(True, f"forced: {why}", tuple(checks))
    return GateDecision(False, f"rejected: {why}", tuple(checks))


def _slack(metric: str, champion: float, amount: float) -> float:
    """``amount`` in the metric's units: relative metrics scale with the champion's value."""
    return amount * abs(champion) if metric in RELATIVE else amount


def _within(metric: str, mine: float, theirs: float, margin: float) -> bool:
    slack = _slack(metric, theirs, margin)
    return mine >= theirs - slack if DIRECTIONS[metric] else mine <= theirs + slack


def _improves(metric: str, mine: float, theirs: float, required: float) -> bool:
    if math.isnan(mine) or math.isnan(theirs):
        return False  # an improvement that cannot be measured is not one
    need = _slack(metric, theirs, required)
    return mine >= theirs + need if DIRECTIONS[metric] else mine <= theirs - need
