"""Safe rollout of a model version: the plan, the traffic split and the policy.

A :class:`RolloutPlan` says how a *candidate* version runs next to the
*champion*: in ``shadow`` mode the candidate scores a sampled share of
requests off the response path (the champion answers); in ``canary`` mode a
share of entities is answered by the candidate. The split is a stable hash of
(plan id, entity), so an entity keeps its arm for the life of a plan and a new
plan reshuffles. :class:`RolloutPolicy` watches per-arm calls and labels and
decides when to promote or abort. Everything here is pure: no I/O, no clock
reads except where a caller passes none.

>>> plan = RolloutPlan.start("fraud", candidate="3", champion="2", mode="canary",
...                          canary_share=0.25, plan_id="p1", created_ms=0)
>>> assign_arm(plan, "card-17") == assign_arm(plan, "card-17")
True
>>> assign_arm(plan, "card-17", override="candidate")
'candidate'
>>> RolloutPlan.from_json(plan.to_json()) == plan
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from loopline.contracts.errors import ConfigError, InvalidRequestError, SchemaError
from loopline.contracts.tasks import BINARY, REGRESSION, check_task

CHAMPION = "champion"
CANDIDATE = "candidate"
ARMS = (CHAMPION, CANDIDATE)
MODES = ("shadow", "canary")
STATES = ("running", "promoted", "aborted")

_HASH_SCALE = float(2**64)
_score_of = itemgetter(0)


def _unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) for the parts (same on every host and run)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


@dataclass(frozen=True)
class RolloutPlan:
    """One rollout of ``candidate_version`` against ``champion_version`` of ``model``.

    ``canary_share`` is the share of entities the candidate answers (canary
    mode); ``shadow_share`` the share of requests the candidate also scores
    off the response path (shadow mode).
    """

    model: str
    candidate_version: str
    champion_version: str
    mode: str = "shadow"
    canary_share: float = 0.0
    shadow_share: float = 1.0
    plan_id: str = ""
    created_ms: int = 0
    state: str = "running"
    reason: str = ""
    updated_ms: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"rollout mode must be one of {MODES}, not {self.mode!r}")
        if self.state not in STATES:
            raise ConfigError(f"rollout state must be one of {STATES}, not {self.state!r}")
        for name in ("canary_share", "shadow_share"):
            share = getattr(self, name)
            if not (isinstance(share, int | float) and 0.0 <= share <= 1.0):
                raise ConfigError(f"rollout {name} must be within [0, 1], not {share!r}")
        if not self.model or not self.candidate_version or not self.plan_id:
            raise ConfigError("a rollout plan needs a model, a candidate version and a plan id")

    @staticmethod
    def start(
        model: str,
        *,
        candidate: str,
        champion: str,
        mode: str,
        canary_share: float = 0.0,
        shadow_share: float = 1.0,
        plan_id: str = "",
        created_ms: int | None = None,
    ) -> RolloutPlan:
        """A new running plan (a fresh random plan id unless given)."""
        now = int(time.time() * 1000) if created_ms is None else created_ms
        return RolloutPlan(
            model=model,
            candidate_version=candidate,
            champion_version=champion,
            mode=mode,
            canary_share=canary_share,
            shadow_share=shadow_share,
            plan_id=plan_id or uuid.uuid4().hex[:12],
            created_ms=now,
            updated_ms=now,
        )

    @property
    def running(self) -> bool:
        return self.state == "running"

    def finished(self, state: str, reason: str, now_ms: int | None = None) -> RolloutPlan:
        """This plan ended as ``state`` ("promoted" | "aborted").

        >>> p = RolloutPlan("m", "2", "1", plan_id="x")
        >>> p.finished("aborted", "errors").state, p.state
        ('aborted', 'running')
        """
        if state not in ("promoted", "aborted"):
            raise ConfigError(f"a rollout ends promoted or aborted, not {state!r}")
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return dataclasses.replace(self, state=state, reason=reason, updated_ms=now)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> RolloutPlan:
        """Build from a decoded record; unknown keys are ignored (newer writers)."""
        if not isinstance(data, dict):
            raise SchemaError("a rollout plan must be a JSON object", "plan")
        known = {f.name for f in dataclasses.fields(RolloutPlan)}
        try:
            return RolloutPlan(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise SchemaError(f"rollout plan: {e}", "plan") from e
        except ConfigError as e:
            raise SchemaError(f"rollout plan: {e}", "plan") from e

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> RolloutPlan:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise SchemaError(f"rollout plan is not JSON: {e}", "plan") from e
        return RolloutPlan.from_dict(data)


def assign_arm(plan: RolloutPlan | None, entity_id: str, override: str = "") -> str:
    """Which arm answers a request for ``entity_id``: "champion" or "candidate".

    Canary mode: the candidate answers when the stable hash of (plan id,
    entity) falls below the canary share, so an entity is sticky for a plan.
    Shadow mode and finished (or no) plans: the champion always answers. A
    per-request ``override`` ("champion" | "candidate") wins while the plan runs.

    >>> p = RolloutPlan("m", "2", "1", mode="canary", canary_share=1.0, plan_id="a")
    >>> assign_arm(p, "e"), assign_arm(p, "e", override="champion"), assign_arm(None, "e")
    ('candidate', 'champion', 'champion')
    """
    if override and override not in ARMS:
        raise InvalidRequestError(f"arm override must be one of {ARMS}, not {override!r}")
    if plan is None or not plan.running:
        return CHAMPION
    if override:
        return override
    if plan.mode != "canary":
        return CHAMPION
    return CANDIDATE if _unit_hash(plan.plan_id, entity_id) < plan.canary_share else CHAMPION


def shadow_sampled(plan: RolloutPlan | None, request_id: str) -> bool:
    """Whether the candidate also scores this request off the response path.

    >>> p = RolloutPlan("m", "2", "1", mode="shadow", shadow_share=1.0, plan_id="a")
    >>> shadow_sampled(p, "r1"), shadow_sampled(p.finished("aborted", "x"), "r1")
    (True, False)
    """
    if plan is None or not plan.running or plan.mode != "shadow":
        return False
    return _unit_hash(plan.plan_id, "shadow", request_id) < plan.shadow_share


def shadow_request_id(request_id: str) -> str:
    """The request id a shadow score is logged under.

    The label join drops a second prediction log with the same request id as a
    duplicate, and joins predictions to outcomes by event id: so the shadow
    log takes this id, keeps the request's event id (or, when it has none, the
    original request id as its ``event_id``) and ``arm="candidate"``.

    >>> shadow_request_id("r-1")
    'r-1/shadow'
    """
    return f"{request_id}/shadow"


def plan_arm(plan: RolloutPlan, model_version: str, event_time_ms: int) -> str | None:
    """Which arm of ``plan`` a labeled example counts for (None: not this plan's).

    Examples scored before the plan started, or by another version, say
    nothing about this plan's arms.

    >>> p = RolloutPlan("m", "3", "2", plan_id="p", created_ms=1000)
    >>> [plan_arm(p, v, t) for v, t in (("3", 2000), ("2", 2000), ("2", 999), ("1", 2000))]
    ['candidate', 'champion', None, None]
    """
    if event_time_ms < plan.created_ms:
        return None
    if model_version == plan.candidate_version:
        return CANDIDATE
    if model_version == plan.champion_version:
        return CHAMPION
    return None


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
    evidence: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


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
