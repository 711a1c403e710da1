"""Shard aggregation: online values equal offline replay; refresh; snapshots."""

from __future__ import annotations

import json
import pickle
import random
from typing import Any

import pytest
from fraud_repo import FRAUD_FEATURES, transaction_parser

from loopline.contracts.errors import FeatureError
from loopline.contracts.redis_layout import RedisLayout, unpack
from loopline.featurecore.entity_state import EntityState, final_values
from loopline.streams.common.records import SourceRecord
from loopline.streams.features.aggregation import FeatureShard, FeatureWrite
from loopline.streams.features.decoding import EventDecoder

FS = FRAUD_FEATURES
LAYOUT = RedisLayout("t")
BASE_MS = 1_700_000_000_000


def _events(n: int, seed: int, span_ms: int = 5 * 60_000) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "event_id": f"e{i}",
            "card_id": f"c{rng.randrange(40)}",
            "merchant_id": f"m{rng.randrange(6)}",
            "amount": round(rng.uniform(0.5, 900.0), 2),
            "event_time": BASE_MS + rng.randrange(span_ms),
        }
        for i in range(n)
    ]


def _updates(events: list[dict[str, Any]], shards: int) -> list[list[Any]]:
    """Events through a partition decoder, per shard (lateness off: any order)."""
    dec = EventDecoder(
        FS, transaction_parser(), shards=shards, allowed_lateness_s=10**9, max_future_s=0
    )
    recs = [SourceRecord("ev", 0, i, None, json.dumps(e).encode()) for i, e in enumerate(events)]
    batch = dec.decode(recs)
    assert batch.accepted == len(events)
    return [batch.by_shard.get(s, []) for s in range(shards)]


def _store(writes: list[FeatureWrite], into: dict[str, bytes]) -> None:
    """What Redis ends up holding: the write-if-newer rule."""
    for w in writes:
        old = into.get(w.key)
        if old is None or unpack(w.value)[0] >= unpack(old)[0]:
            into[w.key] = w.value


def _expected(events: list[dict[str, Any]]) -> dict[str, bytes]:
    from loopline.contracts.redis_layout import pack

    return {
        LAYOUT.feature_key(FS, entity, eid): pack(at, values)
        for (entity, eid), (at, values) in final_values(FS, events).items()
    }


def test_shards_in_batches_equal_offline_final_values() -> None:
    events = _events(3000, seed=1)
    store: dict[str, bytes] = {}
    for items in _updates(events, shards=5):
        shard = FeatureShard(FS, LAYOUT)
        for i in range(0, len(items), 97):
            _store(shard.apply(items[i : i + 97]).writes, store)
    assert store == _expected(events)


def test_arrival_order_across_partitions_does_not_change_a_bit() -> None:
    # A merchant hears from every partition; any interleaving gives the same bytes.
    events = _events(2000, seed=2)
    (items,) = _updates(events, shards=1)
    rng = random.Random(3)
    rng.shuffle(items)
    shard = FeatureShard(FS, LAYOUT)
    store: dict[str, bytes] = {}
    for i in range(0, len(items), 50):
        _store(shard.apply(items[i : i + 50]).writes, store)
    assert store == _expected(events)


def test_one_write_per_entity_per_batch_with_its_oldest_event() -> None:
    rec = {"card_id": "c1", "merchant_id": "m1", "amount": 1.0}
    shard = FeatureShard(FS, LAYOUT)
    out = shard.apply([(0, "c1", BASE_MS + t, rec, 0, t) for t in (500, 100, 900)])
    (w,) = out.writes
    assert w.oldest_ms == BASE_MS + 100
    assert w.valid_at == (BASE_MS + 900) / 1000
    assert unpack(w.value)[1][0] == 3.0


def test_refresh_writes_values_as_windows_slide() -> None:
    events = [
        {
            "event_id": "1",
            "card_id": "a",
            "merchant_id": "m1",
            "amount": 10.0,
            "event_time": BASE_MS,
        },
        {
            "event_id": "2",
            "card_id": "a",
            "merchant_id": "m1",
            "amount": 20.0,
            "event_time": BASE_MS + 30_000,
        },
    ]
    (items,) = _updates(events, shards=1)
    shard = FeatureShard(FS, LAYOUT)
    store: dict[str, bytes] = {}
    _store(shard.apply(items).writes, store)
    key = LAYOUT.feature_key(FS, "card", "a")
    assert unpack(store[key])[1][0] == 2.0
    # Another entity's event 2 h later moves the shard clock past a's 10 min and 1 h windows.
    later = {"event_id": "3", "card_id": "b", "merchant_id": "m2", "amount": 1.0}
    later["event_time"] = BASE_MS + 7_200_000
    (more,) = _updates([later], shards=1)
    out = shard.apply(more)
    _store(out.writes, store)
    assert out.refreshed >= 2  # card a and merchant m1
    valid_at, values = unpack(store[key])
    names = [a.name for a in FS.view("card").aggregations]
    got = dict(zip(names, values, strict=True))
    assert got["txn_count_10m"] == 0 and got["txn_count_1h"] == 0
    assert got["txn_count_24h"] == 2 and got["amount_sum_24h"] == 30.0
    # Never valid past what the shard has seen, and exactly the offline state then.
    assert BASE_MS / 1000 + 3300 <= valid_at <= shard.clock_ms / 1000  # 1 h in 5 min tiles
    st = EntityState(FS.view("card"))
    for e in events:
        st.update(e, e["event_time"] / 1000)
    assert values == st.values(valid_at)


def test_event_after_a_refresh_is_written_valid_at_the_later_time() -> None:
    rec = {"card_id": "a", "merchant_id": "m", "amount": 5.0}
    shard = FeatureShard(FS, LAYOUT)
    shard.apply([(0, "a", BASE_MS, rec, 0, 0)])
    out = shard.apply([(0, "z", BASE_MS + 900_000, {**rec, "card_id": "z"}, 0, 1)])
    refreshed = {w.key: w.valid_at for w in out.writes}
    key = LAYOUT.feature_key(FS, "card", "a")
    # An out-of-order event for a, older than its refresh time but not late.
    out = shard.apply([(0, "a", BASE_MS + 500_000, rec, 0, 2)])
    (w,) = out.writes
    assert w.valid_at == refreshed[key] > (BASE_MS + 500_000) / 1000
    assert unpack(w.value)[1][:2] == (1.0, 5.0)  # only the new event is in the 10 min window


def test_snapshot_restore_continues_exactly() -> None:
    events = _events(2000, seed=4, span_ms=3 * 3600_000)
    (items,) = _updates(events, shards=1)
    whole = FeatureShard(FS, LAYOUT)
    store_a: dict[str, bytes] = {}
    for i in range(0, len(items), 100):
        _store(whole.apply(items[i : i + 100]).writes, store_a)
    first = FeatureShard(FS, LAYOUT)
    store_b: dict[str, bytes] = {}
    for i in range(0, 1200, 100):
        _store(first.apply(items[i : i + 100]).writes, store_b)
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    resumed = FeatureShard(FS, LAYOUT, snapshot=snap)
    for i in range(1200, len(items), 100):
        _store(resumed.apply(items[i : i + 100]).writes, store_b)
    assert store_b == store_a
    assert resumed.clock_ms == whole.clock_ms and len(resumed) == len(whole)


def test_snapshot_repickles_only_changed_entities() -> None:
    rec = {"card_id": "a", "merchant_id": "m", "amount": 5.0}
    shard = FeatureShard(FS, LAYOUT)
    shard.apply([(0, "a", BASE_MS, rec, 0, 0), (0, "b", BASE_MS, rec, 0, 1)])
    first = shard.snapshot()["entities"]
    shard.apply([(0, "b", BASE_MS + 1000, rec, 0, 2)])
    second = shard.snapshot()["entities"]
    key_a, key_b = (LAYOUT.feature_key(FS, "card", c) for c in "ab")
    assert second[key_a] is first[key_a]
    assert second[key_b] != first[key_b]
    assert first is not second  # each snapshot is its own immutable copy


def test_snapshot_of_another_feature_set_is_refused() -> None:
    import dataclasses

    shard = FeatureShard(FS, LAYOUT)
    snap = shard.snapshot()
    other = dataclasses.replace(FS, version=FS.version + 1)
    with pytest.raises(FeatureError, match="fresh recovery directory"):
        FeatureShard(other, LAYOUT, snapshot=snap)


def test_idle_entities_are_evicted_after_the_horizon() -> None:
    rec = {"card_id": "a", "merchant_id": "m", "amount": 5.0}
    shard = FeatureShard(FS, LAYOUT, evict_after_s=2 * 86400)
    shard.apply([(0, "a", BASE_MS, rec, 0, 0)])
    shard.apply([(0, "b", BASE_MS + 86400_000 * 1.5, rec, 0, 1)])
    assert shard.state(LAYOUT.feature_key(FS, "card", "a")) is not None
    out = shard.apply([(0, "b", BASE_MS + 86400_000 * 2 + 1, rec, 0, 2)])
    assert out.evicted == 1
    assert shard.state(LAYOUT.feature_key(FS, "card", "a")) is None
    assert LAYOUT.feature_key(FS, "card", "a") not in shard.snapshot()["entities"]


def test_an_update_the_engine_refuses_is_returned_not_raised() -> None:
    shard = FeatureShard(FS, LAYOUT)
    bad = (0, "a", BASE_MS, {"card_id": "a", "merchant_id": "m"}, 2, 17)
    good = (0, "b", BASE_MS, {"card_id": "b", "merchant_id": "m", "amount": 1.0}, 2, 18)
    out = shard.apply([bad, good])
    assert [(u[4], u[5]) for u, _err in out.rejected] == [(2, 17)]
    assert [w.key[-1] for w in out.writes] == ["b"]
    assert shard.state(LAYOUT.feature_key(FS, "card", "a")) is None


@pytest.mark.parametrize("evict_after_s", [0.0, 5400.0])
def test_every_stored_value_is_current_as_of_the_shard_clock(evict_after_s: float) -> None:
    rng = random.Random(21)
    shard = FeatureShard(FS, LAYOUT, evict_after_s=evict_after_s)
    store: dict[str, bytes] = {}
    t = BASE_MS
    for _ in range(120):
        batch = []
        for _ in range(rng.randrange(1, 30)):
            # Mostly forward in time, sometimes back (within a minute), sometimes a jump.
            t += rng.choice([rng.randrange(0, 20_000), -rng.randrange(0, 60_000), 1_500_000])
            rec = {"card_id": f"c{rng.randrange(12)}", "merchant_id": f"m{rng.randrange(4)}"}
            rec["amount"] = round(rng.uniform(1, 300), 2)
            batch.append((0, rec["card_id"], t, rec, 0, 0))
            batch.append((1, rec["merchant_id"], t, rec, 0, 0))
        _store(shard.apply(batch).writes, store)
        clock = shard.clock_ms / 1000
        for key, raw in store.items():
            st = shard.state(key)
            if st is None:  # evicted: idle past the horizon, nothing left in any window
                assert evict_after_s
                continue
            valid_at, values = unpack(raw)
            assert st.last_time <= valid_at <= clock
            assert values == st.values(valid_at) == st.values(clock), key
    # A day and a half later one event: every other entity's windows have emptied.
    late = {"card_id": "z", "merchant_id": "mz", "amount": 1.0}
    t += 36 * 3600_000
    _store(shard.apply([(0, "z", t, late, 0, 0), (1, "mz", t, late, 0, 0)]).writes, store)
    for key, raw in store.items():
        if key.endswith((":z", ":mz")):
            continue
        view = FS.view("card" if ":card:" in key else "merchant")
        values = dict(zip(view.names, unpack(raw)[1], strict=True))
        assert values["txn_count_24h"] == 0  # refreshed down to empty windows
        assert (shard.state(key) is None) == bool(evict_after_s)


def test_final_store_with_refreshes_does_not_depend_on_arrival_or_batching() -> None:
    # Hours of events: refreshes happen. Any interleaving of partitions and any
    # batching (other worker counts, a restart) must end in the same bytes.
    events = _events(3000, seed=8, span_ms=5 * 3600_000)
    events.sort(key=lambda e: e["event_time"])
    (items,) = _updates(events, shards=1)
    stores = []
    for seed in range(4):
        rng = random.Random(seed)
        # Two "partitions" interleaved at random, each in its own order.
        parts = [items[0::2], items[1::2]]
        merged: list[Any] = []
        while any(parts):
            p = rng.choice([i for i, part in enumerate(parts) if part])
            k = rng.randrange(1, 400)  # partitions drift up to ~40 min apart
            merged.extend(parts[p][:k])
            parts[p] = parts[p][k:]
        shard = FeatureShard(FS, LAYOUT)
        store: dict[str, bytes] = {}
        i = 0
        while i < len(merged):
            n = rng.randrange(1, 200)
            _store(shard.apply(merged[i : i + n]).writes, store)
            i += n
        stores.append(store)
    assert all(s == stores[0] for s in stores[1:])
    assert stores[0] != _expected(events)  # refreshes did move values past the last events


def test_prepickled_entities_make_the_same_snapshot() -> None:
    events = _events(600, seed=9)
    (items,) = _updates(events, shards=1)
    eager, lazy = FeatureShard(FS, LAYOUT), FeatureShard(FS, LAYOUT)
    for i in range(0, len(items), 50):
        eager.apply(items[i : i + 50])
        lazy.apply(items[i : i + 50])
        assert eager.prepickle(quiet_s=0.0, budget=30) <= 30
    assert eager.prepickle(quiet_s=3600.0) == 0  # nothing quiet that long
    assert eager.snapshot() == lazy.snapshot()
    # Changed after being pickled: pickled again at the snapshot.
    key = LAYOUT.feature_key(FS, "card", items[0][1])
    eager.prepickle(quiet_s=0.0, budget=10**6)
    before = eager.snapshot()["entities"][key]
    eager.apply([(0, items[0][1], BASE_MS + 299_000, items[0][3], 0, 0)])
    assert eager.snapshot()["entities"][key] != before
