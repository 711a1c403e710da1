"""``loopline models rollout start | status | promote | abort``.

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
import datetime as dt
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from loopline.contracts.errors import ConfigError, ModelNotFoundError
from loopline.contracts.registry import DirectoryRegistry
from loopline.contracts.rollout import MODES, RolloutPlan
from loopline.contracts.settings import Settings
from loopline.trainer.commands import _announcer, _handler, _lookup, _registry

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
    status.add_argument("--model", help="model name (default: trainer.model_name)")
    status.add_argument("--json", action="store_true", help="the plan record as JSON")
    status.set_defaults(func=_handler(_status))

    promote = sub.add_parser("promote", help="make the candidate the champion; end the plan")
    promote.add_argument("--reason", default="promoted by hand")
    _common(promote)
    promote.set_defaults(func=_handler(_promote))

    abort = sub.add_parser("abort", help="end the plan; the champion stays")
    abort.add_argument("--reason", required=True, help="why (kept in the plan record)")
    _common(abort)
    abort.set_defaults(func=_handler(_abort))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (default: trainer.model_name)")
    p.add_argument("--no-announce", action="store_true", help="do not announce on Kafka")


def _start(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    reg = _registry(settings)
    model = args.model or settings.trainer.model_name
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
        f"({_share_text(plan)}) against champion v{plan.champion_version}"
    )
    return _announce(args, settings, console, reg, plan)


def _status(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    reg = _registry(settings)
    model = args.model or settings.trainer.model_name
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
    reg = _registry(settings)
    plan, done = _finish(reg, args.model or settings.trainer.model_name, "promoted", args.reason)
    console.print(
        f"{plan.model} champion: v{plan.champion_version} -> v{plan.candidate_version} "
        f"(rollout {plan.plan_id} promoted: {args.reason})"
    )
    return _announce(args, settings, console, reg, done)


def _abort(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    reg = _registry(settings)
    plan, done = _finish(reg, args.model or settings.trainer.model_name, "aborted", args.reason)
    champion = reg.aliases(plan.model).get("champion", "-")
    console.print(
        f"{plan.model}: rollout {plan.plan_id} of v{plan.candidate_version} aborted "
        f"({args.reason}); champion stays v{champion}"
    )
    return _announce(args, settings, console, reg, done)


def _finish(
    reg: DirectoryRegistry, model: str, state: str, reason: str
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
    reg: DirectoryRegistry,
    plan: RolloutPlan,
) -> int:
    from loopline.trainer.kafka_io import model_update

    if args.no_announce:
        return 0
    champion = reg.resolve(plan.model, "champion")
    if champion is None:
        raise ModelNotFoundError(f"{plan.model}: no champion to announce")
    update = dataclasses.replace(model_update(champion, "champion", "rollout"), plan=plan.to_dict())
    announcer = _announcer(settings)
    try:
        announcer.announce(update)  # waits for the broker's acknowledgement
    finally:
        announcer.close()
    console.print(f"announced on {announcer.topic}")
    return 0


def _share_text(plan: RolloutPlan) -> str:
    if plan.mode == "canary":
        return f"{plan.canary_share:.1%} of entities answered by the candidate"
    return f"{plan.shadow_share:.1%} of requests also scored by the candidate"


def plan_table(plan: RolloutPlan, aliases: dict[str, str]) -> Table:
    """The plan as a two-column table (what ``status`` prints)."""
    colour = {"running": "cyan", "promoted": "green", "aborted": "red"}[plan.state]
    table = Table(title=f"{plan.model}: rollout {plan.plan_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("state", f"[{colour}]{plan.state}[/{colour}]")
    table.add_row("mode", f"{plan.mode}: {_share_text(plan)}")
    table.add_row("candidate", f"v{plan.candidate_version}")
    table.add_row("champion at start", f"v{plan.champion_version}")
    table.add_row("aliases now", ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())))
    table.add_row("started", _when(plan.created_ms))
    if not plan.running:
        table.add_row("ended", _when(plan.updated_ms))
        table.add_row("reason", plan.reason or "-")
    return table


def _when(ms: int) -> str:
    """UTC time of epoch ms.

    >>> _when(1700000000000)
    '2023-11-14 22:13:20 UTC'
    """
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
