"""The rollout plan as one server follows it: routing, per-arm evidence, auto-abort.

The registry's plan record is the source of truth (``loopline models
rollout start``, the trainer's publish mode and ``loopline run rollout``
write it). :meth:`RolloutFollower.sync` runs off the request path (the model
follower's thread): it reads the plan, loads and checks the candidate like
any model version, and swaps one :class:`Arms` reference that request threads
read once per call. Per-arm calls feed a :class:`RolloutPolicy`;
:meth:`RolloutFollower.decide` aborts the plan (compare-and-set in the
registry, then an announcement) on an error-rate or latency regression, or
when the candidate cannot be loaded at all. Promotion needs labels and is
``loopline run rollout``'s call; this server only follows it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from loopline.contracts.errors import InvalidRequestError, LooplineError
from loopline.contracts.settings import RolloutSettings
from loopline.featurecore.features import FeatureSet
from loopline.registry.directory import ModelRegistry
from loopline.rollout.plan import (
    ARMS,
    CANDIDATE,
    CHAMPION,
    RolloutPlan,
    assign_arm,
)
from loopline.rollout.policy import Decision, RolloutPolicy
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import LoadedModel, load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Arms:
    """The running plan and its loaded candidate (both None: no rollout)."""

    plan: RolloutPlan | None = None
    candidate: LoadedModel | None = None


NO_ROLLOUT = Arms()


class RolloutFollower:
    """Keeps :attr:`arms` on the registry's running plan for ``model_name``."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        model_name: str,
        feature_set: FeatureSet,
        metrics: ServingMetrics,
        settings: RolloutSettings,
        golden_tolerance: float,
        announce: Callable[[RolloutPlan], None] | None = None,
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        self.fs = feature_set
        self.metrics = metrics
        self.settings = settings
        self.golden_tolerance = golden_tolerance
        self.announce = announce
        self.arms: Arms = NO_ROLLOUT
        self.policy = RolloutPolicy.from_settings(settings)
        self._policy_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._next_decision = 0.0
        # Pre-bound children: a label lookup per call costs more than the increment.
        self._calls = {
            (arm, path, result): metrics.arm_calls.labels(arm, path, result)
            for arm in ARMS
            for path in ("answer", "shadow")
            for result in ("ok", "error")
        }
        self._seconds = {
            arm: metrics.arm_model_seconds.labels(arm) for arm in (CHAMPION, CANDIDATE)
        }
        self._scores = {arm: metrics.arm_score.labels(arm) for arm in (CHAMPION, CANDIDATE)}

    # -- request path -------------------------------------------------------------
    def route(self, arms: Arms, entity_id: str, override: str) -> LoadedModel | None:
        """The candidate when it answers this request, else None (the champion answers)."""
        plan = arms.plan
        if plan is None:
            if override == CANDIDATE:
                raise InvalidRequestError(
                    f"arm 'candidate' requested, but no rollout of {self.model_name!r} is "
                    f"running; use '' or 'champion'"
                )
            return None
        if assign_arm(plan, entity_id, override) == CANDIDATE:
            return arms.candidate
        return None

    def record_score(self, arm: str, score: float) -> None:
        """An answer while no plan runs: its count and score, no timing (nothing compares it)."""
        if math.isfinite(score):
            self._calls[(arm, "answer", "ok")].inc()
            self._scores[arm].observe(score)
        else:
            self._calls[(arm, "answer", "error")].inc()

    def record(
        self, arm: str, path: str, seconds: float, cpu_seconds: float, score: float | None
    ) -> bool:
        """One model run of ``arm``; ``score`` None or non-finite is an error. True when ok.

        The histogram gets the wall time (what a caller waits); the policy
        compares CPU time, the model's own cost, because the shadow thread
        waits for the GIL behind request threads and its wall time would make
        an equally fast candidate look slower under load.
        """
        ok = score is not None and math.isfinite(score)
        self._calls[(arm, path, "ok" if ok else "error")].inc()
        if ok:
            self._seconds[arm].observe(seconds)
            self._scores[arm].observe(score)
        if self.arms.plan is not None:
            with self._policy_lock:
                self.policy.update_call(arm, cpu_seconds * 1000.0 if ok else None, error=not ok)
        return ok

    def record_answers(
        self, arms: Arms, arm: str, scores: Sequence[float], wall: float, cpu: float
    ) -> None:
        """One run of ``arm`` that answered ``len(scores)`` requests in ``wall``/``cpu`` seconds."""
        n = len(scores)
        if arms.plan is None and n > 1:
            # A batch: one count for all its answers (the scores one by one).
            finite = [float(x) for x in scores if math.isfinite(x)]
            histogram = self._scores[arm]
            for score in finite:
                histogram.observe(score)
            self._calls[(arm, "answer", "ok")].inc(len(finite))
            if len(finite) < n:
                self._calls[(arm, "answer", "error")].inc(n - len(finite))
            return
        for score in scores:
            if arms.plan is None:
                self.record_score(arm, float(score))
            else:
                self.record(arm, "answer", wall / n, cpu / n, float(score))

    def run_candidate(
        self, candidate: LoadedModel, matrix: list[list[float]]
    ) -> list[float] | None:
        """The candidate's scores, recorded; None when its run fails (the champion answers)."""
        n = len(matrix)
        try:
            out, wall, cpu = candidate.timed_probabilities(np.array(matrix, dtype=np.float32))
            scores: list[float | None] = [float(x) for x in out]
        except Exception as e:  # onnxruntime raises its own hierarchy
            log.warning("candidate v%s failed; the champion answers: %s", candidate.version, e)
            scores, wall, cpu = [None] * n, 0.0, 0.0  # a failed run's time is never compared
        ok = [self.record(CANDIDATE, "answer", wall / n, cpu / n, x) for x in scores]
        return scores if all(ok) else None  # type: ignore[return-value]

    # -- follower thread ----------------------------------------------------------
    def sync(self) -> None:
        """Follow the registry's plan: load a new candidate, drop a finished plan."""
        with self._sync_lock:
            try:
                plan = self.registry.rollout(self.model_name)
            except LooplineError as e:
                log.warning("%s: cannot read the rollout plan: %s", self.model_name, e)
                return
            current = self.arms
            if plan is None or not plan.running:
                if current.plan is not None:
                    self._install(NO_ROLLOUT, current)
                    state = plan.state if plan else "removed"
                    reason = f": {plan.reason}" if plan and plan.reason else ""
                    log.info(
                        "%s: rollout %s ended (%s%s)",
                        self.model_name,
                        current.plan.plan_id,
                        state,
                        reason,
                    )
                return
            if current.plan is not None and current.plan.plan_id == plan.plan_id:
                return
            candidate = self._load_candidate(plan, current)
            if candidate is None:
                return
            self._install(Arms(plan, candidate), current)
            log.info(
                "%s: rollout %s: v%s in %s next to champion v%s",
                self.model_name,
                plan.plan_id,
                plan.candidate_version,
                plan.mode,
                plan.champion_version,
            )

    def decide(self, now: float | None = None) -> Decision | None:
        """Every ``decide_every_s``: abort the running plan on a call regression."""
        now = time.monotonic() if now is None else now
        if now < self._next_decision:
            return None
        self._next_decision = now + self.settings.decide_every_s
        plan = self.arms.plan
        if plan is None or not self.settings.auto_abort:
            return None
        with self._policy_lock:
            decision = self.policy.decide()
        # Promotion needs labels: `loopline run rollout` decides it, never serving.
        if decision.action != "abort":
            return decision
        self._abort(plan, f"serving policy: {decision.reason}")
        return decision

    def adoptable(self, version: str, sha256: str) -> LoadedModel | None:
        """The loaded candidate, when the champion alias moves to it (a promotion)."""
        candidate = self.arms.candidate
        if candidate is not None and (candidate.version, candidate.manifest.sha256) == (
            version,
            sha256,
        ):
            return candidate
        return None

    # -- internals ----------------------------------------------------------------
    def _load_candidate(self, plan: RolloutPlan, current: Arms) -> LoadedModel | None:
        old = current.candidate
        if old is not None and old.version == plan.candidate_version:
            return old
        t0 = time.perf_counter()
        try:
            mv = self.registry.get(self.model_name, plan.candidate_version)
            model = load_model(mv, self.fs, self.golden_tolerance)
        except (LooplineError, OSError) as e:
            self.metrics.swaps.labels("failed").inc()
            log.error(
                "%s: rollout %s: candidate v%s cannot serve: %s",
                self.model_name,
                plan.plan_id,
                plan.candidate_version,
                e,
            )
            if self.settings.auto_abort:
                self._abort(plan, f"candidate v{plan.candidate_version} cannot serve: {e}")
            return None
        self.metrics.load_seconds.observe(time.perf_counter() - t0)
        return model

    def _install(self, arms: Arms, before: Arms) -> None:
        if arms.plan is None or before.plan is None or arms.plan.plan_id != before.plan.plan_id:
            with self._policy_lock:
                self.policy = RolloutPolicy.from_settings(self.settings)
        self.arms = arms
        info = self.metrics.rollout_info
        if before.plan is not None:
            info.labels(*_info_labels(before.plan)).set(0)
        if arms.plan is not None:
            info.labels(*_info_labels(arms.plan)).set(1)

    def _abort(self, plan: RolloutPlan, reason: str) -> None:
        try:
            done = self.registry.finish_rollout(self.model_name, plan.plan_id, "aborted", reason)
        except LooplineError as e:
            log.error("%s: cannot abort rollout %s: %s", self.model_name, plan.plan_id, e)
            return
        if done is None:
            return  # another process or a person ended it first
        self.metrics.rollout_decisions.labels("abort").inc()
        log.warning("%s: rollout %s aborted: %s", self.model_name, plan.plan_id, reason)
        if self.announce is not None:
            try:
                self.announce(done)
            except LooplineError as e:
                # The registry holds the plan; other servers still see it on their poll.
                log.error(
                    "%s: the abort of %s was not announced: %s", self.model_name, plan.plan_id, e
                )
        if self.arms.plan is not None and self.arms.plan.plan_id == plan.plan_id:
            self._install(NO_ROLLOUT, self.arms)


def _info_labels(plan: RolloutPlan) -> tuple[str, str, str, str, str]:
    return (plan.model, plan.plan_id, plan.mode, plan.candidate_version, plan.champion_version)
