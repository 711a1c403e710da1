"""Records of the predictions and outcomes topics, decoded for the join.

Engine-neutral and pure: a source adapter hands each :class:`SourceRecord` to
:func:`decode_prediction` or :func:`decode_outcome` and routes what comes back.
Nothing raises on bad input: a record is either an input for the join or a
:class:`DeadLetter` with its original bytes and origin. Records are read
with the feature flow's hostile-input checks (size, nesting, repeated keys).

The join key of a prediction is its ``event_id`` (the outcome's key) when the
prediction log carries one, else its ``request_id`` (an outcome may then name
the request id as its ``event_id``).

>>> from loopline.contracts.schemas import Outcome, PredictionLog, encode
>>> log = PredictionLog("r1", "fraud", "3", "fraud", "fp", {"card": "c1"}, [1.0], 0.2,
...                     event_time=1_000, served_at_ms=1_005, event_id="e1")
>>> p = decode_prediction(SourceRecord("preds", 0, 7, b"r1", encode(log)))
>>> p.request_id, p.join_key, p.t_ms, p.offset
('r1', 'e1', 1000, 7)
>>> o = decode_outcome(SourceRecord("outs", 2, 3, b"e1", encode(Outcome("e1", 1, 9_000))))
>>> o.event_id, o.label, o.t_ms
('e1', 1, 9000)
>>> bad = decode_outcome(SourceRecord("outs", 2, 4, None, b'{"event_id":"e2","label":3,'
...                                                          b'"event_time":5}'))
>>> bad.reason, bad.error
('invalid', 'Outcome.label: must be 0 or 1')
>>> reg = decode_outcome(SourceRecord("outs", 2, 5, None, b'{"event_id":"e3","label":3.5,'
...                                                       b'"event_time":5}'), task="regression")
>>> reg.label
3.5
>>> decode_prediction(SourceRecord("preds", 0, 8, None, b"{oops")).reason
'malformed'
"""

from __future__ import annotations

import time
import zlib
from typing import Any, NamedTuple

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import DeadLetter, Outcome, PredictionLog, check_label, decode
from loopline.contracts.tasks import BINARY
from loopline.featurecore.event_schema import MalformedEventError, load_json_object
from loopline.streams.common.records import SourceRecord, dead_letter_of

__all__ = [
    "REASON_EVICTED",
    "REASON_INVALID",
    "REASON_MALFORMED",
    "ClockReport",
    "OutcomeIn",
    "PredictionIn",
    "SourceRecord",
    "Tick",
    "decode_outcome",
    "decode_prediction",
    "shard_key",
    "writer_key",
]

REASON_MALFORMED = "malformed"
REASON_INVALID = "invalid"
# Pushed out of the join's bounded buffers before it could be resolved.
REASON_EVICTED = "evicted"
# Kafka's default largest record (message.max.bytes): a prediction log or an
# outcome is a few hundred bytes, so a larger one is refused unread.
MAX_RECORD_BYTES = 1 << 20


class PredictionIn(NamedTuple):
    """A valid prediction log, kept as its original bytes (compact state, exact dead letters)."""

    request_id: str
    join_key: str
    # Window time: the event time, or the wall clock at read in processing-time mode.
    t_ms: int
    raw: bytes
    partition: int
    offset: int
    key: bytes | None = None


class OutcomeIn(NamedTuple):
    """A valid outcome: ``label`` is an int 0/1 for a binary task, a float for regression."""

    event_id: str
    label: float
    t_ms: int  # window time, as for PredictionIn
    raw: bytes
    partition: int
    offset: int
    key: bytes | None = None


class ClockReport(NamedTuple):
    """One input partition's progress, for the watermark."""

    source: str  # "<topic>:<partition>"
    max_ms: int  # newest window time read so far (0: none yet)
    caught_up: bool  # at the partition's end and idle: it holds the watermark back no longer


class Tick(NamedTuple):
    """The watermark moved: everything up to ``watermark_ms`` has been read."""

    watermark_ms: int


def decode_prediction(rec: SourceRecord, t_ms: int | None = None) -> PredictionIn | DeadLetter:
    """Validate one predictions record; ``t_ms`` overrides the window time (processing time)."""
    try:
        log = decode(PredictionLog, _json_object(rec, "PredictionLog"))
        if log.event_time <= 0:
            raise SchemaError("PredictionLog.event_time: must be epoch ms > 0", "event_time")
    except MalformedEventError as e:
        return dead_letter_of(rec, REASON_MALFORMED, str(e), int(time.time() * 1000))
    except SchemaError as e:
        return dead_letter_of(rec, REASON_INVALID, str(e), int(time.time() * 1000))
    return PredictionIn(
        log.request_id,
        log.event_id or log.request_id,
        log.event_time if t_ms is None else t_ms,
        rec.value or b"",
        rec.partition,
        rec.offset,
        rec.key,
    )


# The outcome fields a repo declares (event id, label, event time), in Outcome's order.
OUTCOME_FIELDS = ("event_id", "label", "event_time")


def decode_outcome(
    rec: SourceRecord,
    t_ms: int | None = None,
    task: str = BINARY,
    fields: tuple[str, str, str] = OUTCOME_FIELDS,
) -> OutcomeIn | DeadLetter:
    """Validate one outcomes record for ``task``; ``t_ms`` overrides the window time.

    A binary label must be 0 or 1, a regression label any finite number
    (the schema only asks for a JSON number: the task decides the rest).
    ``fields`` names the repo's outcome fields when they differ from
    :data:`OUTCOME_FIELDS` (say ``delivery_s`` for the label).
    """
    try:
        doc = _json_object(rec, "Outcome")
        if fields != OUTCOME_FIELDS:
            doc = _renamed(doc, fields)
        out = decode(Outcome, doc)
        if out.event_time <= 0:
            raise SchemaError("Outcome.event_time: must be epoch ms > 0", "event_time")
        check_label(task, out.label)
    except MalformedEventError as e:
        return dead_letter_of(rec, REASON_MALFORMED, str(e), int(time.time() * 1000))
    except SchemaError as e:
        return dead_letter_of(rec, REASON_INVALID, str(e), int(time.time() * 1000))
    # Binary labels stay ints, so the labeled log of a binary model reads as before (1, not 1.0).
    label = int(out.label) if task == BINARY else out.label
    return OutcomeIn(
        out.event_id,
        label,
        out.event_time if t_ms is None else t_ms,
        rec.value or b"",
        rec.partition,
        rec.offset,
        rec.key,
    )


def shard_key(join_key: str, shards: int) -> str:
    """The join shard (engine key) of a join key: stable across processes and runs.

    >>> shard_key("e1", 16) == shard_key("e1", 16)
    True
    """
    return str(zlib.crc32(join_key.encode()) % shards)


def writer_key(request_id: str, writers: int) -> str:
    """The output writer (sink partition) of an example, zero-padded so keys sort numerically.

    >>> writer_key("r1", 1), len(writer_key("r1", 12))
    ('000', 3)
    """
    return f"{zlib.crc32(request_id.encode()) % writers:03d}"


def _renamed(doc: dict[str, Any], fields: tuple[str, str, str]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in OUTCOME_FIELDS}
    for ours, theirs in zip(OUTCOME_FIELDS, fields, strict=True):
        if theirs not in doc:
            raise SchemaError(f"Outcome: missing required field {theirs!r}", theirs)
        out[ours] = doc[theirs]
    return out


def _json_object(rec: SourceRecord, name: str) -> dict[str, Any]:
    return load_json_object(rec.value, name, MAX_RECORD_BYTES, "the record limit")
