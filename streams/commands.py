"""The streams CLI subcommands: ``loopline run features`` and ``loopline simulate``.

The lead's CLI calls :func:`register` with its subparsers; each handler is
stored as ``func`` and called as ``func(args)`` or ``func(args, settings)``,
with the :class:`Settings` built at the edge (``args.settings`` otherwise).
``python -m loopline.streams`` offers the same subcommands on their own.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from loopline.config.cli import flow_run_options, settings_of
from loopline.contracts.settings import Settings


def register(subparsers: Any) -> None:
    """Add ``run features``, ``run labels`` and ``simulate`` to a subparsers object."""
    from loopline.streams.labels.run import register_run_labels

    _register_run_features(_run_group(subparsers))
    register_run_labels(_run_group(subparsers))
    _register_simulate(subparsers)


# -- run features -------------------------------------------------------------------
def _register_run_features(run: Any) -> None:
    p = run.add_parser(
        "features",
        help="the features dataflow: events topic -> windowed features in Redis",
        description="Consume the events topic, compute the feature set's windowed values per "
        "entity (event time, allowed lateness, dead letters) and keep them in Redis. Recovery "
        "is on: a restart after a crash resumes from the last snapshot with no loss and no "
        "double counting. Prometheus metrics on streams.metrics_port (+ process id).",
    )
    p.add_argument(
        "-w", "--workers", type=int, help="worker threads per process (default streams.workers)"
    )
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
    p.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    p.add_argument("-a", "--addresses", help='every process of the cluster, "host:port;host:port"')
    p.add_argument(
        "--recovery-dir",
        type=Path,
        help="recovery partitions (default <streams.recovery_dir>/features; created if empty)",
    )
    p.add_argument("--no-recovery", action="store_true", help="run without state snapshots")
    p.add_argument(
        "--feature-set-version",
        type=int,
        metavar="N",
        help="compute applied feature-set version N instead of the definitions' own (keeps "
        "an older version fresh while its model is still champion; own recovery folder)",
    )
    flow_run_options(p)
    p.set_defaults(func=run_features_command)


def run_features_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from loopline.streams.features.run import RunOptions, run_features

    settings = settings_of(args, settings)
    if args.processes > 1 and args.process_id is None:
        return _run_local_cluster(args, settings)
    cfg: dict[str, Any] = {}
    recovery_path = args.recovery_dir
    if args.feature_set_version is not None:
        fs = _applied_version(settings, args.feature_set_version)
        cfg["feature_set"] = fs
        recovery_path = recovery_path or (
            settings.streams.recovery_dir / f"features-v{args.feature_set_version}"
        )
    options = RunOptions(
        workers=args.workers or settings.streams.workers,
        process_id=args.process_id,
        addresses=args.addresses.split(";") if args.addresses else None,
        recovery=not args.no_recovery,
        recovery_path=recovery_path,
        metrics=not args.no_metrics,
        drain_idle_s=args.drain,
    )
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


# -- simulate -----------------------------------------------------------------------
def _register_simulate(subparsers: Any) -> None:
    # Generic over feature repos, so it lives with the simulation contract.
    from loopline.simulation.commands import register_simulate

    register_simulate(subparsers)


def _run_group(subparsers: Any) -> Any:
    parser = subparsers.choices.get("run")
    if parser is None:
        parser = subparsers.add_parser("run", help="run a long-lived Loopline service")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="run_command", required=True, metavar="SERVICE")
