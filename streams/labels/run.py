"""Running the labels flow for real: recovery, metrics endpoint, workers, processes.

The flow joins logged predictions with delayed outcomes under a label
maturity window (see :mod:`loopline.streams.labels`; the Bytewax adapter is
:mod:`.bytewax_flow`).

``loopline run labels`` (:mod:`.commands`) calls :func:`run_labels`. Bytewax's
own runner works too (settings from the environment; ``LOOPLINE_CONFIG``
names a TOML file)::

    python -m bytewax.recovery .loopline/recovery/labels 4
    python -m bytewax.run "loopline.streams.labels.run:flow_from_env()" \\
        -r .loopline/recovery/labels -s 10 -b 0

(the epoch interval ``-s`` is ``labels.flush_interval_s``: each snapshot is
one flush of both outputs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.config.loader import load_settings
from loopline.contracts.settings import Settings
from loopline.streams.common.bytewax_running import run_flow
from loopline.streams.common.run_options import RunOptions, check_run_options
from loopline.streams.labels.config import LabelsFlowConfig

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
    from loopline.streams.labels.bytewax_flow import build_flow

    options = options or RunOptions()
    check_run_options(options)
    cfg = LabelsFlowConfig.from_settings(settings, drain_idle_s=options.drain_idle_s, **overrides)
    run_flow(
        build_flow(cfg),
        options,
        recovery_path=recovery_dir(settings),
        recovery_partitions=settings.streams.recovery_partitions,
        # Each snapshot is one flush of both outputs.
        epoch_interval_s=cfg.flush_interval_s,
        metrics_port=settings.labels.metrics_port,
    )


def flow_from_env() -> Dataflow:
    """The flow built from the environment's settings, for ``python -m bytewax.run``."""
    from loopline.streams.labels.bytewax_flow import build_flow

    settings = load_settings(os.environ.get("LOOPLINE_CONFIG"))
    return build_flow(LabelsFlowConfig.from_settings(settings))
