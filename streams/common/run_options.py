"""How one process runs a flow: :class:`RunOptions`, checked, and read from the CLI.

Engine-neutral, so the CLI handlers (``commands.py``) never import Bytewax;
:mod:`.bytewax_running` runs a flow with them.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loopline.config.cli import flow_run_options
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings


@dataclass(frozen=True)
class RunOptions:
    """How one process runs a flow (from the CLI or a test)."""

    workers: int = 1
    process_id: int | None = None
    addresses: Sequence[str] | None = None
    recovery: bool = True
    recovery_path: Path | None = None  # default: the flow's recovery_dir(settings)
    metrics: bool = True
    drain_idle_s: float | None = None


def metrics_port_of(port: int, options: RunOptions) -> int:
    """The metrics port of this process: ``port`` plus the process id when the
    cluster's processes share one host (the local launcher, so they do not
    collide), ``port`` itself with one process per host (a StatefulSet pod each).

    >>> local = RunOptions(process_id=1, addresses=("127.0.0.1:5000", "127.0.0.1:5001"))
    >>> pods = RunOptions(process_id=1, addresses=("f-0.f:5000", "f-1.f:5000"))
    >>> metrics_port_of(9470, local), metrics_port_of(9470, pods)
    (9471, 9470)
    """
    if options.process_id is None or not options.addresses:
        return port
    hosts = {address.rpartition(":")[0] for address in options.addresses}
    return port + options.process_id if len(hosts) == 1 else port


def wait_until_resolvable(
    addresses: Sequence[str],
    timeout_s: float = 60.0,
    *,
    resolve: Callable[[str, int], object] = socket.getaddrinfo,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until every cluster address's host resolves; a typo fails in ``timeout_s``
    with the addresses named, instead of Bytewax retrying forever. (Peers' names may
    appear a little after this process starts, as a StatefulSet's pods do.)

    >>> known = {"f-0.f", "f-1.f"}
    >>> def fake(host, port):
    ...     if host not in known:
    ...         raise socket.gaierror("Name or service not known")
    >>> wait_until_resolvable(["f-0.f:5000", "f-1.f:5000"], resolve=fake)
    >>> wait_until_resolvable(["f-0.f:5000", "f-9.f:5000"], 0, resolve=fake)
    Traceback (most recent call last):
    ...
    loopline.contracts.errors.ConfigError: cluster address(es) f-9.f:5000 did not resolve ...
    """
    deadline = clock() + timeout_s
    while True:
        unresolved = []
        for address in addresses:
            host, _, port = address.rpartition(":")
            try:
                resolve(host, int(port))
            except OSError:
                unresolved.append(address)
        if not unresolved:
            return
        if clock() >= deadline:
            raise ConfigError(
                f"cluster address(es) {', '.join(unresolved)} did not resolve within "
                f"{timeout_s:g} s; check --addresses (one host:port per process, the same "
                "list everywhere)"
            )
        sleep(1.0)


def check_run_options(options: RunOptions) -> None:
    """Refuse options no cluster can run with, before anything is built or connected.

    A wrong address list would otherwise leave the process waiting for peers
    that never come.
    """
    if options.workers < 1:
        raise ConfigError("workers must be >= 1")
    if (options.process_id is None) != (not options.addresses):
        raise ConfigError("--process-id and --addresses go together (one address per process)")
    if options.addresses is None or options.process_id is None:
        return
    for address in options.addresses:
        _check_address(address)
    if not 0 <= options.process_id < len(options.addresses):
        raise ConfigError(
            f"--process-id {options.process_id} is not in the cluster: --addresses lists "
            f"{len(options.addresses)} process(es), ids 0..{len(options.addresses) - 1}"
        )
    if len(set(options.addresses)) != len(options.addresses):
        raise ConfigError(f"--addresses lists a process twice: {';'.join(options.addresses)}")


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(
            f"cluster address {address!r} is not host:port; --addresses takes every "
            'process of the cluster as "host:port;host:port", the same list on each'
        )


def add_cluster_arguments(parser: argparse.ArgumentParser, flow: str, no_recovery: str) -> None:
    """The arguments every clustered flow takes (``no_recovery``: what turning it off means)."""
    parser.add_argument(
        "-w", "--workers", type=int, help="worker threads per process (default streams.workers)"
    )
    parser.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    parser.add_argument(
        "-a", "--addresses", help='every process of the cluster, "host:port;host:port"'
    )
    parser.add_argument(
        "--recovery-dir",
        type=Path,
        help=f"recovery partitions (default <streams.recovery_dir>/{flow}; created if empty)",
    )
    parser.add_argument("--no-recovery", action="store_true", help=no_recovery)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="start this many local processes as one cluster (ports from --cluster-port)",
    )
    parser.add_argument(
        "--cluster-port",
        type=int,
        default=0,
        help="first of consecutive ports for a local --processes cluster (default: free ports)",
    )
    flow_run_options(parser)


def run_options_of(
    args: argparse.Namespace, settings: Settings, recovery_path: Path | None = None
) -> RunOptions:
    """The options :func:`add_cluster_arguments` parsed (``recovery_path``: a default)."""
    return RunOptions(
        workers=args.workers or settings.streams.workers,
        process_id=args.process_id,
        addresses=[a.strip() for a in args.addresses.split(";")] if args.addresses else None,
        recovery=not args.no_recovery,
        recovery_path=args.recovery_dir or recovery_path,
        metrics=not args.no_metrics,
        drain_idle_s=args.drain,
    )
