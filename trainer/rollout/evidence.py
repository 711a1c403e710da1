"""The evidence for one running rollout plan: labeled records in, a decision out.

No I/O: the watcher (:mod:`.watcher`) feeds it records it read and asks it to
decide; the per-arm statistics live in :class:`RolloutPolicy`.
"""

from __future__ import annotations

import logging

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import LabeledExample, decode
from loopline.rollout.plan import RolloutPlan, plan_arm
from loopline.rollout.policy import Decision, RolloutPolicy

log = logging.getLogger("loopline.trainer.rollout")


def count_example(policy: RolloutPolicy, plan: RolloutPlan, example: LabeledExample) -> bool:
    """Feed one labeled example to the policy if it belongs to the plan; True when it did.

    >>> plan = RolloutPlan("fraud", "3", "2", plan_id="p", created_ms=0)
    >>> ex = LabeledExample("r", "e", "fraud", "3", "fp", {}, [], 0.9, 1, 5, 6)
    >>> policy = RolloutPolicy()
    >>> count_example(policy, plan, ex), policy.arms["candidate"].labels
    (True, 1)
    """
    if example.model_name != plan.model:
        return False
    arm = plan_arm(plan, example.model_version, example.event_time)
    if arm is None:
        return False
    policy.update_label(arm, example.score, example.label)
    return True


class PlanWatch:
    """The evidence for one running plan, counted record by record.

    >>> from loopline.contracts.schemas import encode
    >>> plan = RolloutPlan("fraud", "3", "2", plan_id="p", created_ms=100)
    >>> watch = PlanWatch(plan, RolloutPolicy(min_labels=1))
    >>> ex = LabeledExample("r", "e", "fraud", "3", "fp", {}, [], 0.9, 1, 150, 160)
    >>> [watch.offer(encode(ex)), watch.offer(b"{not json"), watch.offer(encode(ex)[:-1])]
    [True, False, False]
    >>> watch.counted, watch.ignored, watch.malformed
    (1, 0, 2)
    """

    def __init__(self, plan: RolloutPlan, policy: RolloutPolicy) -> None:
        self.plan = plan
        self.policy = policy
        self.counted = 0
        self.ignored = 0  # another model or version, or scored before the plan
        self.malformed = 0

    def offer(self, raw: bytes) -> bool:
        """One labeled-topic record; True when it counted for an arm."""
        try:
            example = decode(LabeledExample, raw)
        except SchemaError as e:
            self.malformed += 1
            # The first few and then every thousandth: a poisoned topic must not flood the log.
            if self.malformed <= 3 or self.malformed % 1000 == 0:
                log.warning("labeled: skipping a malformed example (%d so far): %s",
                            self.malformed, e)  # fmt: skip
            return False
        if count_example(self.policy, self.plan, example):
            self.counted += 1
            return True
        self.ignored += 1
        return False

    def decide(self) -> Decision:
        return self.policy.decide()
