"""One flow as a local Bytewax cluster: ``--processes P`` children of the same command.

In production each host runs one process of the cluster, started with
``--process-id`` and ``--addresses`` (every process's ``host:port``, the same
list everywhere). On one machine ``--processes P`` starts the P processes
itself, on ``127.0.0.1`` ports from ``--cluster-port`` (free ports otherwise),
and supervises them as one unit: a cluster that lost a process cannot make
progress, so the first child that fails stops the others and its exit code is
the cluster's. The children read their settings the way this command did
(``--config``, ``--repo``, the environment).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from loopline.config.ports import free_ports
from loopline.contracts.errors import ConfigError

# How long the survivors of a failed cluster get to exit before SIGKILL.
_STOP_GRACE_S = 10.0
_POLL_S = 0.1


def wants_local_cluster(args: argparse.Namespace) -> bool:
    """Whether this command starts the cluster's processes instead of being one of them."""
    if args.processes < 1:
        raise ConfigError(f"--processes must be >= 1 (got {args.processes})")
    return args.processes > 1 and args.process_id is None


def refuse_overrides(overrides: dict[str, Any]) -> None:
    """In-process config overrides cannot reach the children: say so instead of dropping them."""
    if overrides:
        raise ConfigError(
            f"config overrides {sorted(overrides)} apply to this process only; a local "
            "cluster's processes take their settings from --config and the environment"
        )


def run_local_cluster(args: argparse.Namespace, flow: str, extra: Sequence[str] = ()) -> int:
    """Start ``args.processes`` children running ``flow`` as one cluster; wait for them.

    ``extra``: the flow's own arguments, passed on to every child.
    """
    addresses = ";".join(local_addresses(args.processes, args.cluster_port))
    base = child_command(args, flow, extra)
    children = [
        subprocess.Popen([*base, "--process-id", str(i), "--addresses", addresses], env=os.environ)
        for i in range(args.processes)
    ]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _supervise(children)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def local_addresses(processes: int, first_port: int = 0) -> list[str]:
    """``127.0.0.1:port`` for each process: consecutive from ``first_port``, else free ones."""
    ports = [first_port + i for i in range(processes)] if first_port else free_ports(processes)
    return [f"127.0.0.1:{port}" for port in ports]


def child_command(args: argparse.Namespace, flow: str, extra: Sequence[str] = ()) -> list[str]:
    """The command line of one process of the cluster, less its id and the addresses."""
    cmd = [sys.executable, "-m", "loopline.streams"]
    if getattr(args, "config", None):
        cmd += ["--config", str(args.config)]
    if getattr(args, "repo", None):
        cmd += ["--repo", str(args.repo)]
    cmd += ["run", flow, *extra]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.recovery_dir:
        cmd += ["--recovery-dir", str(args.recovery_dir)]
    if args.no_recovery:
        cmd.append("--no-recovery")
    if args.no_metrics:
        cmd.append("--no-metrics")
    if args.drain is not None:
        cmd += ["--drain", str(args.drain)]
    return cmd


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """0 once every child exited cleanly; the first failure's code (the others stopped)."""
    while True:
        codes = [child.poll() for child in children]
        failed = next((code for code in codes if code not in (None, 0)), None)
        if failed is not None:
            _stop(children)
            # As a shell reports it: a child killed by signal N exits 128 + N.
            return 128 - failed if failed < 0 else failed
        if all(code == 0 for code in codes):
            return 0
        time.sleep(_POLL_S)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    running = [child for child in children if child.poll() is None]
    for child in running:
        child.terminate()
    deadline = time.monotonic() + _STOP_GRACE_S
    for child in running:
        try:
            child.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
