"""Topic payloads are validated at the edge with precise messages."""

from __future__ import annotations

import json

import pytest

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import (
    DeadLetter,
    PredictionLog,
    Transaction,
    decode,
    encode,
)

GOOD = {"event_id": "e1", "card_id": "c1", "merchant_id": "m1", "amount": 9.5, "event_time": 17}


def _raw(**changes: object) -> bytes:
    doc = {**GOOD, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (_raw(amount=...), "missing required field 'amount'"),
        (_raw(amount=True), "Transaction.amount: expected a number"),
        (_raw(amount=-1), "Transaction.amount: must be >= 0"),
        (_raw(card_id=5), "Transaction.card_id: expected a string"),
        (_raw(card_id=""), "Transaction.card_id: must not be empty"),
        (_raw(event_time=1.5), "Transaction.event_time: expected an integer"),
        (
            b'{"event_id":"e","card_id":"c","merchant_id":"m","amount":NaN,"event_time":1}',
            "must be finite",
        ),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_invalid_transactions_are_named(raw: bytes, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        decode(Transaction, raw)


def test_extra_fields_are_kept_and_round_trip() -> None:
    tx = decode(Transaction, _raw(country="FR"))
    assert tx.extra == {"country": "FR"}
    assert tx.as_record()["country"] == "FR"
    assert decode(Transaction, encode(tx)) == tx


def test_nested_types_are_checked() -> None:
    log = PredictionLog(
        request_id="r",
        model_name="fraud",
        model_version="1",
        feature_set="fraud",
        fingerprint="f",
        entities={"card_id": "c"},
        features=[1.0, 2.0],
        score=0.5,
        event_time=1,
        served_at_ms=2,
    )
    assert decode(PredictionLog, encode(log)) == log
    doc = json.loads(encode(log))
    doc["features"] = [1.0, "x"]
    with pytest.raises(SchemaError, match=r"PredictionLog.features\[1\]"):
        decode(PredictionLog, json.dumps(doc))


def test_dead_letter_keeps_original_bytes() -> None:
    dl = DeadLetter.of(
        source_topic="t",
        partition=1,
        offset=7,
        reason="malformed",
        error="bad",
        value=b"\x00\xffraw",
        key=b"k",
    )
    back = decode(DeadLetter, encode(dl))
    assert back.original_value() == b"\x00\xffraw" and back.offset == 7
