"""Deduplication by event id in the features flow's partition decoder: pure, no sockets.

A producer whose in-flight messages time out while the broker is down can land
them a second time at new offsets of the same partition; the decoder skips an
event whose id is among the partition's last ``dedup_window`` accepted ones.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest
from fraud_repo import BASE_MS, FRAUD_FEATURES, transaction, transaction_parser

from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings, StreamsSettings
from loopline.streams.common.records import SourceRecord
from loopline.streams.features.bytewax_flow import _resume_point
from loopline.streams.features.config import FeatureFlowConfig
from loopline.streams.features.decoding import (
    REASON_INVALID,
    REASON_LATE,
    DecodedBatch,
    EventDecoder,
    RecentIds,
)


def _records(docs: list[dict[str, object]], first_offset: int = 0) -> list[SourceRecord]:
    return [
        SourceRecord("t.events", 0, first_offset + n, b"k", json.dumps(d).encode())
        for n, d in enumerate(docs)
    ]


def _decoder(**kw: object) -> EventDecoder:
    args: dict[str, object] = {"shards": 4, "allowed_lateness_s": 60.0, **kw}
    return EventDecoder(FRAUD_FEATURES, transaction_parser(), **args)  # type: ignore[arg-type]


def _offsets(batch: DecodedBatch) -> list[int]:
    """The offsets of the accepted events (each feeds a card and a merchant update)."""
    return sorted({u[5] for items in batch.by_shard.values() for u in items})


def test_a_copy_within_the_window_is_skipped_counted_and_not_dead_lettered() -> None:
    dec = _decoder()
    first = dec.decode(_records([transaction(i) for i in range(10)]), now_ms=BASE_MS)
    # What the producer had in flight lands again, at new offsets, after new events.
    again = [transaction(i) for i in (3, 4, 5)] + [transaction(10), transaction(11)]
    second = dec.decode(_records(again, first_offset=10), now_ms=BASE_MS)
    assert (first.accepted, first.duplicates) == (10, 0)
    assert (second.records, second.accepted, second.duplicates) == (5, 2, 3)
    assert not second.dead_letters
    assert _offsets(second) == [13, 14]  # only the two new events reach the windows


def test_a_copy_in_the_same_batch_is_skipped() -> None:
    batch = _decoder().decode(
        _records([transaction(1), transaction(2), transaction(1), transaction(1)]), now_ms=BASE_MS
    )
    assert (batch.accepted, batch.duplicates, batch.dead_letters) == (2, 2, [])
    assert _offsets(batch) == [0, 1]


def test_a_copy_beyond_the_window_is_counted_again_the_documented_limit() -> None:
    dec = _decoder(dedup_window=3)
    dec.decode(
        _records([transaction(i) for i in range(5)]), now_ms=BASE_MS
    )  # e0, e1 left the window
    batch = dec.decode(_records([transaction(0), transaction(4)], first_offset=5), now_ms=BASE_MS)
    assert (batch.accepted, batch.duplicates) == (1, 1)
    assert _offsets(batch) == [5]  # e0 counted a second time; e4 skipped
    assert len(dec.recent) == 3  # bounded by count, whatever the traffic


def test_a_late_copy_of_an_accepted_event_is_a_duplicate_not_a_late_event() -> None:
    dec = _decoder(allowed_lateness_s=60.0)
    dec.decode(_records([transaction(0)]), now_ms=BASE_MS)
    dec.decode(_records([transaction(1, event_time=BASE_MS + 600_000)], 1), now_ms=BASE_MS)
    # e0 again, 10 min behind the partition's stream time: its original was counted.
    batch = dec.decode(_records([transaction(0)], first_offset=2), now_ms=BASE_MS)
    assert (batch.accepted, batch.duplicates, batch.dead_letters) == (0, 1, [])
    # A new event that old is late, as before.
    late = dec.decode(_records([transaction(2, event_time=BASE_MS)], 3), now_ms=BASE_MS)
    assert [d.reason for d in late.dead_letters] == [REASON_LATE]


def test_a_copy_of_a_dead_lettered_event_is_judged_again_like_its_original() -> None:
    dec = _decoder(allowed_lateness_s=60.0)
    bad = transaction(0, amount="12")  # invalid: a string amount
    late = transaction(1, event_time=BASE_MS - 3_600_000)
    first = dec.decode(_records([transaction(5), bad, late]), now_ms=BASE_MS)
    second = dec.decode(_records([bad, late], first_offset=3), now_ms=BASE_MS)
    reasons = [REASON_INVALID, REASON_LATE]
    assert [d.reason for d in first.dead_letters] == reasons
    assert [d.reason for d in second.dead_letters] == reasons  # the same verdict again
    assert (second.accepted, second.duplicates) == (0, 0)
    # A refused id never enters the window: a corrected re-send under it counts once.
    fixed = dec.decode(_records([transaction(0, event_time=BASE_MS + 5000)] * 2, 5), now_ms=BASE_MS)
    assert (fixed.accepted, fixed.duplicates) == (1, 1)


def test_window_zero_turns_deduplication_off() -> None:
    dec = _decoder(dedup_window=0)
    batch = dec.decode(_records([transaction(1)] * 3), now_ms=BASE_MS)
    assert (batch.accepted, batch.duplicates) == (3, 0)
    assert len(dec.recent) == 0 and dec.recent.snapshot() == ()


def test_the_window_survives_a_restart_from_its_snapshot() -> None:
    dec = _decoder(dedup_window=100)
    dec.decode(_records([transaction(i) for i in range(20)]), now_ms=BASE_MS)
    # What Bytewax stores: pickled with the offset and the stream time.
    state = pickle.loads(pickle.dumps((20, dec.clock.max_ms, dec.recent.snapshot())))
    offset, clock_ms, ids = _resume_point(state, start=0)
    resumed = _decoder(dedup_window=100, clock_ms=clock_ms, recent_ids=ids)
    batch = resumed.decode(
        _records([transaction(7), transaction(19), transaction(20)], offset), now_ms=BASE_MS
    )
    assert (batch.accepted, batch.duplicates) == (1, 2)
    assert resumed.recent.snapshot() == "\x00".join(f"e{i}" for i in range(21))


def test_a_snapshot_from_before_deduplication_resumes_with_an_empty_window() -> None:
    assert _resume_point((120, BASE_MS), start=0) == (120, BASE_MS, ())
    assert _resume_point(None, start=-2) == (-2, 0, ())
    offset, clock_ms, ids = _resume_point((120, BASE_MS), start=0)
    dec = _decoder(clock_ms=clock_ms, recent_ids=ids)
    batch = dec.decode(_records([transaction(1), transaction(1)], offset), now_ms=BASE_MS)
    assert (batch.accepted, batch.duplicates) == (1, 1)


def test_a_smaller_window_after_a_restart_keeps_the_newest_ids() -> None:
    w = RecentIds.restore(2, RecentIds(5, ["a", "b", "c"]).snapshot())
    assert sorted(w.ids) == ["b", "c"] and list(w.order) == ["b", "c"]
    assert len(RecentIds.restore(0, "a\x00b")) == 0


@pytest.mark.parametrize(
    "ids",
    [
        ["a", "b", "c"],
        [1, 2, 3],  # an integer event id field
        ["a\x00b", "c"],  # a NUL inside an id: kept as a tuple, not split apart
        [""],
        ["", "x"],
    ],
)
def test_snapshots_round_trip_whatever_the_ids(ids: list[object]) -> None:
    w = RecentIds(10, ids)  # type: ignore[arg-type]
    restored = RecentIds.restore(10, pickle.loads(pickle.dumps(w.snapshot())))
    assert list(restored.order) == ids and restored.ids == set(ids)


def test_the_setting_is_checked_and_reaches_the_flow() -> None:
    assert StreamsSettings().dedup_window == 100_000
    for bad in (-1, 10_000_001, 2.5, True):
        with pytest.raises(ConfigError, match=r"streams\.dedup_window"):
            StreamsSettings(dedup_window=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"streams\.dedup_window"):
        load_settings(env={"LOOPLINE_STREAMS__DEDUP_WINDOW": "-5"})
    settings = load_settings(env={"LOOPLINE_STREAMS__DEDUP_WINDOW": "0"})
    assert settings.streams.dedup_window == 0
    base = Settings()
    s = replace(base, streams=replace(base.streams, dedup_window=7))
    assert FeatureFlowConfig.from_settings(s).dedup_window == 7
