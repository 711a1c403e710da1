"""When a rollout ends: per-arm evidence from calls and labels, and the decision.

:class:`RolloutPolicy` is fed each arm's calls (errors, model-run time) and
labeled examples (AUC and log loss for a binary model, RMSE and MAE for
regression) and decides to promote the candidate, abort the plan, or wait.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from loopline.contracts.errors import ConfigError, InvalidRequestError
from loopline.contracts.tasks import BINARY, REGRESSION, check_task
from loopline.rollout.plan import ARMS, CANDIDATE, CHAMPION

# Sort key of (score, label) pairs.
_score_of = itemgetter(0)


# -- per-arm running statistics ------------------------------------------------------
class ErrorRate:
    """Calls and failed calls.

    >>> e = ErrorRate()
    >>> for ok in (True, True, False, True):
    ...     e.update(error=not ok)
    >>> e.calls, e.get()
    (4, 0.25)
    """

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0

    def update(self, error: bool) -> None:
        self.calls += 1
        self.errors += int(error)

    def get(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


class LatencyQuantile:
    """A quantile over the most recent ``window`` latencies (exact within the window).

    >>> q = LatencyQuantile(q=0.5, window=3)
    >>> for ms in (100.0, 1.0, 2.0, 3.0):
    ...     q.update(ms)
    >>> q.n, q.get()
    (3, 2.0)
    """

    def __init__(self, q: float = 0.99, window: int = 2000) -> None:
        if not 0.0 < q < 1.0:
            raise ConfigError(f"quantile must be within (0, 1), not {q}")
        self.q = q
        self.window = window
        self._values: deque[float] = deque(maxlen=window)

    @property
    def n(self) -> int:
        return len(self._values)

    def update(self, value: float) -> None:
        self._values.append(float(value))

    def get(self) -> float:
        if not self._values:
            return math.nan
        ordered = sorted(self._values)
        # Nearest rank: the smallest value with at least q of the window at or below it.
        rank = max(0, math.ceil(self.q * len(ordered)) - 1)
        return ordered[rank]


class LogLoss:
    """Mean binary log loss of probabilities (clipped so one sure miss stays finite).

    >>> m = LogLoss()
    >>> m.update(0.8, 1); m.update(0.2, 0)
    >>> m.n, round(m.get(), 4)
    (2, 0.2231)
    """

    EPS = 1e-15

    def __init__(self) -> None:
        self.n = 0
        self._total = 0.0

    def update(self, score: float, label: int) -> None:
        p = min(max(float(score), self.EPS), 1.0 - self.EPS)
        self._total -= math.log(p) if label else math.log(1.0 - p)
        self.n += 1

    def get(self) -> float:
        return self._total / self.n if self.n else math.nan


class WindowAUC:
    """ROC AUC over the most recent ``window`` labeled scores (ties count half).

    NaN while the window holds only one class.

    >>> a = WindowAUC(window=4)
    >>> for s, y in ((0.9, 1), (0.8, 0), (0.7, 1), (0.1, 0)):
    ...     a.update(s, y)
    >>> a.get()
    0.75
    """

    def __init__(self, window: int = 5000) -> None:
        self.window = window
        self._pairs: deque[tuple[float, int]] = deque(maxlen=window)

    @property
    def n(self) -> int:
        return len(self._pairs)

    def update(self, score: float, label: int) -> None:
        self._pairs.append((float(score), 1 if label else 0))

    def get(self) -> float:
        pairs = self._pairs
        positives = sum(y for _, y in pairs)
        negatives = len(pairs) - positives
        if positives == 0 or negatives == 0:
            return math.nan
        # Mann-Whitney U from mid-ranks, so tied scores count half.
        ordered = sorted(pairs, key=_score_of)
        n = len(ordered)
        rank_sum = 0.0
        i = 0
        while i < n:
            score, tied_positives = ordered[i]
            j = i + 1
            while j < n and ordered[j][0] == score:
                tied_positives += ordered[j][1]
                j += 1
            rank_sum += tied_positives * (i + 1 + j) / 2.0  # mid-rank of ranks i+1..j
            i = j
        u = rank_sum - positives * (positives + 1) / 2.0
        return u / (positives * negatives)


class RegressionError:
    """Root mean squared and mean absolute error of predicted values.

    >>> e = RegressionError()
    >>> for prediction, label in ((10.0, 12.0), (5.0, 4.0), (0.0, 0.0), (-1.0, 1.0)):
    ...     e.update(prediction, label)
    >>> e.n, round(e.rmse(), 4), e.mae()
    (4, 1.5, 1.25)
    """

    def __init__(self) -> None:
        self.n = 0
        self._squares = 0.0
        self._absolutes = 0.0

    def update(self, prediction: float, label: float) -> None:
        residual = float(label) - float(prediction)
        self.n += 1
        self._squares += residual * residual
        self._absolutes += abs(residual)

    def rmse(self) -> float:
        return math.sqrt(self._squares / self.n) if self.n else math.nan

    def mae(self) -> float:
        return self._absolutes / self.n if self.n else math.nan


class ArmStats:
    """Everything the policy watches for one arm (label metrics by task)."""

    def __init__(
        self,
        latency_q: float = 0.99,
        latency_window: int = 2000,
        auc_window: int = 5000,
        task: str = BINARY,
    ):
        self.task = task
        self.errors = ErrorRate()
        self.latency = LatencyQuantile(latency_q, latency_window)
        self.log_loss = LogLoss()
        self.auc = WindowAUC(auc_window)
        self.regression = RegressionError()

    @property
    def labels(self) -> int:
        return self.regression.n if self.task == REGRESSION else self.log_loss.n

    def update_label(self, score: float, label: float) -> None:
        if self.task == REGRESSION:
            self.regression.update(score, label)
        else:
            self.log_loss.update(score, int(label))
            self.auc.update(score, int(label))

    def summary(self) -> dict[str, float]:
        out = {
            "calls": self.errors.calls,
            "error_rate": self.errors.get(),
            "latency_p": self.latency.get(),
            "labels": self.labels,
        }
        if self.task == REGRESSION:
            return {**out, "rmse": self.regression.rmse(), "mae": self.regression.mae()}
        return {**out, "auc": self.auc.get(), "log_loss": self.log_loss.get()}


# -- policy -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What the policy says now: "promote", "abort" or "continue", and why."""

    action: str
    reason: str
    evidence: dict[str, dict[str, float]] = field(default_factory=dict)


class RolloutPolicy:
    """Promote or abort a running rollout from per-arm evidence.

    Aborts at once when the candidate's error rate exceeds the champion's by
    ``error_margin`` (both arms with ``min_calls`` calls), or its latency
    quantile exceeds ``latency_ratio`` times the champion's. After
    ``min_labels`` labeled examples on each arm, promotes when the candidate's
    AUC is at most ``auc_margin`` below and its log loss at most
    ``log_loss_margin`` above the champion's, and aborts otherwise. With
    ``task="regression"`` the labels are numbers and the scores predicted
    values: it promotes when the candidate's RMSE and MAE are each at most
    ``rmse_margin`` / ``mae_margin`` (relative: 0.02 = 2 %) above the champion's.

    >>> policy = RolloutPolicy(min_labels=4, min_calls=2)
    >>> policy.decide().action
    'continue'
    >>> for arm in ("champion", "candidate"):
    ...     for s, y in ((0.9, 1), (0.2, 0), (0.8, 1), (0.1, 0)):
    ...         policy.update_label(arm, s, y)
    >>> policy.decide().action
    'promote'
    """

    def __init__(
        self,
        *,
        min_labels: int = 1000,
        auc_margin: float = 0.01,
        log_loss_margin: float = 0.02,
        min_calls: int = 200,
        error_margin: float = 0.01,
        latency_ratio: float = 1.5,
        latency_quantile: float = 0.99,
        latency_min_delta_ms: float = 0.0,
        latency_window: int = 2000,
        auc_window: int = 5000,
        rmse_margin: float = 0.02,
        mae_margin: float = 0.02,
        task: str = BINARY,
    ) -> None:
        check_task(task, "rollout")
        self.task = task
        self.rmse_margin = rmse_margin
        self.mae_margin = mae_margin
        self.min_labels = min_labels
        self.auc_margin = auc_margin
        self.log_loss_margin = log_loss_margin
        self.min_calls = min_calls
        self.error_margin = error_margin
        self.latency_ratio = latency_ratio
        self.latency_quantile = latency_quantile
        self.latency_min_delta_ms = latency_min_delta_ms
        self.latency_window = latency_window
        self.auc_window = auc_window
        self.arms = {
            arm: ArmStats(latency_quantile, latency_window, auc_window, task) for arm in ARMS
        }

    @staticmethod
    def from_settings(settings: Any, task: str = BINARY) -> RolloutPolicy:
        """The policy the ``rollout`` settings section describes, for ``task``.

        >>> from loopline.contracts.settings import RolloutSettings
        >>> RolloutPolicy.from_settings(RolloutSettings(min_labels=50)).min_labels
        50
        >>> RolloutPolicy.from_settings(RolloutSettings(), task="regression").rmse_margin
        0.02
        """
        return RolloutPolicy(
            task=task,
            rmse_margin=settings.rmse_margin,
            mae_margin=settings.mae_margin,
            min_labels=settings.min_labels,
            auc_margin=settings.auc_margin,
            log_loss_margin=settings.log_loss_margin,
            min_calls=settings.min_calls,
            error_margin=settings.error_margin,
            latency_ratio=settings.latency_ratio,
            latency_quantile=settings.latency_quantile,
            latency_min_delta_ms=settings.latency_min_delta_ms,
        )

    def _arm(self, arm: str) -> ArmStats:
        try:
            return self.arms[arm]
        except KeyError:
            raise InvalidRequestError(f"unknown arm {arm!r}; expected one of {ARMS}") from None

    def update_call(self, arm: str, latency_ms: float | None = None, error: bool = False) -> None:
        """One call answered (or scored in shadow) by ``arm``; latency of successes only."""
        stats = self._arm(arm)
        stats.errors.update(error)
        if latency_ms is not None and not error:
            stats.latency.update(latency_ms)

    def update_label(self, arm: str, score: float, label: float) -> None:
        """One labeled example scored by ``arm`` (a 0/1 label, or a number for regression)."""
        self._arm(arm).update_label(score, label)

    def decide(self) -> Decision:
        champ, cand = self.arms[CHAMPION], self.arms[CANDIDATE]
        # Computed once: the AUC and quantile sorts are the costly part.
        evidence = {arm: self.arms[arm].summary() for arm in ARMS}
        cand_ev, champ_ev = evidence[CANDIDATE], evidence[CHAMPION]
        if champ.errors.calls >= self.min_calls and cand.errors.calls >= self.min_calls:
            ce, he = cand_ev["error_rate"], champ_ev["error_rate"]
            if ce > he + self.error_margin:
                return Decision(
                    "abort",
                    f"error rate regression: candidate {ce:.2%} vs champion {he:.2%} "
                    f"(margin {self.error_margin:.2%})",
                    evidence,
                )
        if champ.latency.n >= self.min_calls and cand.latency.n >= self.min_calls:
            cl, hl = cand_ev["latency_p"], champ_ev["latency_p"]
            if hl > 0 and cl / hl > self.latency_ratio and cl - hl >= self.latency_min_delta_ms:
                q = f"p{self.latency_quantile * 100:g}"
                return Decision(
                    "abort",
                    f"latency regression: candidate {q} {cl:.3g} ms vs champion {hl:.3g} ms "
                    f"(ratio {cl / hl:.2f} > {self.latency_ratio:g})",
                    evidence,
                )
        if cand.labels < self.min_labels or champ.labels < self.min_labels:
            return Decision(
                "continue",
                f"waiting for labels: candidate {cand.labels}, champion {champ.labels} "
                f"of {self.min_labels}",
                evidence,
            )
        if self.task == REGRESSION:
            return self._decide_regression(cand.labels, evidence)
        ca, ha = cand_ev["auc"], champ_ev["auc"]
        if math.isnan(ca) or math.isnan(ha):
            return Decision("continue", "waiting for both classes among the labels", evidence)
        cl, hl = cand_ev["log_loss"], champ_ev["log_loss"]
        if ca < ha - self.auc_margin:
            return Decision(
                "abort", f"quality regression: candidate AUC {ca:.4f} vs {ha:.4f}", evidence
            )
        if cl > hl + self.log_loss_margin:
            return Decision(
                "abort",
                f"quality regression: candidate log loss {cl:.4f} vs {hl:.4f}",
                evidence,
            )
        return Decision(
            "promote",
            f"candidate not worse after {cand.labels} labels: AUC {ca:.4f} vs {ha:.4f}, "
            f"log loss {cl:.4f} vs {hl:.4f}",
            evidence,
        )

    def _decide_regression(self, labels: int, evidence: dict[str, dict[str, float]]) -> Decision:
        """Promote unless the candidate's RMSE or MAE is worse by more than its relative margin."""
        cand, champ = evidence[CANDIDATE], evidence[CHAMPION]
        for metric, margin in (("rmse", self.rmse_margin), ("mae", self.mae_margin)):
            c, h = cand[metric], champ[metric]
            if c > h * (1.0 + margin):
                return Decision(
                    "abort",
                    f"quality regression: candidate {metric.upper()} {c:.4g} vs {h:.4g} "
                    f"(margin {margin:.1%})",
                    evidence,
                )
        return Decision(
            "promote",
            f"candidate not worse after {labels} labels: RMSE {cand['rmse']:.4g} vs "
            f"{champ['rmse']:.4g}, MAE {cand['mae']:.4g} vs {champ['mae']:.4g}",
            evidence,
        )
