"""``loopline models rollout start | status | watch | promote | abort``.

A rollout runs a candidate version next to the champion (shadow or canary)
under a plan held in the registry (``<model>/rollout.json``, with the
``candidate`` alias moved together). Every change is announced on the
model-updates topic as a :class:`ModelUpdate` with action ``rollout``: the
record names the champion (the topic is compacted by model name and carries a
model's current state) and holds the plan in ``plan``.

Register after :mod:`loopline.trainer.commands`, which creates ``models``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from loopline.contracts.errors import ConfigError, DeliveryError, ModelNotFoundError
from loopline.contracts.settings import Settings
from loopline.contracts.tasks import BINARY, TASKS
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.registry.backend import RolloutBackend
from loopline.rollout.plan import MODES, RolloutPlan
from loopline.trainer.command_support import handler as _handler
from loopline.trainer.command_support import lookup as _lookup
from loopline.trainer.command_support import new_announcer as _announcer
from loopline.trainer.command_support import open_rollout_registry as _registry
from loopline.trainer.publish_policy import rollout_update, share_text, utc_text
from loopline.trainer.rollout.label_source import kafka_label_sources
from loopline.trainer.rollout.watch_loop import RolloutWatchConfig
from loopline.trainer.rollout.watcher import RolloutWatcher

DEFAULT_SHARE = {"shadow": 1.0, "canary": 0.1}


def register(subparsers: Any) -> None:
    """Add the ``rollout`` group under the existing ``models`` command."""
    models = subparsers.choices.get("models")
    if models is None:
        raise ConfigError("register loopline.trainer.commands (the `models` group) first")
    group = next((a for a in models._actions if isinstance(a, argparse._SubParsersAction)), None)
    if group is None:
        raise ConfigError("the `models` command has no subcommands to add `rollout` to")
    p = group.add_parser(
        "rollout",
        help="run a candidate version in shadow or canary, then promote or abort it",
        description="A rollout plan in the registry tells serving how a candidate runs next "
        "to the champion: shadow (the candidate scores a share of requests off the response "
        "path) or canary (the candidate answers a sticky share of entities).",
    )
    sub = p.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")

    start = sub.add_parser("start", help="start a rollout of VERSION against the champion")
    start.add_argument("version", help="candidate version (or an alias naming it)")
    start.add_argument("--mode", choices=MODES, default="shadow")
    start.add_argument(
        "--share",
        type=float,
        help="canary: share of entities the candidate answers (default 0.1); "
        "shadow: share of requests it also scores (default 1.0)",
    )
    _common(start)
    start.set_defaults(func=_handler(_start))

    status = sub.add_parser("status", help="the current plan, its aliases and history")
    status.add_argument("--model", help="model name (default: the repo's model)")
    status.add_argument("--json", action="store_true", help="the plan record as JSON")
    status.set_defaults(func=_handler(_status))

    promote = sub.add_parser("promote", help="make the candidate the champion; end the plan")
    promote.add_argument("--reason", default="promoted by hand")
    _common(promote)
    promote.set_defaults(func=_handler(_promote))

    watch = sub.add_parser(
        "watch",
        help="follow the labeled log and promote or abort the running plan by the policy",
        description="Read the labeled topic from just before the plan started, count each "
        "example scored after the start by the candidate or the champion version for its arm, "
        "and end the plan once the policy decides: promote after --min-labels labels per arm "
        "when the candidate is not worse by the margins, abort when it is. Error-rate and "
        "latency aborts need serving's per-arm calls and happen there. `loopline run "
        "rollout` does the same for every plan, as a service.",
    )
    watch.add_argument(
        "--min-labels", type=int, help="labels per arm first (default rollout.min_labels)"
    )
    watch.add_argument("--auc-margin", type=float, help="default rollout.auc_margin")
    watch.add_argument("--log-loss-margin", type=float, help="default rollout.log_loss_margin")
    watch.add_argument("--rmse-margin", type=float, help="default rollout.rmse_margin")
    watch.add_argument("--mae-margin", type=float, help="default rollout.mae_margin")
    watch.add_argument(
        "--task",
        choices=TASKS,
        default=BINARY,
        help="what the labels mean: binary (AUC, log loss) or regression (RMSE, MAE)",
    )
    watch.add_argument("--decide-every-s", type=float, help="default rollout.decide_every_s")
    watch.add_argument("--max-seconds", type=float, help="give up (plan still running) after this")
    _common(watch)
    watch.set_defaults(func=_handler(_watch))

    abort = sub.add_parser("abort", help="end the plan; the champion stays")
    abort.add_argument("--reason", required=True, help="why (kept in the plan record)")
    _common(abort)
    abort.set_defaults(func=_handler(_abort))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (default: the repo's model)")
    p.add_argument("--no-announce", action="store_true", help="do not announce on Kafka")


def _start(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    reg = _registry(settings)
    model = _model(args, settings)
    champion = reg.resolve(model, "champion")
    if champion is None:
        raise ModelNotFoundError(f"{model}: no champion to roll out against (promote one first)")
    candidate = _lookup(reg, model, args.version)
    version = candidate.manifest.version
    if version == champion.manifest.version:
        raise ConfigError(f"{model}: v{version} is already the champion")
    if candidate.manifest.fingerprint != champion.manifest.fingerprint:
        console.print(
            f"[yellow]note:[/yellow] v{version} was trained on other features than the "
            f"champion (fingerprint {candidate.manifest.fingerprint[:12]}...)"
        )
    if candidate.manifest.status == "rejected":
        console.print(
            f"[yellow]note:[/yellow] the gate rejected v{version}: {candidate.manifest.decision}"
        )
    share = DEFAULT_SHARE[args.mode] if args.share is None else args.share
    plan = RolloutPlan.start(
        model,
        candidate=version,
        champion=champion.manifest.version,
        mode=args.mode,
        canary_share=share if args.mode == "canary" else 0.0,
        shadow_share=share if args.mode == "shadow" else 1.0,
    )
    reg.start_rollout(plan)  # refused while another plan runs
    console.print(
        f"{model}: rollout [bold]{plan.plan_id}[/bold] started: v{version} in {plan.mode} "
        f"({share_text(plan)}) against champion v{plan.champion_version}"
    )
    return _announce(args, settings, console, reg, plan)


def _status(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    reg = _registry(settings)
    model = _model(args, settings)
    plan = reg.rollout(model)
    if args.json:
        history = [p.to_dict() for p in reg.rollout_history(model)]
        record = {"plan": plan.to_dict() if plan else None, "history": history}
        print(json.dumps({**record, "aliases": reg.aliases(model)}, indent=2))
        return 0
    if plan is None:
        console.print(f"{model}: no rollout")
        return 0
    console.print(plan_table(plan, reg.aliases(model)))
    return 0


def _promote(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    return _end_by_hand(args, settings, console, "promoted")


def _abort(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    return _end_by_hand(args, settings, console, "aborted")


def _end_by_hand(args: argparse.Namespace, settings: Settings, console: Console, state: str) -> int:
    """End the running plan as ``state`` ("promoted" or "aborted") and announce it."""
    reg = _registry(settings)
    plan, done = _finish(reg, _model(args, settings), state, args.reason)
    if state == "promoted":
        console.print(
            f"{plan.model} champion: v{plan.champion_version} -> v{plan.candidate_version} "
            f"(rollout {plan.plan_id} promoted: {args.reason})"
        )
    else:
        champion = reg.aliases(plan.model).get("champion", "-")
        console.print(
            f"{plan.model}: rollout {plan.plan_id} of v{plan.candidate_version} aborted "
            f"({args.reason}); champion stays v{champion}"
        )
    return _announce(args, settings, console, reg, done)


def _watch(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    reg = _registry(settings)
    model = _model(args, settings)
    plan = reg.rollout(model)
    if plan is None or not plan.running:
        raise ConfigError(f"{model}: no running rollout to watch")
    overrides = {
        name: value
        for name, value in (
            ("min_labels", args.min_labels),
            ("auc_margin", args.auc_margin),
            ("log_loss_margin", args.log_loss_margin),
            ("rmse_margin", getattr(args, "rmse_margin", None)),
            ("mae_margin", getattr(args, "mae_margin", None)),
            ("decide_every_s", args.decide_every_s),
        )
        if value is not None
    }
    rollout = dataclasses.replace(settings.rollout, **overrides)
    cfg = RolloutWatchConfig(model, rollout, task=getattr(args, "task", None) or BINARY)
    announcer = None if args.no_announce else _announcer(settings)
    # The same watcher as `loopline run rollout`, pinned to this one plan.
    watcher = RolloutWatcher(
        reg,
        model,
        open_source=kafka_label_sources(settings),
        new_policy=cfg.new_policy,
        announcer=announcer,
        decide_every_s=rollout.decide_every_s,
        plan_id=plan.plan_id,
    )
    console.print(
        f"{model}: watching rollout {plan.plan_id} (v{plan.candidate_version} vs "
        f"v{plan.champion_version}, {rollout.min_labels} labels per arm) on "
        f"{Topics(settings.kafka.topic_prefix).labeled}"
    )
    try:
        watcher.follow(plan)
        ended = watcher.run(deadline_s=args.max_seconds, max_plans=1)
        if watcher.outbox:
            raise DeliveryError(
                f"{model}: rollout {plan.plan_id} ended in the registry, but announcing it "
                "failed; servers following the registry still pick it up"
            )
    finally:
        watcher.close()
        if announcer is not None:
            announcer.close()
    if not ended:
        last = watcher.last_decision
        console.print(f"{model}: no decision ({last.reason if last else 'no evidence yet'})")
        return 0
    end = ended[0]
    if end.decision is None:
        console.print(f"{model}: no decision (the plan ended elsewhere)")
        return 0
    if end.finished is None:
        console.print(f"{model}: rollout {plan.plan_id} was ended meanwhile; nothing to do")
        return 0
    done = end.finished
    colour = "green" if done.state == "promoted" else "red"
    console.print(
        f"{model}: rollout {plan.plan_id} [{colour}]{done.state}[/{colour}]: {done.reason}"
    )
    if announcer is not None:
        console.print(f"announced on {announcer.topic}")
    return 0


def _model(args: argparse.Namespace, settings: Settings) -> str:
    return args.model or model_of(settings).name


def _finish(
    reg: RolloutBackend, model: str, state: str, reason: str
) -> tuple[RolloutPlan, RolloutPlan]:
    """End the running plan; compare-and-set, so a policy deciding meanwhile wins cleanly."""
    plan = reg.rollout(model)
    done = None if plan is None else reg.finish_rollout(model, plan.plan_id, state, reason)
    if plan is None or done is None:
        last = reg.rollout(model)
        status = "none" if last is None else f"{last.plan_id} {last.state}"
        raise ConfigError(f"{model}: no running rollout (last: {status})")
    return plan, done


def _announce(
    args: argparse.Namespace,
    settings: Settings,
    console: Console,
    reg: RolloutBackend,
    plan: RolloutPlan,
) -> int:
    if args.no_announce:
        return 0
    champion = reg.resolve(plan.model, "champion")
    if champion is None:
        raise ModelNotFoundError(f"{plan.model}: no champion to announce")
    update = rollout_update(champion, plan)
    announcer = _announcer(settings)
    try:
        announcer.announce(update)  # waits for the broker's acknowledgement
    finally:
        announcer.close()
    console.print(f"announced on {announcer.topic}")
    return 0


def plan_table(plan: RolloutPlan, aliases: dict[str, str]) -> Table:
    """The plan as a two-column table (what ``status`` prints)."""
    colour = {"running": "cyan", "promoted": "green", "aborted": "red"}[plan.state]
    table = Table(title=f"{plan.model}: rollout {plan.plan_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("state", f"[{colour}]{plan.state}[/{colour}]")
    table.add_row("mode", f"{plan.mode}: {share_text(plan)}")
    table.add_row("candidate", f"v{plan.candidate_version}")
    table.add_row("champion at start", f"v{plan.champion_version}")
    table.add_row("aliases now", ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())))
    table.add_row("started", utc_text(plan.created_ms))
    if not plan.running:
        table.add_row("ended", utc_text(plan.updated_ms))
        table.add_row("reason", plan.reason or "-")
    return table
