"""Running a dataflow for real, the same way for every flow: recovery, metrics, workers.

Each flow's ``run.py`` builds its flow from its config and hands it to
:func:`run_flow` with the flow's own recovery directory, epoch interval and
metrics port.
"""

from __future__ import annotations

import fcntl
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from loopline.contracts.errors import StackError
from loopline.streams.common.run_options import (
    RunOptions,
    metrics_port_of,
    wait_until_resolvable,
)

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow


def ensure_recovery_dir(path: Path, partitions: int) -> Path:
    """Create and initialise ``path`` unless it already holds recovery partitions.

    Safe when several processes of one cluster start at once (a file lock).
    """
    from bytewax.recovery import init_db_dir

    path.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(path.glob("part-*.sqlite3")):
            init_db_dir(path, partitions)
    return path


def run_flow(
    flow: Dataflow,
    options: RunOptions,
    *,
    recovery_path: Path,
    recovery_partitions: int,
    epoch_interval_s: float,
    metrics_port: int,
) -> None:
    """Run ``flow`` in this process until it ends (drain) or is stopped.

    ``recovery_path`` is used unless ``options`` names another one or turns
    recovery off; metrics are served on :func:`metrics_port_of` ``metrics_port``
    (0: no endpoint).
    """
    from bytewax.recovery import (
        InconsistentPartitionsError,
        MissingPartitionsError,
        NoPartitionsError,
        RecoveryConfig,
    )
    from bytewax.run import cli_main

    recovery = None
    if options.recovery:
        path = ensure_recovery_dir(options.recovery_path or recovery_path, recovery_partitions)
        recovery = RecoveryConfig(path, timedelta(0))
    if options.metrics and metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port_of(metrics_port, options))
    if options.addresses:
        wait_until_resolvable(options.addresses)
    try:
        cli_main(
            flow,
            workers_per_process=options.workers,
            process_id=options.process_id,
            addresses=list(options.addresses) if options.addresses else None,
            epoch_interval=timedelta(seconds=epoch_interval_s),
            recovery_config=recovery,
        )
    except (InconsistentPartitionsError, MissingPartitionsError, NoPartitionsError) as e:
        where = recovery.db_dir if recovery is not None else "?"
        raise StackError(
            f"recovery directory {where} cannot be resumed from: {e}. Restore its backup, "
            "or move it away to start over (the flow then recomputes from the topic)"
        ) from e
