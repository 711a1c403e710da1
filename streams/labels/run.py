"""The labeled-log dataflow: predictions + outcomes -> labeled examples.

Joins the predictions topic (keyed by ``request_id``; join key ``event_id``
when the log has one, else ``request_id``) with the outcomes topic (keyed by
``event_id``) under a label maturity window, and commits every labeled
example once to the offline store (Parquet by hour, ``trainer.offline_store``)
and to the labeled topic. The logic is :mod:`loopline.streams.labels`, the
Bytewax adapter ``loopline.streams.labels.bytewax_flow``.

``loopline run labels`` calls :func:`run_labels`. Bytewax's own runner works
too (settings from the environment; ``LOOPLINE_CONFIG`` names a TOML file)::

    python -m bytewax.recovery .loopline/recovery/labels 4
    python -m bytewax.run "loopline.streams.labels.run:flow_from_env()" \\
        -r .loopline/recovery/labels -s 10 -b 0

(the epoch interval ``-s`` is ``labels.flush_interval_s``: each snapshot is
one flush of both outputs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.config.cli import flow_run_options, settings_of
from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings
from loopline.streams.features.run import RunOptions, ensure_recovery_dir

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow

RECOVERY_SUBDIR = "labels"


def recovery_dir(settings: Settings) -> Path:
    """This flow's recovery partitions (the other flows use sibling directories)."""
    return settings.streams.recovery_dir / RECOVERY_SUBDIR


def run_labels(settings: Settings, options: RunOptions | None = None, **overrides: Any) -> None:
    """Run the labels flow in this process until it ends (drain) or is stopped.

    ``overrides`` replace :class:`~loopline.streams.labels.config.LabelsFlowConfig`
    fields (tests).
    """
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from loopline.streams.labels.bytewax_flow import build_flow
    from loopline.streams.labels.config import LabelsFlowConfig

    options = options or RunOptions()
    if options.workers < 1:
        raise ConfigError("workers must be >= 1")
    if (options.process_id is None) != (not options.addresses):
        raise ConfigError("--process-id and --addresses go together (one address per process)")
    cfg = LabelsFlowConfig.from_settings(settings, drain_idle_s=options.drain_idle_s, **overrides)
    flow = build_flow(cfg)
    recovery = None
    if options.recovery:
        path = ensure_recovery_dir(
            options.recovery_path or recovery_dir(settings), settings.streams.recovery_partitions
        )
        recovery = RecoveryConfig(str(path), timedelta(0))
    if options.metrics and settings.labels.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.labels.metrics_port + (options.process_id or 0))
    cli_main(
        flow,
        workers_per_process=options.workers,
        process_id=options.process_id,
        addresses=list(options.addresses) if options.addresses else None,
        epoch_interval=timedelta(seconds=cfg.flush_interval_s),
        recovery_config=recovery,
    )


def flow_from_env() -> Dataflow:
    """The flow built from the environment's settings, for ``python -m bytewax.run``."""
    from loopline.streams.labels.bytewax_flow import build_flow
    from loopline.streams.labels.config import LabelsFlowConfig

    settings = load_settings(os.environ.get("LOOPLINE_CONFIG"))
    return build_flow(LabelsFlowConfig.from_settings(settings))


# -- CLI: loopline run labels ---------------------------------------------------------------
def register_run_labels(run: Any) -> None:
    """Add ``labels`` to the ``run`` group's subparsers."""
    p = run.add_parser(
        "labels",
        help="the labeled-log dataflow: predictions + outcomes -> offline store + labeled topic",
        description="Join logged predictions with their delayed outcomes under a label "
        "maturity window (labels.maturity_s; without an outcome by then, labels.timeout_policy "
        "decides) and commit each labeled example once to the offline store (Parquet by hour "
        "under trainer.offline_store) and the labeled topic. Recovery is on: a restart after a "
        "crash resumes from the last snapshot without duplicates. Prometheus metrics on "
        "labels.metrics_port (+ process id).",
    )
    p.add_argument(
        "-w", "--workers", type=int, help="worker threads per process (default streams.workers)"
    )
    p.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    p.add_argument("-a", "--addresses", help='every process of the cluster, "host:port;host:port"')
    p.add_argument(
        "--recovery-dir",
        type=Path,
        help="recovery partitions (default <streams.recovery_dir>/labels; created if empty)",
    )
    p.add_argument(
        "--no-recovery",
        action="store_true",
        help="keep no snapshots: every start re-reads from streams.start_from (already stored "
        "examples are not written twice)",
    )
    flow_run_options(p)
    p.set_defaults(func=run_labels_command)


def run_labels_command(
    args: argparse.Namespace, settings: Settings | None = None, **overrides: Any
) -> int:
    """``loopline run labels``; ``overrides`` go to the flow's config (``task="regression"``)."""
    settings = settings_of(args, settings)
    options = RunOptions(
        workers=args.workers or settings.streams.workers,
        process_id=args.process_id,
        addresses=args.addresses.split(";") if args.addresses else None,
        recovery=not args.no_recovery,
        recovery_path=args.recovery_dir,
        metrics=not args.no_metrics,
        drain_idle_s=args.drain,
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_labels(settings, options, **overrides)
    return 0
