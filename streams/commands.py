"""The streams CLI subcommands: ``loopline run features``, ``run labels`` and ``simulate``.

The lead's CLI calls :func:`register` with its subparsers; each handler is
stored as ``func`` and called as ``func(args)`` or ``func(args, settings)``,
with the :class:`Settings` built at the edge (``args.settings`` otherwise).
``python -m loopline.streams`` offers the same subcommands on their own.
Each flow's own subcommand lives in its ``commands.py`` (``loopline run
drift`` and ``drift tail`` are registered by the CLI from ``drift.commands``).
"""

from __future__ import annotations

from typing import Any

from loopline.streams.features import commands as features_commands
from loopline.streams.labels import commands as labels_commands


def register(subparsers: Any) -> None:
    """Add ``run features``, ``run labels`` and ``simulate`` to a subparsers object."""
    # Generic over feature repos, so simulate lives with the simulation contract.
    from loopline.simulation.commands import register_simulate

    features_commands.register(subparsers)
    labels_commands.register(subparsers)
    register_simulate(subparsers)
