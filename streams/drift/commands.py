"""The drift CLI subcommands: ``loopline drift tail`` and ``loopline run drift``.

The lead's CLI calls :func:`register` with its subparsers; each handler is
stored as ``func`` and called as ``func(args)`` or ``func(args, settings)``,
with the :class:`Settings` built at the edge (``args.settings`` otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

from loopline.config.cli import service_group, settings_of
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.streams.common.local_cluster import (
    refuse_overrides,
    run_local_cluster,
    wants_local_cluster,
)
from loopline.streams.common.run_options import add_cluster_arguments, run_options_of


def register(subparsers: Any) -> None:
    """Add ``drift tail`` and ``run drift`` to a subparsers object (``run`` is shared)."""
    _register_tail(subparsers)
    _register_run(subparsers)


def _register_tail(subparsers: Any) -> None:
    drift = subparsers.choices.get("drift") or subparsers.add_parser(
        "drift", help="drift detection: watch alarms"
    )
    commands = drift.add_subparsers(dest="drift_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "tail",
        help="print drift events as they arrive, one line each",
        description="Print confirmed drift alarms from the drift topic: time, severity, kind, "
        "feature, statistic before -> after, model version, detector and evidence.",
    )
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the oldest event")
    start.add_argument(
        "--since-minutes", type=float, metavar="M", help="start with events of the last M minutes"
    )
    p.add_argument(
        "--min-severity",
        choices=("info", "warning", "critical"),
        default="info",
        help="hide events below this severity",
    )
    p.add_argument("--max-events", type=int, help="exit after printing this many")
    p.add_argument("--timeout-s", type=float, help="exit after this many seconds")
    p.set_defaults(func=run_tail)


def run_tail(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from loopline.streams.drift.tail import HEADER, tail

    settings = settings_of(args, settings)
    topic = Topics(settings.kafka.topic_prefix).drift
    since_ms = None
    if args.since_minutes is not None:
        since_ms = int((time.time() - args.since_minutes * 60) * 1000)
    where = "from the beginning" if args.from_beginning else "new events"
    if since_ms is not None:
        where = f"since {args.since_minutes:g} min ago"
    print(f"# {topic} ({where}; Ctrl-C to stop)", file=sys.stderr, flush=True)
    print(HEADER, flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail ends
        tail(
            settings.kafka,
            topic,
            sys.stdout,
            err=sys.stderr,
            from_beginning=args.from_beginning,
            since_ms=since_ms,
            min_severity=args.min_severity,
            max_events=args.max_events,
            timeout_s=args.timeout_s,
        )
    return 0


def _register_run(subparsers: Any) -> None:
    run = service_group(subparsers)
    p = run.add_parser(
        "drift",
        help="run the drift dataflow (predictions + labeled -> drift events)",
        description="Watch the predictions and labeled topics with River detectors and publish "
        "confirmed drift alarms to the drift topic; state survives restarts (recovery). "
        "Across processes each model's detectors live on one worker (routed by model name). "
        "Prometheus metrics on drift.metrics_port (+ process id).",
    )
    add_cluster_arguments(
        p, "drift", no_recovery="keep no snapshots: every start re-reads from streams.start_from"
    )
    # The option's earlier name, still accepted.
    p.add_argument("--drain-idle-s", dest="drain", type=float, help=argparse.SUPPRESS)
    p.set_defaults(func=run_drift_flow)


def run_drift_flow(
    args: argparse.Namespace, settings: Settings | None = None, **overrides: Any
) -> int:
    """``loopline run drift``; ``overrides`` go to the flow's config (``task="regression"``)."""
    from loopline.streams.drift.run import run_drift

    settings = settings_of(args, settings)
    if wants_local_cluster(args):
        refuse_overrides(overrides)
        return run_local_cluster(args, "drift")
    options = run_options_of(args, settings)
    with contextlib.suppress(KeyboardInterrupt):
        run_drift(settings, options, **overrides)
    return 0
