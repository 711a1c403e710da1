"""The rollout watcher: follows a model's running plans and ends them by the policy.

Every ``decide_every_s`` it reconciles with the registry's plan (a plan ended or
replaced elsewhere drops its evidence), lets the policy decide, and ends the
plan on "promote" or "abort" with a compare-and-set in the registry; the end
is announced, and an unacknowledged announcement is retried on the next tick.
Reading records (:mod:`.label_source`) and counting them (:mod:`.evidence`)
are the caller's ports, so tests drive it with in-memory sources.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry

from loopline.contracts.errors import DeliveryError, ModelError, StackError
from loopline.contracts.schemas import ModelUpdate
from loopline.registry.directory import ModelVersion
from loopline.rollout.plan import RolloutPlan
from loopline.rollout.policy import Decision, RolloutPolicy
from loopline.trainer.publish_policy import Announcer, rollout_update, share_text, utc_text
from loopline.trainer.rollout.evidence import PlanWatch
from loopline.trainer.rollout.label_source import LabelSource
from loopline.trainer.rollout.watch_metrics import RolloutMetrics

log = logging.getLogger("loopline.trainer.rollout")


class PlanRegistry(Protocol):
    """What the watcher needs from a registry (``DirectoryRegistry`` has it all)."""

    def rollout(self, model: str) -> RolloutPlan | None: ...
    def resolve(self, model: str, alias: str) -> ModelVersion | None: ...
    def finish_rollout(
        self, model: str, plan_id: str, state: str, reason: str
    ) -> RolloutPlan | None: ...


@dataclass(frozen=True)
class PlanEnd:
    """A watched plan that stopped running.

    ``decision`` is the policy's when the watcher ended it (None: it ended
    elsewhere); ``finished`` is the plan record the watcher wrote (None: it
    did not write one, because the plan was ended or replaced first).
    """

    plan: RolloutPlan
    decision: Decision | None
    finished: RolloutPlan | None


class RolloutWatcher:
    """Follows a model's running rollout plans and ends them by the policy.

    ``open_source`` opens the labeled records for a plan, ``new_policy`` makes
    a fresh policy for each plan. With ``plan_id`` it follows that plan only.
    """

    def __init__(
        self,
        registry: PlanRegistry,
        model: str,
        *,
        open_source: Callable[[RolloutPlan], LabelSource],
        new_policy: Callable[[], RolloutPolicy],
        announcer: Announcer | None = None,
        metrics: RolloutMetrics | None = None,
        decide_every_s: float = 2.0,
        plan_id: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.model = model
        self.open_source = open_source
        self.new_policy = new_policy
        self.announcer = announcer
        self.metrics = metrics or RolloutMetrics(CollectorRegistry())
        self.decide_every_s = max(0.05, decide_every_s)
        self.plan_id = plan_id
        self.clock = clock
        for action in ("promote", "abort"):
            # Present from the start at 0, so a first decision shows up in increase().
            self.metrics.decisions.labels(model, action)
        self.metrics.running.labels(model).set(0)
        self.watch: PlanWatch | None = None
        self.source: LabelSource | None = None
        self.last_decision: Decision | None = None
        self.outbox: list[ModelUpdate] = []
        self.announced: list[ModelUpdate] = []
        self._idle_logged = False

    # -- per plan ------------------------------------------------------------------------
    def follow(self, plan: RolloutPlan) -> None:
        """Start collecting evidence for running ``plan`` (its records from its start)."""
        self._drop()
        source = self.open_source(plan)
        self.watch = PlanWatch(plan, self.new_policy())
        self.source = source
        self.last_decision = None
        self._idle_logged = False
        self.metrics.running.labels(self.model).set(1)
        self.metrics.evidence(self.model, {}, self.watch.policy.task)
        log.info(
            "rollout %s of %s started: v%s in %s (%s) against champion v%s; counting labels "
            "from %s",
            plan.plan_id, plan.model, plan.candidate_version, plan.mode, share_text(plan),
            plan.champion_version, utc_text(plan.created_ms),
        )  # fmt: skip

    def _drop(self) -> None:
        if self.source is not None:
            self.source.close()
        self.source = None
        self.watch = None
        self.metrics.running.labels(self.model).set(0)

    def pump(self, timeout_s: float) -> int:
        """Read labeled records for up to ``timeout_s``; returns how many counted."""
        if self.source is None or self.watch is None:
            return 0
        counted = 0
        for raw in self.source.poll(timeout_s):
            counted += self.watch.offer(raw)
        return counted

    def tick(self) -> PlanEnd | None:
        """Reconcile with the registry's plan, then decide once; the plan that ended, if any."""
        self._flush()
        try:
            current = self.registry.rollout(self.model)
        except ModelError as e:
            log.warning("rollout: cannot read the plan of %s: %s", self.model, e)
            return None
        watch = self.watch
        if watch is not None:
            same = current is not None and current.plan_id == watch.plan.plan_id
            if not (same and current is not None and current.running):
                how = f"{current.state}: {current.reason}" if same and current else "replaced"
                log.info("rollout %s ended elsewhere (%s); its evidence is dropped",
                         watch.plan.plan_id, how)  # fmt: skip
                self._drop()
                return PlanEnd(watch.plan, None, None)
            return self._decide(watch)
        if current is not None and current.running and self.plan_id in ("", current.plan_id):
            try:
                self.follow(current)
            except StackError as e:
                log.error("rollout %s: cannot read the labeled log (retrying): %s",
                          current.plan_id, e)  # fmt: skip
            return None
        if not self._idle_logged:
            log.info("rollout: no running plan of %s; waiting", self.model)
            self._idle_logged = True
        return None

    def _decide(self, watch: PlanWatch) -> PlanEnd | None:
        plan = watch.plan
        decision = watch.decide()
        self.metrics.evidence(self.model, decision.evidence, watch.policy.task)
        previous = self.last_decision
        self.last_decision = decision
        if decision.action == "continue":
            if previous is None or previous.reason != decision.reason:
                log.info("rollout %s: continue: %s (%d labels counted, %d ignored)",
                         plan.plan_id, decision.reason, watch.counted, watch.ignored)  # fmt: skip
            return None
        state = "promoted" if decision.action == "promote" else "aborted"
        log.info("rollout %s: %s: %s", plan.plan_id, decision.action, decision.reason)
        done = self.registry.finish_rollout(
            self.model, plan.plan_id, state, f"policy: {decision.reason}"
        )
        self._drop()
        if done is None:
            log.info("rollout %s was ended elsewhere first; nothing to do", plan.plan_id)
            return PlanEnd(plan, decision, None)
        self.metrics.decisions.labels(self.model, decision.action).inc()
        champion = self.registry.resolve(self.model, "champion")
        if champion is None:
            log.error("rollout %s %s, but %s has no champion to announce", plan.plan_id,
                      state, self.model)  # fmt: skip
        else:
            self.outbox.append(rollout_update(champion, done))
            self._flush()
        return PlanEnd(plan, decision, done)

    def _flush(self) -> None:
        """Announce what waits, oldest first; a failure is retried on the next tick."""
        if self.announcer is None:
            self.outbox.clear()
            return
        while self.outbox:
            update = self.outbox[0]
            try:
                self.announcer.announce(update)
            except DeliveryError as e:
                log.error("rollout announcement not delivered (retrying): %s", e)
                return
            self.announced.append(self.outbox.pop(0))
            log.info("rollout %s %s: announced", update.plan.get("plan_id"),
                     update.plan.get("state"))  # fmt: skip

    # -- the loop ------------------------------------------------------------------------
    def run(
        self,
        stop: threading.Event | None = None,
        *,
        deadline_s: float | None = None,
        max_plans: int | None = None,
    ) -> list[PlanEnd]:
        """Tick every ``decide_every_s`` and read labels in between, until ``stop``.

        Returns the plans that stopped running meanwhile (``max_plans``: stop
        after that many; ``deadline_s``: after that long).
        """
        stop = stop or threading.Event()
        until = math.inf if deadline_s is None else self.clock() + deadline_s
        ended: list[PlanEnd] = []
        next_tick = self.clock()
        while not stop.is_set() and self.clock() < until:
            if self.clock() >= next_tick:
                next_tick = self.clock() + self.decide_every_s
                end = self.tick()
                if end is not None:
                    ended.append(end)
                    if max_plans is not None and len(ended) >= max_plans:
                        break
            budget = min(0.5, max(0.0, min(next_tick, until) - self.clock()))
            if self.source is not None:
                self.pump(budget)
            else:
                stop.wait(budget)
        return ended

    def close(self) -> None:
        self._drop()
