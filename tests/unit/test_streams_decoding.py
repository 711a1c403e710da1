"""Parsing, validation, lateness and routing of events: pure, no sockets."""

from __future__ import annotations

import base64
import json
import random

import pytest
from fraud_repo import BASE_MS, FRAUD_FEATURES, transaction, transaction_parser

from loopline.contracts.errors import SchemaError
from loopline.featurecore.event_schema import EventParser
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.streams.common.records import SourceRecord
from loopline.streams.features.decoding import (
    REASON_INVALID,
    REASON_LATE,
    REASON_MALFORMED,
    EventDecoder,
    shard_of,
)


def _rec(doc: object, offset: int = 0, partition: int = 0) -> SourceRecord:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return SourceRecord("t.events", partition, offset, b"k", raw)


def _decoder(**kw: object) -> EventDecoder:
    args: dict[str, object] = {"shards": 8, "allowed_lateness_s": 60.0, **kw}
    return EventDecoder(FRAUD_FEATURES, transaction_parser(), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "reason", "words"),
    [
        (b"{not json", REASON_MALFORMED, "not valid JSON"),
        (b"[1, 2]", REASON_MALFORMED, "expected a JSON object"),
        (b"", REASON_MALFORMED, "empty message"),
        (b"\xff\xfe", REASON_MALFORMED, "not valid JSON"),
        (json.dumps(transaction(amount="12")).encode(), REASON_INVALID, "amount"),
        (json.dumps(transaction(amount=-1)).encode(), REASON_INVALID, "amount"),
        (json.dumps(transaction(amount=1e16)).encode(), REASON_INVALID, "out of range"),
        (json.dumps(transaction(card_id="")).encode(), REASON_INVALID, "card_id"),
        (json.dumps(transaction(event_time="yesterday")).encode(), REASON_INVALID, "event_time"),
        (
            json.dumps({k: v for k, v in transaction().items() if k != "merchant_id"}).encode(),
            "invalid",
            "merchant_id",
        ),
        (
            b'{"event_id":"e","card_id":"c","merchant_id":"m","amount":NaN,"event_time":5}',
            REASON_INVALID,
            "amount",
        ),
        (
            b'{"event_id":"e","card_id":"c","merchant_id":"m","amount":Infinity,"event_time":5}',
            REASON_INVALID,
            "amount",
        ),
    ],
)
def test_bad_records_become_dead_letters_with_origin(raw: bytes, reason: str, words: str) -> None:
    batch = _decoder().decode([_rec(raw, offset=41, partition=3)], now_ms=BASE_MS)
    assert batch.accepted == 0 and not batch.by_shard
    (dl,) = batch.dead_letters
    assert (dl.source_topic, dl.partition, dl.offset, dl.reason) == ("t.events", 3, 41, reason)
    assert words in dl.error
    assert dl.original_value() == raw
    assert base64.b64decode(dl.key_b64) == b"k"


def test_one_bad_record_loses_nothing_else() -> None:
    recs = [_rec(transaction(i), offset=i) for i in range(10)]
    recs.insert(4, _rec(b"garbage", offset=99))
    batch = _decoder().decode(recs, now_ms=BASE_MS)
    assert batch.accepted == 10 and batch.records == 11
    assert [d.offset for d in batch.dead_letters] == [99]
    updates = [u for items in batch.by_shard.values() for u in items]
    assert sorted(u[5] for u in updates) == sorted([*range(10), *range(10)])


def test_each_event_updates_its_card_and_its_merchant() -> None:
    batch = _decoder(shards=1).decode([_rec(transaction(3), offset=5)], now_ms=BASE_MS)
    (items,) = batch.by_shard.values()
    assert [(vi, eid, t) for vi, eid, t, _r, _p, _o in items] == [
        (0, "c3", BASE_MS + 3000),
        (1, "m0", BASE_MS + 3000),
    ]
    assert items[0][3]["amount"] == 13.5


def test_routing_is_stable_and_spreads() -> None:
    # Same shard in every process and run (not Python's salted hash).
    assert shard_of("card:c1", 64) == shard_of("card:c1", 64) == 26
    counts = [0] * 16
    for i in range(16_000):
        counts[shard_of(f"card:c{i}", 16)] += 1
    assert min(counts) > 800 and max(counts) < 1200


def test_lateness_is_judged_per_partition_against_its_stream_time() -> None:
    dec = _decoder(allowed_lateness_s=60.0)
    recs = [
        _rec(transaction(0, event_time=BASE_MS + 100_000), offset=0),
        _rec(
            transaction(1, event_time=BASE_MS + 40_000), offset=1
        ),  # exactly at the watermark: kept
        _rec(transaction(2, event_time=BASE_MS + 39_999), offset=2),  # 1 ms too late
        _rec(transaction(3, event_time=BASE_MS + 160_000), offset=3),
        _rec(transaction(4, event_time=BASE_MS + 99_999), offset=4),  # late after the clock moved
    ]
    batch = dec.decode(recs, now_ms=BASE_MS)
    assert batch.accepted == 3
    late = batch.dead_letters
    assert [(d.offset, d.reason) for d in late] == [(2, REASON_LATE), (4, REASON_LATE)]
    assert "watermark" in late[0].error
    # The stream time survives as state (snapshotted with the offset).
    assert dec.clock.max_ms == BASE_MS + 160_000
    resumed = _decoder(allowed_lateness_s=60.0, clock_ms=dec.clock.max_ms)
    again = resumed.decode([_rec(transaction(5, event_time=BASE_MS + 99_999))], now_ms=BASE_MS)
    assert [d.reason for d in again.dead_letters] == [REASON_LATE]


def test_far_future_event_times_are_refused_not_allowed_to_poison_the_clock() -> None:
    dec = _decoder(max_future_s=3600.0)
    recs = [
        _rec(transaction(0, event_time=BASE_MS * 1000), offset=0),  # microseconds by mistake
        _rec(transaction(1), offset=1),
    ]
    batch = dec.decode(recs, now_ms=BASE_MS)
    assert [(d.offset, d.reason) for d in batch.dead_letters] == [(0, REASON_INVALID)]
    assert batch.accepted == 1


def test_fast_path_accepts_exactly_what_the_declared_schema_accepts() -> None:
    parser = transaction_parser()
    rng = random.Random(5)
    variants: list[object] = [
        "x",
        "",
        0,
        -1,
        1.5,
        1e20,
        True,
        None,
        [],
        {},
        1_700_000_000_000,
        1_700_000_000_000.0,
        1.5e12,
    ]
    fields = ["event_id", "card_id", "merchant_id", "amount", "event_time", "extra_field"]
    for _ in range(3000):
        doc = transaction(rng.randrange(100))
        for _ in range(rng.randrange(3)):
            f = rng.choice(fields)
            if rng.random() < 0.2:
                doc.pop(f, None)
            else:
                doc[f] = rng.choice(variants)
        raw = json.dumps(doc).encode()
        try:  # the field-by-field path, which also words the errors
            expected: dict[str, object] | None = json.loads(raw)
            parser.check(expected)  # type: ignore[arg-type]
        except SchemaError:
            expected = None
        try:
            got = parser.parse(raw)
        except SchemaError:
            got = None
        assert got == expected, raw


def test_extra_fields_are_kept_for_other_feature_sets() -> None:
    rec = transaction_parser().parse(json.dumps(transaction(channel="web")).encode())
    assert rec["channel"] == "web"


def test_another_source_is_validated_on_its_own_declared_fields() -> None:
    # The delivery example's courier pings: bounds, allowed values and int keys of its own.
    root = builtin_example("delivery")
    assert root is not None, "examples/delivery is missing from this checkout"
    project = load_project(root)
    fs, pings = project.feature_set(), project.source("pings")
    keys = ("courier_id", "zone_id")
    dec = EventDecoder(fs, EventParser(pings, keys), shards=1, allowed_lateness_s=60.0)

    def ping(i: int, **fields: object) -> dict[str, object]:
        return {"ping_id": f"p{i}", "zone_id": 3, "at": BASE_MS, **fields}

    ok = ping(1, courier_id="k1", speed_kmh=20.0, status="idle")
    cases = [
        _rec(ok, offset=0),
        _rec(ping(2, speed_kmh=20.0, status="idle"), offset=1),  # no courier_id
        _rec(ping(3, courier_id="k1", speed_kmh="fast", status="idle"), offset=2),
        _rec(ping(4, courier_id="k1", speed_kmh=20.0, status="parked"), offset=3),
        _rec(ping(5, courier_id="k1", speed_kmh=200.0, status="idle"), offset=4),
    ]
    batch = dec.decode(cases, now_ms=BASE_MS)
    assert batch.accepted == 1
    assert [(d.offset, d.reason) for d in batch.dead_letters] == [
        (1, REASON_INVALID),
        (2, REASON_INVALID),
        (3, REASON_INVALID),
        (4, REASON_INVALID),
    ]
    errors = [d.error for d in batch.dead_letters]
    assert errors == [
        "pings: missing required field 'courier_id'",
        "pings.speed_kmh: expected a number, got str 'fast'",
        "pings.status: 'parked' is not one of ('idle', 'delivering')",
        "pings.speed_kmh: must be <= 150",
    ]
    (items,) = batch.by_shard.values()
    # Every view over pings gets the one valid ping, keyed by its own entity.
    views = {v.entity: i for i, v in enumerate(fs.views)}
    expected = [(views["courier"], "k1"), (views["zone_traffic"], "3")]
    assert sorted((vi, eid) for vi, eid, *_ in items) == sorted(expected)


def test_same_verdicts_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopline.featurecore import event_schema

    raws = [
        json.dumps(transaction(1)).encode(),
        b"{not json",
        b"\xff\xfe",
        b'{"event_id":"e","card_id":"c","merchant_id":"m","amount":NaN,"event_time":5}',
        b'{"event_id":"e","card_id":"c","merchant_id":"m","amount":1e400,"event_time":5}',
        json.dumps(transaction(2, event_id=2**70)).encode(),
        json.dumps(transaction(3, amount=-2)).encode(),
    ]

    def verdicts() -> list[str]:
        batch = _decoder().decode([_rec(r, offset=i) for i, r in enumerate(raws)], now_ms=BASE_MS)
        by_offset = {d.offset: d.reason for d in batch.dead_letters}
        return [by_offset.get(i, "ok") for i in range(len(raws))]

    with_fast = verdicts()
    monkeypatch.setattr(event_schema, "_fast_loads", lambda raw: json.loads(raw.decode()))
    expected = ["ok", "malformed", "malformed", "invalid", "invalid", "invalid", "invalid"]
    assert verdicts() == with_fast == expected
