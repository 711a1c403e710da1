"""What a trained version's manifest records: features, metrics, gate, lineage, golden rows.

The golden rows (holdout inputs with their ONNX scores) let serving check a
loaded model before it answers; the gate's checks and the parameters let a
person see later why a version was accepted or rejected.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from loopline.contracts.settings import TrainerSettings
from loopline.featurecore.features import FeatureSet
from loopline.registry.directory import ManifestFields
from loopline.trainer.booster import BoosterParams
from loopline.trainer.dataset import Split
from loopline.trainer.evaluation import golden_rows, split_rows
from loopline.trainer.export import INPUT_NAME, SCORE_OUTPUTS
from loopline.trainer.gate import ChampionScore, GateDecision


def manifest_fields(
    fs: FeatureSet,
    settings: TrainerSettings,
    task: str,
    split: Split,
    *,
    challenger: dict[str, float],
    champ: ChampionScore | None,
    decision: GateDecision,
    booster: Any,
    parity: float,
    holdout_scores: np.ndarray,
    extra: dict[str, Any] | None,
) -> ManifestFields:
    """The manifest of a version trained on ``split`` and judged by ``decision``."""
    golden = golden_rows(holdout_scores, settings.golden_rows)
    window = (split.train.window_ms[0], split.holdout.window_ms[1])
    gate = {
        "checks": [asdict(c) for c in decision.checks],
        "champion_version": champ.version if champ else "",
        "champion_metrics": champ.metrics if champ else None,
        "forced": decision.reason.startswith("forced"),
    }
    return ManifestFields(
        feature_set=fs.name,
        fingerprint=fs.fingerprint,
        feature_names=list(fs.model_features),
        input_name=INPUT_NAME,
        probability_output=SCORE_OUTPUTS[task],
        task=task,
        training_window_ms=list(window),
        rows=split_rows(split, task),
        metrics={
            **challenger,
            "parity_max_abs_diff": parity,
            "best_iteration": float(booster.current_iteration()),
        },
        parent_version=champ.version if champ else "",
        code_version=code_version(),
        golden_inputs=[[float(v) for v in split.holdout.features[i]] for i in golden],
        golden_scores=[float(np.float32(holdout_scores[i])) for i in golden],
        status="candidate" if decision.accepted else "rejected",
        decision=decision.reason,
        extra={
            "source": split.train.source,
            "dropped": dict(split.train.dropped),
            "gate": gate,
            "params": BoosterParams.from_settings(settings, task).lightgbm(),
            **(extra or {}),
        },
    )


def code_version() -> str:
    """The installed loopline version, plus the git commit when run from a checkout."""
    try:
        version = importlib.metadata.version("loopline")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{sha}" if sha else version
