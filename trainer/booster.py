"""LightGBM training with the native API and early stopping on the validation rows.

The task picks the objective: ``binary`` (log loss, probabilities) or
``regression`` (squared error on float labels). Early stopping watches the
first metric: binary log loss, or l2 for a regression.

>>> p = BoosterParams.from_settings(TrainerSettings(), task="regression").lightgbm()
>>> p["objective"], p["metric"]
('regression', ['l2', 'l1'])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb

from loopline.contracts.settings import TrainerSettings
from loopline.contracts.tasks import check_task
from loopline.trainer.dataset import TrainingSet

# (iteration, max iterations, valid loss: log loss for binary, l2 for regression)
OnIteration = Callable[[int, int, float], None]
REPORT_EVERY = 10
# task -> (objective, metrics; the first one drives early stopping and progress)
OBJECTIVES = {
    "binary": ("binary", ["binary_logloss", "auc"]),
    "regression": ("regression", ["l2", "l1"]),
}


@dataclass(frozen=True)
class BoosterParams:
    num_trees: int
    num_leaves: int
    learning_rate: float
    min_data_in_leaf: int
    early_stopping_rounds: int
    num_threads: int
    seed: int
    task: str = "binary"

    @staticmethod
    def from_settings(s: TrainerSettings, task: str = "binary") -> BoosterParams:
        return BoosterParams(
            num_trees=s.num_trees,
            num_leaves=s.num_leaves,
            learning_rate=s.learning_rate,
            min_data_in_leaf=s.min_data_in_leaf,
            early_stopping_rounds=s.early_stopping_rounds,
            num_threads=s.num_threads,
            seed=s.seed,
            task=check_task(task),
        )

    @property
    def loss_metric(self) -> str:
        return OBJECTIVES[self.task][1][0]

    def lightgbm(self) -> dict[str, Any]:
        # No class reweighting: the gate compares calibrated probabilities.
        objective, metrics = OBJECTIVES[self.task]
        return {
            "objective": objective,
            "metric": list(metrics),
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": 0.9,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }


def train_booster(
    train: TrainingSet,
    valid: TrainingSet,
    params: BoosterParams,
    on_iteration: OnIteration | None = None,
) -> lgb.Booster:
    """A booster holding only the trees up to the best validation iteration."""
    names = list(train.feature_names)
    dtrain = lgb.Dataset(train.features, label=train.labels, feature_name=names, free_raw_data=True)
    dvalid = lgb.Dataset(valid.features, label=valid.labels, reference=dtrain)
    callbacks: list[Callable[..., None]] = [
        lgb.early_stopping(params.early_stopping_rounds, first_metric_only=True, verbose=False)
    ]
    if on_iteration is not None:
        callbacks.append(_reporter(on_iteration, params.num_trees, params.loss_metric))
    booster = lgb.train(
        params.lightgbm(),
        dtrain,
        num_boost_round=params.num_trees,
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=callbacks,
    )
    best = booster.best_iteration or booster.current_iteration()
    # Drop the trees grown after the best iteration, so the exported model,
    # the native predictions and the manifest all describe the same model.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


def _reporter(on_iteration: OnIteration, total: int, metric: str) -> Callable[[Any], None]:
    def callback(env: Any) -> None:
        i = env.iteration + 1
        if i % REPORT_EVERY == 0 or i == total:
            loss = next((r[2] for r in env.evaluation_result_list if r[1] == metric), 0.0)
            on_iteration(i, total, float(loss))

    callback.order = 30  # type: ignore[attr-defined]
    return callback
