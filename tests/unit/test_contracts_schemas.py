"""Topic payloads are validated at the edge with precise messages."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import (
    DeadLetter,
    PredictionLog,
    decode,
    encode,
)


@dataclass(frozen=True)
class Purchase:
    """A payload shaped like a business event: ids, a number, a time, extra fields kept."""

    event_id: str
    user_id: str
    item_id: str
    amount: float
    event_time: int
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.amount < 0:
            raise SchemaError("Purchase.amount: must be >= 0", "amount")

    def as_record(self) -> dict[str, Any]:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        return {**self.extra, **fields}


GOOD = {"event_id": "e1", "user_id": "c1", "item_id": "m1", "amount": 9.5, "event_time": 17}


def _raw(**changes: object) -> bytes:
    doc = {**GOOD, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (_raw(amount=...), "missing required field 'amount'"),
        (_raw(amount=True), "Purchase.amount: expected a number"),
        (_raw(amount=-1), "Purchase.amount: must be >= 0"),
        (_raw(user_id=5), "Purchase.user_id: expected a string"),
        (_raw(user_id=""), "Purchase.user_id: must not be empty"),
        (_raw(event_time=1.5), "Purchase.event_time: expected an integer"),
        (
            b'{"event_id":"e","user_id":"c","item_id":"m","amount":NaN,"event_time":1}',
            "must be finite",
        ),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_invalid_payloads_are_named(raw: bytes, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        decode(Purchase, raw)


def test_extra_fields_are_kept_and_round_trip() -> None:
    tx = decode(Purchase, _raw(country="FR"))
    assert tx.extra == {"country": "FR"}
    assert tx.as_record()["country"] == "FR"
    assert decode(Purchase, encode(tx)) == tx


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
