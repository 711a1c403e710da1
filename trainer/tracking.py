"""What a training run tells its tracking run (MLflow, ``registry.mlflow_tracking_uri``).

Assembled from the run's report, so the tracker (:mod:`loopline.registry.mlflow_tracking`)
knows nothing of the trainer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

from loopline.featurecore.features import FeatureSet
from loopline.trainer.booster import BoosterParams
from loopline.trainer.gate import GateMargins


def run_record(
    report: Any,
    extra: dict[str, Any],
    params: BoosterParams,
    margins: GateMargins,
    fs: FeatureSet,
) -> dict[str, dict[str, Any]]:
    """``params``, ``metrics`` and ``tags`` of the tracking run of ``report`` (a
    TrainingReport); ``extra`` is the run's lineage (retrain event id, trigger, ...).

    >>> from types import SimpleNamespace as R
    >>> report = R(metrics={"auc": 0.9}, champion_metrics={"auc": 0.8}, parity_max_abs_diff=1e-7,
    ...            rows={"train": 70}, stage_seconds={"train": 1.5}, best_iteration=12,
    ...            window_ms=(0, 3_600_000), source="offline",
    ...            version="3", accepted=True, decision="better", published_as="champion",
    ...            champion_version="2", model_name="fraud", task="binary")
    >>> fs = R(name="fraud", fingerprint="f" * 64, version=1)
    >>> params, margins = BoosterParams(50, 15, 0.1, 20, 10, 1, 7), GateMargins(0.01, 0.02, 0.01)
    >>> rec = run_record(report, {"retrain_event_id": "r1"}, params, margins, fs)
    >>> rec["metrics"]["challenger.auc"], rec["metrics"]["champion.auc"], rec["params"]["seed"]
    (0.9, 0.8, 7)
    >>> rec["tags"]["retrain_event_id"], rec["tags"]["data_window"]
    ('r1', '1970-01-01T00:00:00+00:00/1970-01-01T01:00:00+00:00')
    """
    metrics: dict[str, float] = {f"challenger.{k}": v for k, v in report.metrics.items()}
    metrics.update({f"champion.{k}": v for k, v in (report.champion_metrics or {}).items()})
    metrics["parity_max_abs_diff"] = report.parity_max_abs_diff
    metrics["best_iteration"] = report.best_iteration
    metrics.update({f"rows.{k}": v for k, v in report.rows.items()})
    metrics.update({f"seconds.{k}": v for k, v in report.stage_seconds.items()})
    gate = {f"gate_margin.{k}": v for k, v in asdict(margins).items()}
    start, end = report.window_ms
    tags = {
        "feature_set": fs.name,
        "fingerprint": fs.fingerprint,
        "feature_set_version": fs.version,
        "data_window": f"{_iso(start)}/{_iso(end)}",
        "data_window_ms": f"{start}/{end}",
        "data_source": report.source,
        "version": report.version,
        "accepted": report.accepted,
        "decision": report.decision,
        "published_as": report.published_as,
        "champion_version": report.champion_version,
        **{k: v for k, v in extra.items() if k != "mlflow_run_id"},
    }
    return {"params": {**asdict(params), **gate}, "metrics": metrics, "tags": tags}


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()
