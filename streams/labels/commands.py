"""The labels CLI subcommand: ``loopline run labels``, one process or a local cluster."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from loopline.config.cli import service_group, settings_of
from loopline.contracts.settings import Settings
from loopline.streams.common.local_cluster import (
    refuse_overrides,
    run_local_cluster,
    wants_local_cluster,
)
from loopline.streams.common.run_options import add_cluster_arguments, run_options_of


def register(subparsers: Any) -> None:
    """Add ``run labels`` to a subparsers object (``run`` is shared)."""
    p = service_group(subparsers).add_parser(
        "labels",
        help="the labeled-log dataflow: predictions + outcomes -> offline store + labeled topic",
        description="Join logged predictions with their delayed outcomes under a label "
        "maturity window (labels.maturity_s; without an outcome by then, labels.timeout_policy "
        "decides) and commit each labeled example once to the offline store (Parquet by hour "
        "under trainer.offline_store) and the labeled topic. Recovery is on: a restart after a "
        "crash resumes from the last snapshot without duplicates. Prometheus metrics on "
        "labels.metrics_port (+ process id). Across processes each join key's pending "
        "predictions and outcomes live on one worker (routed by a hash of the key).",
    )
    add_cluster_arguments(
        p,
        "labels",
        no_recovery="keep no snapshots: every start re-reads from streams.start_from (already "
        "stored examples are not written twice)",
    )
    p.set_defaults(func=run_labels_command)


def run_labels_command(
    args: argparse.Namespace, settings: Settings | None = None, **overrides: Any
) -> int:
    """``loopline run labels``; ``overrides`` go to the flow's config (``task="regression"``)."""
    from loopline.streams.labels.run import run_labels

    settings = settings_of(args, settings)
    if wants_local_cluster(args):
        refuse_overrides(overrides)
        return run_local_cluster(args, "labels")
    options = run_options_of(args, settings)
    with contextlib.suppress(KeyboardInterrupt):
        run_labels(settings, options, **overrides)
    return 0
