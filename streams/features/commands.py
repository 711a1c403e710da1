"""The features CLI subcommand: ``loopline run features``, one process or a local cluster."""

from __future__ import annotations

import argparse
from typing import Any

from loopline.config.cli import service_group, settings_of
from loopline.contracts.settings import Settings
from loopline.streams.common.local_cluster import run_local_cluster, wants_local_cluster
from loopline.streams.common.run_options import add_cluster_arguments, run_options_of


def register(subparsers: Any) -> None:
    """Add ``run features`` to a subparsers object (``run`` is shared)."""
    p = service_group(subparsers).add_parser(
        "features",
        help="the features dataflow: events topic -> windowed features in Redis",
        description="Consume the events topic, compute the feature set's windowed values per "
        "entity (event time, allowed lateness, dead letters) and keep them in Redis. Recovery "
        "is on: a restart after a crash resumes from the last snapshot with no loss and no "
        "double counting. Prometheus metrics on streams.metrics_port (+ process id).",
    )
    add_cluster_arguments(p, "features", no_recovery="run without state snapshots")
    p.add_argument(
        "--feature-set-version",
        type=int,
        metavar="N",
        help="compute applied feature-set version N instead of the definitions' own (keeps "
        "an older version fresh while its model is still champion; own recovery folder)",
    )
    p.set_defaults(func=run_features_command)
    b = subparsers.add_parser(
        "backfill",
        help="rebuild the online store (Redis) from the event topics",
        description="Recompute every entity's feature values from the event topics (from the "
        "beginning, or the last --since-hours) with the features flow's own code and write them "
        "to Redis: absolute values, never over a newer one, so it is safe beside a running flow "
        "and safe to repeat. For a Redis that lost data (restarted without persistence, "
        "flushed, new). Prints progress lines and a summary.",
    )
    b.add_argument(
        "--since-hours",
        type=float,
        metavar="H",
        help="read only events written in the last H hours (default: the whole topics; the "
        "unbounded aggregates, last and last_time, need the whole history)",
    )
    b.set_defaults(func=backfill_command)


def run_features_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from loopline.streams.features.run import run_features

    settings = settings_of(args, settings)
    if wants_local_cluster(args):
        extra = []
        if args.feature_set_version is not None:
            extra = ["--feature-set-version", str(args.feature_set_version)]
        return run_local_cluster(args, "features", extra)
    cfg: dict[str, Any] = {}
    recovery_path = None
    if args.feature_set_version is not None:
        cfg["feature_set"] = _applied_version(settings, args.feature_set_version)
        # An older version is a second flow: it keeps its own state.
        recovery_path = settings.streams.recovery_dir / f"features-v{args.feature_set_version}"
    options = run_options_of(args, settings, recovery_path)
    run_features(settings, options, **cfg)
    return 0


def backfill_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    import time

    from loopline.contracts.errors import ConfigError
    from loopline.streams.features.backfill import backfill

    settings = settings_of(args, settings)
    since_ms = None
    if args.since_hours is not None:
        if args.since_hours <= 0:
            raise ConfigError(f"--since-hours must be > 0 (got {args.since_hours})")
        since_ms = int((time.time() - args.since_hours * 3600) * 1000)
    backfill(settings, since_ms=since_ms, progress=lambda line: print(line, flush=True))
    return 0


def _applied_version(settings: Settings, version: int) -> Any:
    from loopline.contracts.errors import ConfigError
    from loopline.featurerepo.loader import model_of
    from loopline.featurerepo.state import AppliedState

    model = model_of(settings).name
    state = AppliedState(settings.registry.path)
    fs = state.feature_set(model, version=version)
    if fs is None:
        known = [v.version for v in state.versions(model)]
        raise ConfigError(
            f"model {model} has no applied feature-set version {version} (applied: {known}); "
            "see `loopline plan`"
        )
    return fs
