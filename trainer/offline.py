"""Read a rolling window of labeled examples from the offline store.

Layout and schema are :mod:`loopline.storage.offline_store`'s. Only rows
computed with the feature set's current fingerprint are usable: a model must
train on the vector it will be served. The label column may hold ints or
floats: a binary task keeps the 0/1 rows, a regression task the finite ones.
Rows served with features of an excluded status (by default ``defaulted``: the
store could not answer, so the vector held defaults, not the entity's values)
are left out and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopline.featurecore.features import FeatureSet
from loopline.rollout.plan import shadow_request_id
from loopline.storage.offline_store import (
    HOUR_MS,
    data_files,
    hour_start_ms,
    partitions,
    read_table,
)
from loopline.trainer.dataset import TrainingSet

COLUMNS = [
    "request_id",
    "event_id",
    "fingerprint",
    "features",
    "label",
    "event_time",
    "labeled_at_ms",
    "feature_status",
]
SOURCE = "offline-store"
SHADOW_SUFFIX = shadow_request_id("")


def latest_hour_end_ms(root: str | Path) -> int | None:
    """The end of the newest partition, or None when the store is empty."""
    parts = partitions(root)
    return hour_start_ms(parts[-1]) + HOUR_MS if parts else None


def load_window(
    root: str | Path,
    fs: FeatureSet,
    window_hours: float,
    end_ms: int | None = None,
    *,
    task: str = "binary",
    exclude_status: Sequence[str] = ("defaulted",),
) -> TrainingSet:
    """Labeled rows with event time in ``[end - window, end)``.

    ``end_ms`` defaults to the end of the newest partition, so a store that
    stopped receiving data still yields its latest window.
    """
    end = end_ms if end_ms is not None else latest_hour_end_ms(root)
    names = tuple(fs.model_features)
    if end is None:
        return _empty(names, task)
    start = end - int(window_hours * HOUR_MS)
    files = [f for part in partitions(root, start, end) for f in data_files(part)]
    if not files:
        return _empty(names, task)
    table = pa.concat_tables([read_table(f, COLUMNS) for f in files])
    dropped: dict[str, int] = {}

    def keep(mask: pa.ChunkedArray | pa.Array, reason: str) -> None:
        nonlocal table
        kept = table.filter(mask)
        if len(kept) < len(table):
            dropped[reason] = dropped.get(reason, 0) + len(table) - len(kept)
        table = kept

    t = table["event_time"]
    keep(pc.and_(pc.greater_equal(t, start), pc.less(t, end)), "outside_window")
    keep(pc.equal(table["fingerprint"], fs.fingerprint), "other_fingerprint")
    keep(pc.equal(pc.list_value_length(table["features"]), len(names)), "bad_length")
    keep(_usable_labels(table["label"], task), "bad_label")
    # A shadow score repeats its event's features and label under another
    # request id; training on both would count the event twice.
    keep(pc.invert(pc.ends_with(table["request_id"], SHADOW_SUFFIX)), "shadow")
    for status in exclude_status:
        keep(pc.invert(_served_with(table["feature_status"], status)), f"features_{status}")
    table = _latest_per_request(table, dropped)
    if len(table):
        x = pc.list_flatten(table["features"]).to_numpy().reshape(len(table), len(names))
    else:
        x = np.zeros((0, len(names)))
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        dropped["non_finite"] = int((~finite).sum())
    return TrainingSet.from_rows(
        features=x[finite],
        labels=table["label"].to_numpy()[finite],
        event_time_ms=table["event_time"].to_numpy()[finite],
        ids=[i for i, ok in zip(table["event_id"].to_pylist(), finite, strict=True) if ok],
        feature_names=names,
        source=SOURCE,
        dropped=dropped,
        task=task,
    )


def _served_with(column: pa.ChunkedArray, status: str) -> pa.Array:
    """Per row: did any feature serve with ``status``? (Null maps, older files: no.)"""
    entries = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
    lists = pc.cast(column.combine_chunks(), entries)
    hit = pc.equal(pc.struct_field(pc.list_flatten(lists), "value"), status)
    rows = pc.list_parent_indices(lists).to_numpy()[hit.to_numpy(zero_copy_only=False)]
    out = np.zeros(len(lists), dtype=bool)
    out[rows] = True
    return pa.array(out)


def _usable_labels(labels: pa.ChunkedArray, task: str) -> pa.ChunkedArray:
    """Rows whose label the task can train on (null labels never)."""
    as_float = pc.cast(labels, pa.float64())
    if task == "regression":
        return pc.fill_null(pc.is_finite(as_float), False)
    return pc.fill_null(pc.is_in(as_float, pa.array([0.0, 1.0])), False)


def _latest_per_request(table: pa.Table, dropped: dict[str, int]) -> pa.Table:
    """One row per request_id (the latest label wins): a writer retried after a crash."""
    if not len(table):
        return table
    order = pc.sort_indices(
        table, sort_keys=[("request_id", "ascending"), ("labeled_at_ms", "descending")]
    ).to_numpy()
    ids = table["request_id"].to_numpy(zero_copy_only=False)[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    if not first.all():
        dropped["duplicates"] = int((~first).sum())
    return table.take(pa.array(np.sort(order[first])))


def _empty(names: tuple[str, ...], task: str) -> TrainingSet:
    return TrainingSet.from_rows(
        features=np.zeros((0, len(names))),
        labels=[],
        event_time_ms=[],
        ids=[],
        feature_names=names,
        source=SOURCE,
        task=task,
    )
