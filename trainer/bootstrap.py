"""The first training set, built before any traffic was served.

Historical transactions are replayed in event-time order through the shared
feature code (:func:`loopline.contracts.features.replay`): every row holds the
features as of just before its event, exactly what serving would have read.
Labels come from outcomes by ``event_id``; an event with no outcome once the
label maturity window has passed is legitimate (no chargeback arrived), and a
younger one without an outcome is left out (its label is not known yet).

>>> from loopline.contracts.fraud import FRAUD_FEATURES
>>> from loopline.contracts.schemas import Outcome, Transaction
>>> txs = [Transaction(f"e{i}", "c1", "m1", 10.0 * (i + 1), 1_000_000 + 60_000 * i)
...        for i in range(4)]
>>> ts = build_training_set(FRAUD_FEATURES, txs, [Outcome("e1", 1, 1_100_000)],
...                         maturity_s=60, window_hours=24)
>>> ts.ids, ts.labels.tolist(), ts.dropped
(['e0', 'e1', 'e2'], [0, 1, 0], {'immature': 1})
>>> ts.features[1][0]  # card.txn_count_10m as of e1: only e0 came before it
np.float32(1.0)
"""

from __future__ import annotations

from collections.abc import Iterable

from loopline.contracts.features import FeatureSet, replay
from loopline.contracts.offline_store import HOUR_MS
from loopline.contracts.schemas import Outcome, Transaction
from loopline.trainer.dataset import TrainingSet

SOURCE = "bootstrap"


def build_training_set(
    fs: FeatureSet,
    transactions: Iterable[Transaction],
    outcomes: Iterable[Outcome],
    *,
    maturity_s: float,
    window_hours: float,
    as_of_ms: int | None = None,
) -> TrainingSet:
    """Point-in-time rows for the events in the window ending at ``as_of_ms``.

    ``as_of_ms`` defaults to the newest event or outcome time: the end of the
    known history. Events before the window still feed the feature state.
    """
    dropped: dict[str, int] = {}
    unique: dict[str, Transaction] = {}
    for tx in transactions:
        if tx.event_id in unique:
            dropped["duplicate_events"] = dropped.get("duplicate_events", 0) + 1
        else:
            unique[tx.event_id] = tx
    events = sorted(unique.values(), key=lambda t: (t.event_time, t.event_id))
    labels: dict[str, int] = {}
    newest_outcome = 0
    for o in outcomes:
        # A fraud report overrides any earlier "legitimate" outcome of the same event.
        labels[o.event_id] = max(o.label, labels.get(o.event_id, 0))
        newest_outcome = max(newest_outcome, o.event_time)
    end = as_of_ms
    if end is None:
        end = max(events[-1].event_time if events else 0, newest_outcome)
    start = end - int(window_hours * HOUR_MS)
    mature_before = end - int(maturity_s * 1000)

    feats, ys, times, ids = [], [], [], []
    for row in replay(fs, (e.as_record() for e in events)):
        t = int(row.event["event_time"])
        if t < start or t > end:
            if t > end:
                dropped["after_as_of"] = dropped.get("after_as_of", 0) + 1
            continue
        eid = str(row.event["event_id"])
        label = labels.get(eid)
        if label is None:
            if t > mature_before:
                dropped["immature"] = dropped.get("immature", 0) + 1
                continue
            label = 0
        feats.append(row.features)
        ys.append(label)
        times.append(t)
        ids.append(eid)
    return TrainingSet.from_rows(
        features=feats if feats else [],
        labels=ys,
        event_time_ms=times,
        ids=ids,
        feature_names=tuple(fs.model_features),
        source=SOURCE,
        dropped=dropped,
    )
