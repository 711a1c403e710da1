"""The shared feature engine: windows, ordering, expiry, replay, fingerprint."""

from __future__ import annotations

import dataclasses
import math
import pickle
import random

import pytest
from fraud_repo import CARD_VIEW, FRAUD_FEATURES

from loopline.contracts.errors import FeatureError
from loopline.featurecore.entity_state import EntityState, final_values, replay
from loopline.featurecore.features import Aggregation, EntityView, Window

VIEW = EntityView(
    entity="card",
    key_field="card_id",
    windows=(Window(600, 10),),
    aggregations=(
        Aggregation("n", "count", window_s=600),
        Aggregation("sum", "sum", "amount", 600),
        Aggregation("mean", "mean", "amount", 600),
        Aggregation("min", "min", "amount", 600),
        Aggregation("max", "max", "amount", 600),
        Aggregation("std", "std", "amount", 600),
        Aggregation("merchants", "distinct", "merchant_id", 600),
        Aggregation("last", "last", "amount", default=-1.0),
        Aggregation("last_t", "last_time"),
    ),
)


def _ev(amount: float, merchant: str = "m1") -> dict[str, object]:
    return {"card_id": "c", "amount": amount, "merchant_id": merchant}


def test_every_aggregation_over_one_window() -> None:
    st = EntityState(VIEW)
    for t, (a, m) in enumerate([(10.0, "m1"), (20.0, "m2"), (60.0, "m1")]):
        st.update(_ev(a, m), t=1000.0 + t)
    n, s, mean, lo, hi, std, merchants, last, last_t = st.values(1002.0)
    assert (n, s, mean, lo, hi, merchants, last, last_t) == (3, 90, 30, 10, 60, 2, 60, 1002)
    assert std == pytest.approx(math.sqrt(((20**2) + (10**2) + (30**2)) / 3))


def test_empty_window_gives_defaults() -> None:
    st = EntityState(VIEW)
    assert st.values(5000.0) == (0, 0, 0, 0, 0, 0, 0, -1.0, 0)


def test_events_leave_the_window_by_tile() -> None:
    st = EntityState(VIEW)
    st.update(_ev(5.0), t=1000.0)  # tile 16 (60 s tiles)
    st.update(_ev(7.0), t=1130.0)  # tile 18
    assert st.values(1130.0)[0] == 2
    # Tile 16 leaves when the current tile is 26: at t = 1560.
    assert st.expires_at(1130.0) == 1560.0
    assert st.values(1559.0)[:2] == (2, 12.0)
    assert st.values(1560.0)[:2] == (1, 7.0)
    assert st.expires_at(1560.0) == 1680.0
    assert st.values(1680.0)[:2] == (0, 0.0)
    assert st.is_empty(1680.0)


def test_out_of_order_events_count_in_their_own_tile() -> None:
    st = EntityState(VIEW)
    st.update(_ev(1.0), t=1300.0)
    st.update(_ev(2.0), t=1100.0)  # late but within the window
    assert st.values(1300.0)[:2] == (2, 3.0)
    assert st.values(1300.0)[-2:] == (1.0, 1300.0)  # "last" follows event time


def test_reads_do_not_change_results() -> None:
    rng = random.Random(7)
    events = [
        (_ev(rng.uniform(0, 100), f"m{rng.randint(0, 5)}"), 1000.0 + i * 17) for i in range(300)
    ]
    a, b = EntityState(VIEW), EntityState(VIEW)
    for ev, t in events:
        a.update(ev, t)
        b.update(ev, t)
        b.values(t + rng.uniform(0, 900))  # interleaved reads at arbitrary times
    assert a.values(events[-1][1]) == b.values(events[-1][1])


def test_state_survives_pickle() -> None:
    st = EntityState(CARD_VIEW)
    st.update({"card_id": "c", "amount": 3.0, "merchant_id": "m"}, t=50_000.0)
    clone = pickle.loads(pickle.dumps(st))
    clone.update({"card_id": "c", "amount": 4.0, "merchant_id": "n"}, t=50_010.0)
    st.update({"card_id": "c", "amount": 4.0, "merchant_id": "n"}, t=50_010.0)
    assert clone.values(50_010.0) == st.values(50_010.0)


def test_replay_is_point_in_time() -> None:
    events = [
        {
            "event_id": f"e{i}",
            "card_id": "c1",
            "merchant_id": "m1",
            "amount": 10.0 * (i + 1),
            "event_time": 1_700_000_000_000 + i * 1000,
        }
        for i in range(3)
    ]
    rows = list(replay(FRAUD_FEATURES, events))
    names = FRAUD_FEATURES.model_features
    count_10m = names.index("card.txn_count_10m")
    since_last = names.index("seconds_since_last_txn")
    amount = names.index("amount")
    # Each row sees only the events before it.
    assert [r.features[count_10m] for r in rows] == [0.0, 1.0, 2.0]
    assert [r.features[since_last] for r in rows] == [-1.0, 1.0, 1.0]
    assert [r.features[amount] for r in rows] == [10.0, 20.0, 30.0]
    final = final_values(FRAUD_FEATURES, events)
    at, values = final[("card", "c1")]
    assert at == 1_700_000_002.0 and values[0] == 3.0


def test_fingerprint_tracks_names_order_and_defaults() -> None:
    fs = FRAUD_FEATURES
    reordered = dataclasses.replace(fs, model_features=tuple(reversed(fs.model_features)))
    bumped = dataclasses.replace(fs, version=2)
    assert len({fs.fingerprint, reordered.fingerprint, bumped.fingerprint}) == 3
    assert dataclasses.replace(fs).fingerprint == fs.fingerprint


@pytest.mark.parametrize(
    "build",
    [
        lambda: Window(600, 7),
        lambda: Aggregation("x", "sum", "amount"),
        lambda: Aggregation("x", "count"),
        lambda: Aggregation("x", "last", window_s=60),
        lambda: EntityView("e", "k", (Window(60, 6),), (Aggregation("x", "count", window_s=120),)),
        lambda: dataclasses.replace(FRAUD_FEATURES, model_features=("card.nope",)),
    ],
)
def test_bad_definitions_are_refused(build) -> None:
    with pytest.raises(FeatureError):
        build()


def test_missing_request_field_is_an_error() -> None:
    with pytest.raises(FeatureError, match="amount"):
        FRAUD_FEATURES.assemble({}, {}, request_time=1.0)
