"""Small helpers every component's ``commands.py`` shares with the CLI.

Components add their subcommands to the ``loopline`` parser through
``register(subparsers)``; long-lived services go under one shared ``run``
group. Handlers receive the parsed arguments, with the :class:`Settings`
built once at the edge in ``args.settings``.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="loopline")
>>> sub = parser.add_subparsers(dest="command")
>>> run = service_group(sub)
>>> run is service_group(sub)
True
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings


def service_group(subparsers: Any, name: str = "run") -> Any:
    """The sub-subparsers of ``loopline run`` (created on first use, then shared)."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help="run one Loopline service")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="SERVICE")


def flow_run_options(parser: argparse.ArgumentParser) -> None:
    """``--no-metrics`` and ``--drain IDLE_S``, which every dataflow service takes."""
    parser.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    parser.add_argument(
        "--drain",
        type=float,
        metavar="IDLE_S",
        help="exit once every partition is caught up and idle this long (backfills, tests)",
    )


def settings_of(args: argparse.Namespace, settings: Settings | None = None) -> Settings:
    """The settings a handler runs with: given explicitly, or set by the CLI."""
    settings = settings or getattr(args, "settings", None)
    if settings is None:
        raise ConfigError("no settings: the CLI must set args.settings")
    return settings


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings of a command: its feature repo, then --config, then the environment."""
    from loopline.config.loader import load_settings
    from loopline.featurerepo.loader import find_repo, read_config_document

    explicit = getattr(args, "repo", None)
    if explicit is None and args.config:
        # A run's config file (the demo writes one) may name the repo itself.
        named = read_config_document(Path(args.config)).get("project", {})
        explicit = named.get("repo") if isinstance(named, dict) else None
    return load_settings(args.config, repo=find_repo(explicit))
