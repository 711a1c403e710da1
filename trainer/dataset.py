"""A training set in time order, and the time-based train/validation/holdout split.

Features are kept as float32: that is what the ONNX model receives at serving
time, so the native model is trained and checked on exactly those values.
Labels are int8 0/1 for a binary task and float64 for a regression task,
whether the source column held ints or floats.

>>> ts = TrainingSet.from_rows(
...     features=[[float(i), 1.0] for i in range(10)],
...     labels=[i % 2 for i in range(10)],
...     event_time_ms=[1000 * (10 - i) for i in range(10)],
...     ids=[f"e{i}" for i in range(10)],
...     feature_names=("a", "b"),
...     source="demo",
... )
>>> ts.event_time_ms[:3].tolist(), ts.window_ms
([1000, 2000, 3000], (1000, 10000))
>>> s = split_by_time(ts, validation_fraction=0.2, holdout_fraction=0.2)
>>> len(s.train), len(s.valid), len(s.holdout)
(6, 2, 2)
>>> s.holdout.ids
['e1', 'e0']
>>> TrainingSet.from_rows(features=[[1.0], [2.0]], labels=[0.0, 1.0], event_time_ms=[1, 2],
...     ids=["a", "b"], feature_names=("x",), source="demo").labels.dtype
dtype('int8')
>>> TrainingSet.from_rows(features=[[1.0], [2.0]], labels=[3, 2.5], event_time_ms=[1, 2],
...     ids=["a", "b"], feature_names=("x",), source="demo", task="regression").labels.tolist()
[3.0, 2.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from loopline.contracts.errors import ConfigError, SchemaError
from loopline.contracts.tasks import check_task
from loopline.trainer.errors import InsufficientDataError


@dataclass(frozen=True)
class TrainingSet:
    """Rows sorted by event time: features (float32), labels, times, ids."""

    features: np.ndarray
    labels: np.ndarray
    event_time_ms: np.ndarray
    ids: list[str]
    feature_names: tuple[str, ...]
    source: str
    # What the loader dropped and why ("duplicates", "immature", ...), for the summary.
    dropped: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def from_rows(
        *,
        features: Sequence[Sequence[float]] | np.ndarray,
        labels: Sequence[float] | np.ndarray,
        event_time_ms: Sequence[int] | np.ndarray,
        ids: Sequence[str],
        feature_names: tuple[str, ...],
        source: str,
        dropped: dict[str, int] | None = None,
        task: str = "binary",
    ) -> TrainingSet:
        x = np.asarray(features, dtype=np.float64).reshape(len(ids), len(feature_names))
        y = task_labels(labels, task)
        t = np.asarray(event_time_ms, dtype=np.int64)
        if not len(x) == len(y) == len(t):
            raise SchemaError(
                f"training rows disagree: {len(x)} feature rows, {len(y)} labels, "
                f"{len(t)} times for {len(ids)} ids"
            )
        ordered_ids = np.asarray(ids, dtype=object)
        order = np.lexsort((ordered_ids.astype(str), t)) if len(t) else np.arange(0)
        return TrainingSet(
            features=x[order].astype(np.float32),
            labels=y[order],
            event_time_ms=t[order],
            ids=[str(i) for i in ordered_ids[order]],
            feature_names=feature_names,
            source=source,
            dropped=dict(dropped or {}),
        )

    @property
    def is_regression(self) -> bool:
        """Float labels: built for a regression task (binary labels are int8)."""
        return self.labels.dtype.kind == "f"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    @property
    def window_ms(self) -> tuple[int, int]:
        """First and last event time (ms); (0, 0) when empty."""
        if not len(self):
            return (0, 0)
        return (int(self.event_time_ms[0]), int(self.event_time_ms[-1]))

    def rows(self, start: int, stop: int) -> TrainingSet:
        """Rows ``start:stop`` (time order is kept)."""
        return TrainingSet(
            features=self.features[start:stop],
            labels=self.labels[start:stop],
            event_time_ms=self.event_time_ms[start:stop],
            ids=self.ids[start:stop],
            feature_names=self.feature_names,
            source=self.source,
            dropped=self.dropped,
        )


def task_labels(labels: Sequence[float] | np.ndarray, task: str) -> np.ndarray:
    """Labels as the task trains on them; int or float columns alike.

    >>> task_labels([1, 0.0], "binary").tolist(), task_labels([1, 0.5], "regression").tolist()
    ([1, 0], [1.0, 0.5])
    >>> task_labels([0.5], "binary")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    loopline.contracts.errors.SchemaError: binary labels must be 0 or 1; got 0.5 (train a ...
    """
    y = np.asarray(labels, dtype=np.float64)
    if check_task(task) == "regression":
        bad = y[~np.isfinite(y)]
        if len(bad):
            raise SchemaError(f"regression labels must be finite; got {bad[0]}", "label")
        return y
    bad = y[(y != 0) & (y != 1)]
    if len(bad):
        raise SchemaError(
            f"binary labels must be 0 or 1; got {bad[0]:g} (train a regression task for "
            "real-valued labels)",
            "label",
        )
    return y.astype(np.int8)


@dataclass(frozen=True)
class Split:
    """Oldest rows train, the next validate (early stopping), the newest are the holdout."""

    train: TrainingSet
    valid: TrainingSet
    holdout: TrainingSet


def split_by_time(ts: TrainingSet, validation_fraction: float, holdout_fraction: float) -> Split:
    """Split in time order; no row of a later part is older than one of an earlier part."""
    if not (0 < validation_fraction < 1 and 0 < holdout_fraction < 1):
        raise ConfigError("trainer.validation_fraction and holdout_fraction must be in (0, 1)")
    if validation_fraction + holdout_fraction >= 0.9:
        raise ConfigError(
            "trainer.validation_fraction + holdout_fraction must leave at least 10% to train on"
        )
    n = len(ts)
    n_hold = max(1, round(n * holdout_fraction))
    n_valid = max(1, round(n * validation_fraction))
    n_train = n - n_hold - n_valid
    if n_train < 1:
        raise InsufficientDataError(f"{n} rows cannot be split into train/validation/holdout")
    return Split(
        train=ts.rows(0, n_train),
        valid=ts.rows(n_train, n_train + n_valid),
        holdout=ts.rows(n_train + n_valid, n),
    )


def check_enough(split: Split, min_rows: int, min_positives: int, task: str = "binary") -> None:
    """Refuse to train on too little data.

    Binary: every part must hold both classes and training ``min_positives``
    positives. Regression: the training labels must vary.
    """
    total = len(split.train) + len(split.valid) + len(split.holdout)
    if total < min_rows:
        raise InsufficientDataError(f"only {total} labeled rows in the window (need {min_rows})")
    if check_task(task) == "regression":
        if np.ptp(split.train.labels) == 0:
            raise InsufficientDataError(
                f"every training label is {split.train.labels[0]:g}; a regression needs "
                "labels that vary"
            )
        return
    if split.train.positives < min_positives:
        raise InsufficientDataError(
            f"only {split.train.positives} positive rows to train on (need {min_positives})"
        )
    for name, part in (("validation", split.valid), ("holdout", split.holdout)):
        if part.positives == 0 or part.positives == len(part):
            raise InsufficientDataError(f"the {name} rows hold a single class; need more data")
