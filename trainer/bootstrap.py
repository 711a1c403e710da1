"""The first training set, built before any traffic was served.

Historical events are replayed in event-time order through the shared
feature code (:func:`loopline.featurecore.features.replay`): every row holds the
features as of just before its scored event, exactly what serving would have
read. Labels come from outcomes by event id; a scored event with no outcome
once the label maturity window has passed takes ``timeout_label`` (binary
fraud: 0, no chargeback arrived) or is left out (``None``: regression), and a
younger one without an outcome is left out (its label is not known yet).

>>> from loopline.featurecore.sample import SAMPLE, event
>>> fs = SAMPLE.feature_set()
>>> evs = [event(i, "u1", "i1", 10.0 * (i + 1), 1_000_000 + 60_000 * i) for i in range(4)]
>>> ts = build_training_set(fs, evs, [HistoricalOutcome("e1", 1, 1_100_000)],
...                         maturity_s=60, window_hours=24)
>>> ts.ids, ts.labels.tolist(), ts.dropped
(['e0', 'e1', 'e2'], [0, 1, 0], {'immature': 1})
>>> ts.features[1][0]  # user.buys_10m as of e1: only e0 came before it
np.float32(1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from loopline.featurecore.entity_state import replay
from loopline.featurecore.features import SOURCE_TAG, FeatureSet
from loopline.storage.offline_store import HOUR_MS
from loopline.trainer.dataset import TrainingSet
from loopline.trainer.history import HistoricalOutcome

SOURCE = "bootstrap"


def build_training_set(
    fs: FeatureSet,
    events: Iterable[Mapping[str, Any]],
    outcomes: Iterable[HistoricalOutcome],
    *,
    maturity_s: float,
    window_hours: float,
    as_of_ms: int | None = None,
    event_id_field: str = "event_id",
    time_fields: Mapping[str, str] | None = None,
    timeout_label: float | None = 0,
    task: str = "binary",
) -> TrainingSet:
    """Point-in-time rows for the scored events in the window ending at ``as_of_ms``.

    ``events`` are decoded records, of several sources when tagged with
    :data:`SOURCE_TAG` (``time_fields`` maps a source to its time field;
    the feature set's ``event_time_field`` otherwise). ``as_of_ms`` defaults
    to the newest event or outcome time: the end of the known history.
    Events before the window still feed the feature state.
    """
    times = time_fields or {}
    dropped: dict[str, int] = {}
    unique: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for e in events:
        source = e.get(SOURCE_TAG)
        key = (source, e.get(event_id_field) if _scored(fs, source) else id(e))
        if key in unique:
            dropped["duplicate_events"] = dropped.get("duplicate_events", 0) + 1
        else:
            unique[key] = e

    def time_of(e: Mapping[str, Any]) -> int:
        return int(e[times.get(e.get(SOURCE_TAG), fs.event_time_field)])

    ordered = sorted(unique.values(), key=lambda e: (time_of(e), str(e.get(event_id_field))))
    labels: dict[str, float] = {}
    newest_outcome = 0
    for o in sorted(outcomes, key=lambda o: o.event_time):
        if task == "binary":
            # A fraud report overrides any earlier "legitimate" outcome of the same event.
            labels[o.event_id] = max(o.label, labels.get(o.event_id, 0))
        else:  # the latest measurement wins
            labels[o.event_id] = o.label
        newest_outcome = max(newest_outcome, o.event_time)
    end = as_of_ms
    if end is None:
        end = max(time_of(ordered[-1]) if ordered else 0, newest_outcome)
    start = end - int(window_hours * HOUR_MS)
    mature_before = end - int(maturity_s * 1000)

    feats, ys, stamps, ids = [], [], [], []
    for row in replay(fs, ordered):
        t = int(row.event[fs.event_time_field])
        if t < start or t > end:
            if t > end:
                dropped["after_as_of"] = dropped.get("after_as_of", 0) + 1
            continue
        eid = str(row.event[event_id_field])
        label = labels.get(eid)
        if label is None:
            if t > mature_before:
                dropped["immature"] = dropped.get("immature", 0) + 1
                continue
            if timeout_label is None:
                dropped["no_outcome"] = dropped.get("no_outcome", 0) + 1
                continue
            label = timeout_label
        feats.append(row.features)
        ys.append(int(label) if task == "binary" else label)
        stamps.append(t)
        ids.append(eid)
    return TrainingSet.from_rows(
        features=feats if feats else [],
        labels=ys,
        event_time_ms=stamps,
        ids=ids,
        feature_names=tuple(fs.model_features),
        source=SOURCE,
        dropped=dropped,
        task=task,
    )


def _scored(fs: FeatureSet, source: Any) -> bool:
    return fs.scored_source is None or source is None or source == fs.scored_source
