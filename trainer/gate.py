"""The champion/challenger gate: a pure decision over holdout metrics.

Both models are scored on the same recent holdout. The challenger becomes
champion only when no metric is worse than the champion's by more than its
margin (or when forced); otherwise it is kept as a rejected candidate and the
reason says which metric failed and by how much.

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# metric -> True when higher is better
DIRECTIONS = {"auc": True, "log_loss": False, "brier": False}


@dataclass(frozen=True)
class GateMargins:
    """How much worse than the champion each metric may be."""

    auc: float
    log_loss: float
    brier: float


@dataclass(frozen=True)
class Check:
    metric: str
    challenger: float
    champion: float
    margin: float
    passed: bool

    def describe(self) -> str:
        worse = self.champion - self.challenger
        if not DIRECTIONS[self.metric]:
            worse = -worse
        verdict = f"worse by {worse:.4f} > margin {self.margin:g}" if not self.passed else "ok"
        return f"{self.metric} {self.challenger:.4f} vs champion {self.champion:.4f} ({verdict})"


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
) -> GateDecision:
    """Accept or reject the challenger; metrics that are NaN on either side are not compared."""
    if champion is None:
        return GateDecision(True, f"accepted: {no_champion_reason}")
    checks = []
    for metric, higher_is_better in DIRECTIONS.items():
        mine, theirs = challenger[metric], champion[metric]
        if math.isnan(mine) or math.isnan(theirs):
            continue
        margin = getattr(margins, metric)
        ok = mine >= theirs - margin if higher_is_better else mine <= theirs + margin
        checks.append(Check(metric, mine, theirs, margin, ok))
    failed = [c for c in checks if not c.passed]
    if not failed:
        return GateDecision(
            True, "accepted: " + "; ".join(c.describe() for c in checks), tuple(checks)
        )
    why = "; ".join(c.describe() for c in failed)
    if force:
        return GateDecision(True, f"forced: {why}", tuple(checks))
    return GateDecision(False, f"rejected: {why}", tuple(checks))
