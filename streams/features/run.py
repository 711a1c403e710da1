"""Running the features flow for real: recovery, metrics endpoint, workers, processes.

``loopline run features`` calls :func:`run_features`. The flow can also be
started with Bytewax's own runner, reading settings from the environment
(``LOOPLINE_CONFIG`` names an optional TOML file)::

    python -m bytewax.recovery .loopline/recovery/features 4
    python -m bytewax.run "loopline.streams.features.run:flow_from_env()" \\
        -r .loopline/recovery/features -s 30 -b 0 -w 2
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from loopline.config.loader import load_settings
from loopline.contracts.settings import Settings
from loopline.streams.common.bytewax_running import run_flow
from loopline.streams.common.run_options import RunOptions, check_run_options
from loopline.streams.features.config import FeatureFlowConfig

RECOVERY_SUBDIR = "features"


def recovery_dir(settings: Settings) -> Path:
    """This flow's recovery partitions (other flows use sibling directories)."""
    return settings.streams.recovery_dir / RECOVERY_SUBDIR


def run_features(settings: Settings, options: RunOptions | None = None, **cfg: Any) -> None:
    """Run the features flow in this process until it ends (drain) or is stopped.

    ``cfg`` overrides :class:`FeatureFlowConfig` fields (tests, benchmarks).
    """
    from loopline.streams.features.bytewax_flow import build_flow

    options = options or RunOptions()
    check_run_options(options)
    flow_cfg = FeatureFlowConfig.from_settings(settings, drain_idle_s=options.drain_idle_s, **cfg)
    flow = build_flow(flow_cfg)
    tune_gc()
    run_flow(
        flow,
        options,
        recovery_path=recovery_dir(settings),
        recovery_partitions=settings.streams.recovery_partitions,
        epoch_interval_s=snapshot_interval_s(settings),
        metrics_port=settings.streams.metrics_port,
    )


def snapshot_interval_s(settings: Settings) -> float:
    s = settings.streams
    return s.features_snapshot_interval_s or s.snapshot_interval_s


def tune_gc() -> None:
    """Collect young objects less often: feature state is many small long-lived containers.

    With the default threshold (700 allocations) the collector keeps walking
    them; measured here it cost 10-25 % of the flow's throughput.
    """
    gc.freeze()  # what exists now (modules, the flow) is never garbage
    gc.set_threshold(50_000, 20, 100)


def flow_from_env():  # type: ignore[no-untyped-def]
    """The flow built from the environment's settings, for ``python -m bytewax.run``."""
    from loopline.streams.features.bytewax_flow import build_flow

    settings = load_settings(os.environ.get("LOOPLINE_CONFIG"))
    tune_gc()
    return build_flow(FeatureFlowConfig.from_settings(settings))
