"""The features CLI subcommand: ``loopline run features``, one process or a local cluster."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from loopline.config.cli import service_group, settings_of
from loopline.contracts.settings import Settings
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
        "--processes",
        type=int,
        default=1,
        help="start this many local processes as one cluster (ports from --cluster-port)",
    )
    p.add_argument(
        "--cluster-port",
        type=int,
        default=0,
        help="first of consecutive ports for a local --processes cluster (default: free ports)",
    )
    p.add_argument(
        "--feature-set-version",
        type=int,
        metavar="N",
        help="compute applied feature-set version N instead of the definitions' own (keeps "
        "an older version fresh while its model is still champion; own recovery folder)",
    )
    p.set_defaults(func=run_features_command)


def run_features_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from loopline.streams.features.run import run_features

    settings = settings_of(args, settings)
    if args.processes > 1 and args.process_id is None:
        return _run_local_cluster(args, settings)
    cfg: dict[str, Any] = {}
    recovery_path = None
    if args.feature_set_version is not None:
        cfg["feature_set"] = _applied_version(settings, args.feature_set_version)
        # An older version is a second flow: it keeps its own state.
        recovery_path = settings.streams.recovery_dir / f"features-v{args.feature_set_version}"
    options = run_options_of(args, settings, recovery_path)
    run_features(settings, options, **cfg)
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


def _run_local_cluster(args: argparse.Namespace, settings: Settings) -> int:
    """Start ``--processes`` children of this command as one Bytewax cluster and wait."""
    n = args.processes
    ports = [args.cluster_port + i for i in range(n)] if args.cluster_port else _free_ports(n)
    addresses = ";".join(f"127.0.0.1:{port}" for port in ports)
    base = [sys.executable, "-m", "loopline.streams"]
    if getattr(args, "config", None):
        base += ["--config", str(args.config)]
    if getattr(args, "repo", None):
        base += ["--repo", str(args.repo)]
    base += ["run", "features"]
    if args.feature_set_version is not None:
        base += ["--feature-set-version", str(args.feature_set_version)]
    if args.workers:
        base += ["--workers", str(args.workers)]
    if args.recovery_dir:
        base += ["--recovery-dir", str(args.recovery_dir)]
    for flag, on in (("--no-recovery", args.no_recovery), ("--no-metrics", args.no_metrics)):
        if on:
            base.append(flag)
    if args.drain is not None:
        base += ["--drain", str(args.drain)]
    children = [
        subprocess.Popen([*base, "--process-id", str(i), "--addresses", addresses], env=os.environ)
        for i in range(n)
    ]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    failed = [c for c in codes if c]
    return failed[0] if failed else 0


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
