"""``loopline backfill`` rebuilds a wiped online store from the events topic, exactly.

The flow only rewrites an entity when an event touches it, so after Redis
lost its data (killed without persistence) the backfill is what brings every
entity back: byte for byte the offline replay, never over a newer value.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from features_support import FeaturesRun, events, expected_store, produce_events, stored

from loopline.contracts.errors import StackError
from loopline.contracts.redis_layout import pack, unpack
from loopline.streams.common.kafka_io import list_partitions
from loopline.streams.features.backfill import backfill


def test_backfill_rebuilds_the_store_exactly_and_never_over_a_newer_value(
    features_run: FeaturesRun,
) -> None:
    run = features_run
    good = events(3000, seed=21)
    produce_events(
        run.settings, run.topics.events, [*good[:1500], (b"c1", b"{not json"), *good[1500:]]
    )
    settings = replace(
        run.settings, streams=replace(run.settings.streams, redis_key_prefix=run.key_prefix)
    )
    lines: list[str] = []
    report = backfill(settings, progress=lines.append)
    expected = expected_store(good, run.key_prefix)
    assert stored(run.redis, run.key_prefix) == expected
    assert (report.records, report.events, report.skipped) == (3001, 3000, 1)
    assert report.written == report.entities == len(expected)
    assert lines[-1].startswith("backfill: done") and "3,000 events applied" in lines[-1]

    # A value the live flow wrote later (newer valid_at) is left alone; the rest is rewritten.
    key = sorted(expected)[0]
    at, values = unpack(expected[key])
    newer = pack(at + 60, tuple(v + 1 for v in values))
    run.redis.set(key, newer)
    run.redis.delete(sorted(expected)[1])
    again = backfill(settings, progress=lines.append)
    assert again.written == again.entities - 1
    assert run.redis.get(key) == newer
    assert stored(run.redis, run.key_prefix) == {**expected, key: newer}


def test_listing_partitions_waits_for_the_broker_then_names_it() -> None:
    # A closed port: the flow's start retries instead of dying at the first refusal.
    with pytest.raises(StackError, match=r"within 2 s.*kafka\.bootstrap_servers"):
        list_partitions({"bootstrap.servers": "127.0.0.1:9"}, "t", timeout_s=2.0)
