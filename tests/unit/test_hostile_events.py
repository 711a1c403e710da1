"""Hostile bytes and JSON against the dataflow decoders: a verdict for each, never a crash.

The features flow's parser and decoder and the labels flow's two decoders
get random bytes, random JSON, valid events with one field changed, and
JSON bombs (deep nesting, huge numbers, repeated keys, oversized events).
Each record is accepted or becomes a dead letter with a reason and a short
message; nothing else may escape, and each example finishes quickly.
"""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import pytest
from fraud_repo import FRAUD_FEATURES, transaction_parser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import DeadLetter, Outcome, PredictionLog, encode
from loopline.featurecore.event_schema import MAX_DEPTH, MalformedEventError
from loopline.streams.features.decoding import (
    REASON_INVALID,
    REASON_LATE,
    REASON_MALFORMED,
    EventDecoder,
)
from loopline.streams.labels.inputs import (
    MAX_RECORD_BYTES,
    OutcomeIn,
    PredictionIn,
    SourceRecord,
    decode_outcome,
    decode_prediction,
)

# Reproducible in CI: the same examples every run, each one quick.
HOSTILE = settings(
    derandomize=True,
    deadline=500,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PARSER = transaction_parser()
GOOD = {
    "event_id": "e1",
    "card_id": "c1",
    "merchant_id": "m1",
    "amount": 12.5,
    "event_time": 1_700_000_000_000,
}
# A refusal explains itself in a line, not by echoing the input back.
MAX_MESSAGE_CHARS = 400

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def _bomb(kind: str, n: int) -> bytes:
    """One JSON bomb of ``kind``, ``n`` its size knob."""
    if kind == "deep_list":
        return b'{"x":' + b"[" * n + b"]" * n + b"}"
    if kind == "deep_object":
        return b'{"x":' * n + b"1" + b"}" * n
    if kind == "open_list":
        return b"[" * n
    if kind == "huge_int":
        return (
            json.dumps({**GOOD, "amount": 0})
            .encode()
            .replace(b'"amount": 0', b'"amount": ' + b"9" * n)
        )
    if kind == "huge_float":
        return json.dumps(GOOD).encode().replace(b"12.5", b"1e" + str(n).encode())
    if kind == "repeated_key":
        pairs = b",".join(b'"card_id":"c%d"' % i for i in range(n))
        return b'{"event_id":"e1",' + pairs + b',"merchant_id":"m1","amount":1,"event_time":5}'
    if kind == "wide":
        return b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(n)) + b"}"
    if kind == "nan":
        return json.dumps({**GOOD, "amount": float("nan")}).encode()
    raise AssertionError(kind)


bombs = st.builds(
    _bomb,
    st.sampled_from(
        [
            "deep_list",
            "deep_object",
            "open_list",
            "huge_int",
            "huge_float",
            "repeated_key",
            "wide",
            "nan",
        ]
    ),
    st.sampled_from([1, 2, MAX_DEPTH, MAX_DEPTH + 1, 1000, 1100, 5000, 30_000, 70_000]),
)
mutated_events = st.builds(
    lambda key, value: json.dumps({**GOOD, key: value}).encode(),
    st.sampled_from([*GOOD, "extra"]),
    json_values,
)
hostile_bytes = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | mutated_events
    | bombs
)


def _check_parse(raw: bytes) -> dict[str, Any] | SchemaError:
    t0 = time.perf_counter()
    try:
        doc = PARSER.parse(raw)
    except SchemaError as e:
        assert str(e) and len(str(e)) <= MAX_MESSAGE_CHARS, str(e)[:500]
        return e
    finally:
        assert time.perf_counter() - t0 < 0.25
    assert type(doc) is dict
    pickle.dumps(doc)  # accepted records cross workers
    return doc


@HOSTILE
@given(hostile_bytes)
def test_the_event_parser_answers_every_input_with_a_record_or_a_reason(raw: bytes) -> None:
    _check_parse(raw)


@HOSTILE
@given(st.lists(hostile_bytes, min_size=1, max_size=5))
def test_the_event_decoder_accepts_or_dead_letters_every_record(values: list[bytes]) -> None:
    decoder = EventDecoder(FRAUD_FEATURES, PARSER, shards=4, allowed_lateness_s=60.0)
    records = [SourceRecord("tx", 0, i, None, v) for i, v in enumerate(values)]
    batch = decoder.decode(records, now_ms=1_700_000_000_000)
    # Every record is accepted, skipped as a copy of an accepted id, or dead-lettered.
    assert batch.accepted + batch.duplicates + len(batch.dead_letters) == len(records)
    for letter in batch.dead_letters:
        assert letter.reason in (REASON_MALFORMED, REASON_INVALID, REASON_LATE)
        assert letter.error and len(letter.error) <= MAX_MESSAGE_CHARS


@HOSTILE
@given(hostile_bytes, st.sampled_from(["prediction", "outcome"]))
def test_the_labels_decoders_answer_every_input(raw: bytes, kind: str) -> None:
    rec = SourceRecord("in", 0, 1, None, raw)
    item = decode_prediction(rec) if kind == "prediction" else decode_outcome(rec)
    if isinstance(item, DeadLetter):
        assert item.reason in ("malformed", "invalid")
        assert item.error and len(item.error) <= MAX_MESSAGE_CHARS
    else:
        assert isinstance(item, (PredictionIn, OutcomeIn))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_bomb("deep_list", MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
        (_bomb("deep_object", 1100), f"nested deeper than {MAX_DEPTH} levels"),
        (_bomb("deep_list", 5000), f"nested deeper than {MAX_DEPTH} levels"),
        (_bomb("huge_int", 5000), "not valid JSON (Exceeds the limit"),
        (_bomb("repeated_key", 2), "key 'card_id' appears twice in one object"),
        (b'{"a" :1, "a":2}', "key 'a' appears twice"),
        (b'{"x":{"a":1,"a" :2}}', "key 'a' appears twice"),
    ],
)
def test_json_bombs_are_malformed_with_the_limit_they_broke(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedEventError, match=message.replace("(", r"\(")):
        PARSER.parse(raw)


def test_nesting_up_to_the_limit_and_colons_in_strings_are_fine() -> None:
    nested = json.dumps({**GOOD, "x": json.loads(_bomb("deep_list", MAX_DEPTH - 2)[5:-1])})
    assert PARSER.parse(nested.encode())["x"] == json.loads(nested)["x"]
    spaced = b'{"event_id" : "e:1", "card_id":"c1", "merchant_id" :"m1", "amount": 1,\n'
    assert PARSER.parse(spaced + b'"event_time"\t: 5}')["event_id"] == "e:1"


def test_an_oversized_event_names_the_limit_that_raises_it() -> None:
    big = json.dumps({**GOOD, "pad": "x" * 70_000}).encode()
    with pytest.raises(SchemaError, match=r"over its EventSource's max_bytes 65536"):
        PARSER.parse(big)
    huge = encode(Outcome("e1", 1, 5)).replace(b"{", b'{"pad":"' + b"x" * MAX_RECORD_BYTES + b'",')
    item = decode_outcome(SourceRecord("outs", 0, 1, None, huge))
    assert isinstance(item, DeadLetter) and item.reason == "invalid"
    assert f"over the record limit {MAX_RECORD_BYTES}" in item.error


def test_labels_refuse_a_bomb_as_malformed_and_keep_valid_logs() -> None:
    log = PredictionLog("r1", "fraud", "1", "fraud", "fp", {"card": "c1"}, [1.0], 0.3, 5, 6)
    assert isinstance(decode_prediction(SourceRecord("p", 0, 1, None, encode(log))), PredictionIn)
    item = decode_prediction(SourceRecord("p", 0, 2, None, _bomb("deep_object", 1100)))
    assert isinstance(item, DeadLetter) and item.reason == "malformed"
    assert f"nested deeper than {MAX_DEPTH} levels" in item.error
