"""What ``loopline apply`` would change, as data: pure, given the project and the state.

>>> from loopline.featurerepo.loader import builtin_example, load_project
>>> project = load_project(builtin_example())
>>> plan = make_plan(project, applied={}, existing_topics={"loopline.events"}, prefix="loopline.")
>>> [(c.model, c.action, c.version) for c in plan.models]
[('fraud', 'new', 1)]
>>> plan.topics_to_create
['loopline.outcomes']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loopline.featurecore.project import Project
from loopline.featurerepo.state import AppliedVersion


@dataclass(frozen=True)
class ModelChange:
    """One model's feature set against what was applied."""

    model: str
    action: str  # "new" | "changed" | "unchanged"
    version: int
    fingerprint: str
    views_added: list[str] = field(default_factory=list)
    views_removed: list[str] = field(default_factory=list)
    views_changed: list[str] = field(default_factory=list)
    features_added: list[str] = field(default_factory=list)
    features_removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    project: str
    models: list[ModelChange]
    topics_to_create: list[str] | None  # None: Kafka could not be asked

    @property
    def changes(self) -> bool:
        return bool(self.topics_to_create) or any(c.action != "unchanged" for c in self.models)

    def describe(self) -> str:
        lines = [f"project {self.project}:"]
        for c in self.models:
            head = f"  model {c.model}: feature set v{c.version} ({c.fingerprint[:12]}) {c.action}"
            lines.append(head)
            for label, names in (
                ("+ view", c.views_added),
                ("- view", c.views_removed),
                ("~ view", c.views_changed),
                ("+ feature", c.features_added),
                ("- feature", c.features_removed),
            ):
                lines += [f"    {label} {n}" for n in names]
            if c.action == "changed":
                lines.append(
                    "    the new version writes new Redis keys; models trained on the old one "
                    "are refused by serving once this version is current: retrain and promote"
                )
        if self.topics_to_create is None:
            lines.append("  topics: unknown (Kafka not reachable); apply creates what is missing")
        elif self.topics_to_create:
            lines += [f"  + topic {t}" for t in self.topics_to_create]
        else:
            lines.append("  topics: all exist")
        if not self.changes:
            lines.append("  nothing to change")
        return "\n".join(lines)


def make_plan(
    project: Project,
    applied: Mapping[str, list[AppliedVersion]],
    existing_topics: set[str] | None,
    prefix: str,
) -> Plan:
    """Compare the project with the applied versions and the broker's topics."""
    changes = [_model_change(project, m.name, applied.get(m.name, [])) for m in project.models]
    topics = None
    if existing_topics is not None:
        wanted = [prefix + t for t in project.topics()]
        topics = [t for t in wanted if t not in existing_topics]
    return Plan(project.name, changes, topics)


def _model_change(project: Project, model: str, versions: list[AppliedVersion]) -> ModelChange:
    fs = project.feature_set(model)
    now = fs.describe()
    current = versions[-1] if versions else None
    if current is None:
        return ModelChange(model, "new", 1, fs.fingerprint, views_added=_views(now))
    if current.fingerprint == fs.fingerprint:
        return ModelChange(model, "unchanged", current.version, fs.fingerprint)
    before = current.description
    known = [v for v in versions if v.fingerprint == fs.fingerprint]
    number = known[0].version if known else max(v.version for v in versions) + 1
    old_views = {v["entity"]: v for v in before.get("views", [])}
    new_views = {v["entity"]: v for v in now.get("views", [])}
    old_features = before.get("model_features", [])
    return ModelChange(
        model,
        "changed",
        number,
        fs.fingerprint,
        views_added=sorted(set(new_views) - set(old_views)),
        views_removed=sorted(set(old_views) - set(new_views)),
        views_changed=sorted(
            n for n in set(new_views) & set(old_views) if new_views[n] != old_views[n]
        ),
        features_added=[f for f in now["model_features"] if f not in old_features],
        features_removed=[f for f in old_features if f not in now["model_features"]],
    )


def _views(description: dict[str, Any]) -> list[str]:
    return [v["entity"] for v in description.get("views", [])]
