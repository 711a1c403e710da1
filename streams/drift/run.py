"""Running the drift flow for real: recovery, metrics endpoint, workers.

``loopline run drift`` (:mod:`.commands`) calls :func:`run_drift`. Bytewax's
own runner works too (settings from the environment; ``LOOPLINE_CONFIG``
names a TOML file)::

    python -m bytewax.recovery .loopline/recovery/drift 4
    python -m bytewax.run "loopline.streams.drift.run:flow_from_env()" \\
        -r .loopline/recovery/drift -s 30 -b 0
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.config.loader import load_settings
from loopline.contracts.settings import Settings
from loopline.streams.common.bytewax_running import run_flow
from loopline.streams.common.run_options import RunOptions, check_run_options
from loopline.streams.drift.config import DriftFlowConfig

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow

RECOVERY_SUBDIR = "drift"


def recovery_dir(settings: Settings) -> Path:
    """This flow's recovery partitions (the other flows use sibling directories)."""
    return settings.streams.recovery_dir / RECOVERY_SUBDIR


def run_drift(settings: Settings, options: RunOptions | None = None, **overrides: Any) -> None:
    """Run the drift flow in this process until it ends (drain) or is stopped.

    ``overrides`` replace :class:`DriftFlowConfig` fields (``task="regression"``, tests).
    """
    from loopline.streams.drift.bytewax_flow import build_flow

    options = options or RunOptions()
    check_run_options(options)
    cfg = DriftFlowConfig.from_settings(settings, drain_idle_s=options.drain_idle_s, **overrides)
    run_flow(
        build_flow(cfg),
        options,
        recovery_path=recovery_dir(settings),
        recovery_partitions=settings.streams.recovery_partitions,
        epoch_interval_s=settings.streams.snapshot_interval_s,
        metrics_port=settings.drift.metrics_port,
    )


def flow_from_env() -> Dataflow:
    """The flow built from the environment's settings, for ``python -m bytewax.run``."""
    from loopline.streams.drift.bytewax_flow import build_flow

    settings = load_settings(os.environ.get("LOOPLINE_CONFIG"))
    return build_flow(DriftFlowConfig.from_settings(settings))
