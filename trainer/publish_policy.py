"""How a version that passed the gate is published: champion at once, or a rollout.

``publish_mode`` "champion" moves the champion alias (all traffic at once).
"shadow" and "canary" leave the champion in place and start a rollout plan of
the new version against it; the rollout watcher (``loopline run rollout``)
and serving's policy then promote or abort it. With no champion yet, or a
forced publication, there is nothing to roll out against: the version becomes
champion directly.

>>> policy = PublishPolicy(mode="canary", canary_share=0.2)
>>> plan = policy.plan_for("fraud", candidate="3", champion="2", plan_id="p", created_ms=0)
>>> (plan.mode, plan.canary_share, plan.candidate_version, plan.champion_version)
('canary', 0.2, '3', '2')
>>> policy.plan_for("fraud", candidate="1", champion="") is None  # no champion yet
True
>>> policy.plan_for("fraud", candidate="3", champion="2", force=True) is None
True
>>> PublishPolicy().plan_for("fraud", candidate="3", champion="2") is None
True
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from loopline.contracts.errors import ConfigError, ModelError
from loopline.contracts.schemas import ModelUpdate
from loopline.contracts.settings import RolloutSettings
from loopline.registry.directory import ModelVersion
from loopline.rollout.plan import RolloutPlan
from loopline.trainer.kafka_io import model_update

PUBLISH_MODES = ("champion", "shadow", "canary")


@dataclass(frozen=True)
class PublishPolicy:
    """Where an accepted challenger goes: ``mode`` and the rollout shares."""

    mode: str = "champion"
    canary_share: float = 0.1
    shadow_share: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in PUBLISH_MODES:
            raise ConfigError(f"publish mode must be one of {PUBLISH_MODES}, not {self.mode!r}")
        for name in ("canary_share", "shadow_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"publish {name} must be within [0, 1]")

    @staticmethod
    def from_settings(rollout: RolloutSettings, mode: str | None = None) -> PublishPolicy:
        """The policy of the ``rollout`` settings section, ``mode`` overriding its publish_mode.

        >>> PublishPolicy.from_settings(RolloutSettings(), mode="shadow").mode
        'shadow'
        """
        return PublishPolicy(
            mode=mode or rollout.publish_mode,
            canary_share=rollout.canary_share,
            shadow_share=rollout.shadow_share,
        )

    def plan_for(
        self,
        model: str,
        *,
        candidate: str,
        champion: str,
        force: bool = False,
        plan_id: str = "",
        created_ms: int | None = None,
    ) -> RolloutPlan | None:
        """The rollout to start for accepted ``candidate``, or None: make it champion now."""
        if self.mode == "champion" or force or not champion or champion == candidate:
            return None
        return RolloutPlan.start(
            model,
            candidate=candidate,
            champion=champion,
            mode=self.mode,
            canary_share=self.canary_share if self.mode == "canary" else 0.0,
            shadow_share=self.shadow_share if self.mode == "shadow" else 1.0,
            plan_id=plan_id,
            created_ms=created_ms,
        )


@runtime_checkable
class RolloutRegistry(Protocol):
    """What publishing as a rollout needs from a registry beyond ``ModelRegistry``."""

    def rollout(self, model: str) -> RolloutPlan | None: ...
    def start_rollout(self, plan: RolloutPlan) -> None: ...
    def finish_rollout(
        self, model: str, plan_id: str, state: str, reason: str
    ) -> RolloutPlan | None: ...


def rollout_update(champion: ModelVersion, plan: RolloutPlan) -> ModelUpdate:
    """The model-updates record for a rollout change.

    It names the champion of its moment (the topic is compacted by model name
    and carries a model's current state) and holds the plan.
    """
    return model_update(champion, "champion", "rollout", plan)


class Announcer(Protocol):
    """Tells servers about a model change (``KafkaAnnouncer``: the model-updates topic)."""

    def announce(self, update: ModelUpdate) -> None: ...


def share_text(plan: RolloutPlan) -> str:
    """How much traffic the candidate sees, in words.

    >>> share_text(RolloutPlan("m", "2", "1", mode="canary", canary_share=0.1, plan_id="p"))
    '10.0% of entities answered by the candidate'
    """
    if plan.mode == "canary":
        return f"{plan.canary_share:.1%} of entities answered by the candidate"
    return f"{plan.shadow_share:.1%} of requests also scored by the candidate"


def supersede(reg: RolloutRegistry, model: str, version: str) -> list[RolloutPlan]:
    """End a running rollout as aborted: a newer version replaces its comparison."""
    current = reg.rollout(model)
    if current is None or not current.running:
        return []
    done = reg.finish_rollout(model, current.plan_id, "aborted", f"superseded by v{version}")
    return [] if done is None else [done]  # None: it ended meanwhile anyway


def start_rollout(reg: RolloutRegistry, plan: RolloutPlan) -> list[RolloutPlan]:
    """Record ``plan``, superseding a running one; returns the plans it ended."""
    ended: list[RolloutPlan] = []
    for _ in range(3):
        ended += supersede(reg, plan.model, plan.candidate_version)
        try:
            reg.start_rollout(plan)
            return ended
        except ModelError:
            current = reg.rollout(plan.model)
            if current is None or not current.running:
                raise
            # Another process started a plan between our abort and start: again.
    raise ModelError(
        f"{plan.model}: could not start the rollout of v{plan.candidate_version}: "
        "other rollouts keep starting"
    )


def utc_text(ms: int) -> str:
    """A plan's epoch-ms time as people read it.

    >>> utc_text(1700000000000)
    '2023-11-14 22:13:20 UTC'
    """
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
