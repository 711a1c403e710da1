"""Where an accepted version goes, and who hears about it.

:class:`PublishPolicy` decides: champion at once, or a shadow / canary
rollout against the champion (which stays). Either way a rollout still
running is ended first (aborted, "superseded by v<N>"): its comparison no
longer holds once a newer version is published. Every change is announced,
acknowledged by the broker; a failed announcement raises with what the
registry already holds, since servers polling it still pick the change up.
"""

from __future__ import annotations

from dataclasses import dataclass

from loopline.contracts.errors import DeliveryError, ModelError
from loopline.registry.directory import ModelRegistry, ModelVersion
from loopline.rollout.plan import RolloutPlan
from loopline.trainer.kafka_io import model_update
from loopline.trainer.progress import Progress
from loopline.trainer.publish_policy import (
    Announcer,
    PublishPolicy,
    RolloutRegistry,
    rollout_update,
    share_text,
    start_rollout,
    supersede,
)

CHAMPION = "champion"


@dataclass(frozen=True)
class Published:
    """Where an accepted version went (nothing, for a rejected one)."""

    published_as: str = ""
    plan_id: str = ""
    superseded: tuple[str, ...] = ()
    announced: bool = False
    note: str = ""


class Placement:
    """Makes an accepted version champion, or starts its rollout; announces either."""

    def __init__(
        self,
        registry: ModelRegistry,
        model_name: str,
        publish: PublishPolicy,
        announcer: Announcer | None,
        progress: Progress,
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        self.publish = publish
        self.announcer = announcer
        self.progress = progress

    def place(self, mv: ModelVersion, *, force: bool) -> Published:
        """Make ``mv`` champion, or start its rollout against the champion; announce."""
        version = mv.manifest.version
        current = self.registry.resolve(self.model_name, CHAMPION)
        plan = self.publish.plan_for(
            self.model_name,
            candidate=version,
            champion=current.manifest.version if current else "",
            force=force,
        )
        if plan is None:
            superseded = self._supersede(version)
            self.registry.set_alias(self.model_name, CHAMPION, version)
            self._announce_rollouts(superseded)
            announced = self._announce(mv)
            note = _superseded_note(superseded)
            return Published("champion", "", tuple(p.plan_id for p in superseded), announced, note)
        superseded = self._start_rollout(plan)
        announced = self._announce_rollouts([*superseded, plan])
        note = (
            f"; published as a {plan.mode} rollout ({share_text(plan)}): plan {plan.plan_id} "
            f"against champion v{plan.champion_version}, which stays" + _superseded_note(superseded)
        )
        self.progress.info(f"rollout {plan.plan_id} started: v{version} in {plan.mode}")
        ended = tuple(p.plan_id for p in superseded)
        return Published(plan.mode, plan.plan_id, ended, announced, note)

    def stranded(self, mv: ModelVersion) -> bool:
        """True when ``mv`` passed the gate but a crash cut its placement short.

        That is: accepted (status ``candidate``), the newest version, and never
        champion nor a rollout's candidate. An older unplaced version stays
        where it is: a newer one has replaced its comparison.
        """
        model, version = self.model_name, mv.manifest.version
        if mv.manifest.status != "candidate":
            return False
        newest = max(int(v.manifest.version) for v in self.registry.versions(model))
        if int(version) != newest or version in self.registry.alias_history(model, CHAMPION):
            return False
        history = getattr(self.registry, "rollout_history", None)
        plans = history(model) if history is not None else []
        return all(p.candidate_version != version for p in plans)

    def _rollouts(self) -> RolloutRegistry | None:
        return self.registry if isinstance(self.registry, RolloutRegistry) else None

    def _supersede(self, version: str) -> list[RolloutPlan]:
        reg = self._rollouts()
        return [] if reg is None else supersede(reg, self.model_name, version)

    def _start_rollout(self, plan: RolloutPlan) -> list[RolloutPlan]:
        reg = self._rollouts()
        assert reg is not None  # the Trainer refuses a rollout mode without one
        return start_rollout(reg, plan)

    def _announce(self, mv: ModelVersion) -> bool:
        if self.announcer is None:
            return False
        try:
            self.announcer.announce(model_update(mv, CHAMPION, "publish"))
        except DeliveryError as e:
            v = mv.manifest.version
            raise DeliveryError(
                f"v{v} is champion in the registry, but announcing it failed ({e}); servers "
                f"polling the registry still pick it up; re-announce with "
                f"`loopline models promote {v}`"
            ) from e
        return True

    def _announce_rollouts(self, plans: list[RolloutPlan]) -> bool:
        if self.announcer is None or not plans:
            return False
        champion = self.registry.resolve(self.model_name, CHAMPION)
        if champion is None:
            raise ModelError(f"{self.model_name}: no champion to announce the rollout with")
        for plan in plans:
            try:
                self.announcer.announce(rollout_update(champion, plan))
            except DeliveryError as e:
                raise DeliveryError(
                    f"rollout {plan.plan_id} of v{plan.candidate_version} is {plan.state} in "
                    f"the registry, but announcing it failed ({e}); servers following the "
                    f"registry still pick it up"
                ) from e
        return True


def _superseded_note(plans: list[RolloutPlan]) -> str:
    return "".join(
        f"; rollout {p.plan_id} of v{p.candidate_version} aborted ({p.reason})" for p in plans
    )
