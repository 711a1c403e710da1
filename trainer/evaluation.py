"""What a training run says about its rows and scores, per task.

The row counts recorded in a manifest, the one-line description of a split,
and the golden rows serving re-scores after loading. Binary splits count
positives; regression splits describe the label's spread instead.

>>> from loopline.trainer.dataset import TrainingSet, split_by_time
>>> ts = TrainingSet.from_rows(features=[[float(i)] for i in range(10)],
...     labels=[1.5 * i for i in range(10)], event_time_ms=list(range(10)),
...     ids=[str(i) for i in range(10)], feature_names=("x",), source="demo",
...     task="regression")
>>> split = split_by_time(ts, 0.2, 0.2)
>>> split_rows(split, "regression")
{'train': 6, 'valid': 2, 'holdout': 2}
>>> describe_split(split, "regression")
'train 6 rows (label mean 3.75, std 2.56); valid 2 rows (label mean 9.75, std 0.75); holdout 2 \
rows (label mean 12.8, std 0.75)'
"""

from __future__ import annotations

import numpy as np

from loopline.trainer.dataset import Split, TrainingSet


def _parts(split: Split) -> tuple[tuple[str, TrainingSet], ...]:
    return (("train", split.train), ("valid", split.valid), ("holdout", split.holdout))


def split_rows(split: Split, task: str = "binary") -> dict[str, int]:
    """Rows per part, and for a binary task positives per part (the manifest's ``rows``)."""
    out: dict[str, int] = {}
    for name, part in _parts(split):
        out[name] = len(part)
        if task == "binary":
            out[f"{name}_positives"] = part.positives
    return out


def describe_split(split: Split, task: str = "binary") -> str:
    """One progress line about the split: class balance, or the label's spread."""
    parts = []
    for name, part in _parts(split):
        if task == "regression":
            y = np.asarray(part.labels, dtype=np.float64)
            mean, std = (float(y.mean()), float(y.std())) if len(y) else (0.0, 0.0)
            parts.append(f"{name} {len(part)} rows (label mean {mean:.3g}, std {std:.3g})")
            continue
        rate = part.positives / max(len(part), 1)
        parts.append(f"{name} {len(part)} rows ({part.positives} positive, {rate:.2%})")
    return "; ".join(parts)


def golden_rows(scores: np.ndarray, n: int) -> list[int]:
    """Holdout rows serving re-scores after loading: the highest scores and a spread of the rest.

    >>> golden_rows(np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.05]), 4)
    [0, 1, 3, 5]
    """
    if n <= 0 or not len(scores):
        return []
    top = [int(i) for i in np.argsort(-scores, kind="stable")[: n // 2]]
    rest = [i for i in range(len(scores)) if i not in set(top)]
    k = min(n - len(top), len(rest))
    spread = [rest[int(j)] for j in np.linspace(0, len(rest) - 1, k)] if k else []
    return sorted(set(top) | set(spread))
