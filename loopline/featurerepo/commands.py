"""``loopline init``, ``loopline plan`` and ``loopline apply``: a feature repo's lifecycle."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from loopline.config.cli import settings_of
from loopline.config.kafka import admin_config
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings
from loopline.featurerepo.loader import builtin_example, project_of
from loopline.featurerepo.plan import Plan, make_plan
from loopline.featurerepo.state import AppliedState

TEMPLATES = ("fraud", "delivery")


def register(subparsers: Any) -> None:
    init = subparsers.add_parser(
        "init", help="scaffold a feature repo from a template", description=_init.__doc__
    )
    init.add_argument("dir", type=Path, help="folder to create (must be empty or absent)")
    init.add_argument(
        "--template",
        choices=TEMPLATES,
        default="fraud",
        help="fraud: binary, one topic, card and merchant; delivery: regression, two topics, "
        "courier and zone (int keys)",
    )
    init.set_defaults(func=_init)
    plan = subparsers.add_parser(
        "plan", help="show what `loopline apply` would change", description=_plan.__doc__
    )
    plan.add_argument("--offline", action="store_true", help="do not ask Kafka which topics exist")
    plan.set_defaults(func=_plan)
    apply = subparsers.add_parser(
        "apply",
        help="validate the repo, create its topics, record its feature-set versions",
        description=_apply.__doc__,
    )
    apply.set_defaults(func=_apply)


def _init(args: argparse.Namespace) -> int:
    """Copy a template repo (loopline.yaml, definitions.py, simulator.py) into DIR."""
    source = builtin_example(args.template)
    if source is None:
        raise ConfigError(
            f"template {args.template!r} ships with Loopline's source checkout (examples/); "
            "clone the repository, or write loopline.yaml and definitions.py by hand"
        )
    target: Path = args.dir
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} is not empty; choose a new folder for the repo")
    shutil.copytree(
        source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    print(f"created feature repo {target} from template {args.template}:")
    for path in sorted(target.iterdir()):
        print(f"  {path.name}")
    print(f"next: edit {target}/definitions.py, then `loopline plan --repo {target}`")
    return 0


def _plan(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Compare the repo's definitions with the applied feature sets and the broker's topics."""
    s = settings_of(args, settings)
    plan = _make(s, offline=args.offline)
    print(plan.describe())
    return 0


def _apply(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Validate the repo, create missing topics, and record each model's feature-set version."""
    from loopline.stack import ensure_topics

    s = settings_of(args, settings)
    created = ensure_topics(s)
    project = project_of(s)
    state = AppliedState(s.registry.path)
    now_ms = int(time.time() * 1000)
    for m in project.models:
        fs = project.feature_set(m.name)
        v = state.record(m.name, fs.fingerprint, fs.describe(), now_ms)
        print(f"model {m.name}: feature set v{v.version} ({fs.fingerprint[:12]}) applied")
    print(f"topics created: {', '.join(created) if created else 'none (all existed)'}")
    print(f"applied state: {state.path}")
    return 0


def _make(s: Settings, *, offline: bool) -> Plan:
    project = project_of(s)
    state = AppliedState(s.registry.path)
    applied = {m.name: state.versions(m.name) for m in project.models}
    topics = None if offline else _existing_topics(s)
    return make_plan(project, applied, topics, s.kafka.topic_prefix)


def _existing_topics(s: Settings) -> set[str] | None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_config(s.kafka))
    try:
        return set(admin.list_topics(timeout=3).topics)
    except KafkaException:  # broker down: plan says the topics are unknown
        return None
