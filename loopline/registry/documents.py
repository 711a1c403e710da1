"""The registry's small documents and their pure changes: aliases (with history), rollouts.

Every backend keeps, per model, which version each alias names and the
versions it named before (for ``rollback``), and the model's rollout plan
with every plan record written. The backends differ only in how they read
and write these documents atomically (a file lock, a conditional put, MLflow
tags); the changes themselves live here, once, with no I/O.

>>> doc = empty_aliases()
>>> move_alias(doc, "champion", "1"), move_alias(doc, "champion", "2")
(True, True)
>>> roll_back(doc, "fraud", "champion"), doc["aliases"]
('1', {'champion': '1'})
"""

from __future__ import annotations

from typing import Any

from loopline.contracts.errors import ModelError, ModelNotFoundError
from loopline.rollout.plan import CANDIDATE, CHAMPION, RolloutPlan

Doc = dict[str, Any]


def empty_aliases() -> Doc:
    return {"aliases": {}, "history": {}}


def empty_rollout() -> Doc:
    return {"plan": None, "history": []}


def aliases_doc(data: Any) -> Doc:
    """An alias document as read (None: none yet), with its keys filled in."""
    doc = dict(data) if isinstance(data, dict) else empty_aliases()
    doc.setdefault("aliases", {})
    doc.setdefault("history", {})
    return doc


def rollout_doc(data: Any) -> Doc:
    """A rollout document as read (None: none yet), with its keys filled in."""
    doc = dict(data) if isinstance(data, dict) else empty_rollout()
    doc.setdefault("plan", None)
    doc.setdefault("history", [])
    return doc


def move_alias(doc: Doc, alias: str, version: str) -> bool:
    """Point ``alias`` at ``version``, remembering it; False when it already did."""
    if doc["aliases"].get(alias) == version:
        return False
    doc["aliases"][alias] = version
    doc["history"].setdefault(alias, []).append(version)
    return True


def drop_alias(doc: Doc, alias: str) -> bool:
    return doc["aliases"].pop(alias, None) is not None


def roll_back(doc: Doc, model: str, alias: str) -> str:
    """Point ``alias`` back at the version it named before; returns that version."""
    history = doc["history"].get(alias, [])
    if len(history) < 2:
        raise ModelNotFoundError(f"{model}: alias {alias!r} has no earlier version")
    history.pop()
    doc["aliases"][alias] = history[-1]
    return history[-1]


def apply_plan(aliases: Doc, rollouts: Doc, plan: RolloutPlan) -> None:
    """Record ``plan`` and move the aliases it implies.

    Running: ``candidate`` names the candidate. Promoted: ``champion`` names
    it and ``candidate`` is dropped. Aborted: ``candidate`` is dropped.
    """
    if plan.state == "running":
        move_alias(aliases, CANDIDATE, plan.candidate_version)
    elif plan.state == "promoted":
        move_alias(aliases, CHAMPION, plan.candidate_version)
        drop_alias(aliases, CANDIDATE)
    else:
        drop_alias(aliases, CANDIDATE)
    rollouts["plan"] = plan.to_dict()
    rollouts["history"].append(plan.to_dict())


def check_none_running(rollouts: Doc, plan: RolloutPlan) -> None:
    """A new plan must be running, and no other may be (ModelError)."""
    if not plan.running:
        raise ModelError(f"{plan.model}: a new rollout must be running, not {plan.state}")
    current = rollouts["plan"]
    if current is not None and current.get("state") == "running":
        raise ModelError(
            f"{plan.model}: rollout {current.get('plan_id')} of "
            f"v{current.get('candidate_version')} is running; promote or abort it first"
        )


def finishing(rollouts: Doc, plan_id: str, state: str, reason: str) -> RolloutPlan | None:
    """The finished plan when ``plan_id`` is still the running plan, else None."""
    current = rollouts["plan"]
    if current is None:
        return None
    plan = RolloutPlan.from_dict(current)
    if not plan.running or plan.plan_id != plan_id:
        return None
    return plan.finished(state, reason)


def current_plan(rollouts: Doc) -> RolloutPlan | None:
    plan = rollouts["plan"]
    return None if plan is None else RolloutPlan.from_dict(plan)


def plan_history(rollouts: Doc) -> list[RolloutPlan]:
    return [RolloutPlan.from_dict(p) for p in rollouts["history"]]


def check_model_name(model: str) -> str:
    """A model name is one path segment (it names a folder or an object prefix)."""
    if not model or "/" in model or "\\" in model or model.startswith("."):
        raise ModelError(f"invalid model name {model!r}")
    return model
