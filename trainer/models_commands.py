"""``loopline models list | show | promote | rollback``: the registry by hand."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from loopline.contracts.settings import Settings
from loopline.featurerepo.loader import model_of
from loopline.registry.backend import RegistryBackend
from loopline.trainer.command_support import handler, lookup, new_announcer, open_registry


def register_models(subparsers: Any) -> None:
    p = subparsers.add_parser("models", help="list, inspect, promote and roll back model versions")
    sub = p.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    ls = sub.add_parser("list", help="versions with status, aliases and metrics")
    ls.add_argument("--model", help="model name (default: every model)")
    ls.set_defaults(func=handler(_models_list))
    show = sub.add_parser("show", help="one version's manifest")
    show.add_argument("version", nargs="?", help="version or alias (default: champion)")
    show.add_argument("--model")
    show.add_argument("--json", action="store_true", help="the raw manifest")
    show.set_defaults(func=handler(_models_show))
    promote = sub.add_parser("promote", help="point an alias (champion) at a version")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion")
    promote.add_argument("--model")
    promote.add_argument("--no-announce", action="store_true")
    promote.set_defaults(func=handler(_models_promote))
    rollback = sub.add_parser("rollback", help="move an alias back to its previous version")
    rollback.add_argument("--alias", default="champion")
    rollback.add_argument("--model")
    rollback.add_argument("--no-announce", action="store_true")
    rollback.set_defaults(func=handler(_models_rollback))


def _models_list(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from loopline.trainer.report import versions_table

    reg = open_registry(settings)
    models = [args.model] if args.model else reg.models()
    if not models:
        console.print(f"no models in {reg.where()}")
        return 0
    for model in models:
        console.print(versions_table(model, reg.versions(model), reg.aliases(model), console.width))
    return 0


def _models_show(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from loopline.trainer.report import version_detail

    reg = open_registry(settings)
    model = args.model or model_of(settings).name
    mv = lookup(reg, model, args.version or "champion")
    if args.json:
        print(mv.manifest.to_json())
    else:
        console.print(version_detail(mv, reg.aliases(model)))
    return 0


def _models_promote(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    reg = open_registry(settings)
    model = args.model or model_of(settings).name
    mv = lookup(reg, model, args.version)
    before = reg.aliases(model).get(args.alias)
    if mv.manifest.status == "rejected":
        console.print(
            f"[yellow]note:[/yellow] the gate rejected v{mv.manifest.version}: "
            f"{mv.manifest.decision}"
        )
    reg.set_alias(model, args.alias, mv.manifest.version)
    console.print(f"{model} {args.alias}: v{before or '-'} -> v{mv.manifest.version}")
    return _announce_alias(args, settings, console, reg=reg, model=model, action="promote")


def _models_rollback(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    reg = open_registry(settings)
    model = args.model or model_of(settings).name
    before = reg.aliases(model).get(args.alias)
    version = reg.rollback(model, args.alias)
    console.print(f"{model} {args.alias}: v{before} -> v{version} (rolled back)")
    return _announce_alias(args, settings, console, reg=reg, model=model, action="rollback")


def _announce_alias(
    args: argparse.Namespace,
    settings: Settings,
    console: Console,
    *,
    reg: RegistryBackend,
    model: str,
    action: str,
) -> int:
    from loopline.trainer.kafka_io import model_update

    # The model-updates topic is compacted by model name: it carries the champion only.
    if args.alias != "champion" or args.no_announce:
        return 0
    mv = reg.resolve(model, args.alias)
    assert mv is not None
    announcer = new_announcer(settings)
    try:
        announcer.announce(model_update(mv, args.alias, action))
    finally:
        announcer.close()
    console.print(f"announced on {announcer.topic}")
    return 0
