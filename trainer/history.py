"""Historical events and outcomes of a repo's model, decoded by their declarations.

Events come from every source the model's views read (each tagged with its
source, :data:`~loopline.featurecore.features.SOURCE_TAG`, for the replay);
outcomes carry the repo's field names. Bad rows are counted, never fatal.

>>> from loopline.contracts.definitions import EventSource, Field, Outcomes
>>> src = EventSource("orders", topic="orders", fields=(Field("order_id", "string"),
...     Field("km", "float"), Field("at", "timestamp")), event_id="order_id", event_time="at")
>>> events, bad = decode_events(src, [b'{"order_id":"o1","km":2,"at":5}', b'{"km":1}'])
>>> events[0]["__source__"], bad
('orders', 1)
>>> outs, bad = decode_outcomes(Outcomes("done", label="secs", task="regression",
...     on_timeout="drop"), [b'{"event_id":"o1","secs":310.5,"event_time":9}'])
>>> outs, bad
([HistoricalOutcome(event_id='o1', label=310.5, event_time=9)], 0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

from loopline.contracts.definitions import EventSource, Outcomes
from loopline.contracts.errors import SchemaError
from loopline.featurecore.event_schema import EventParser
from loopline.featurecore.features import SOURCE_TAG


class HistoricalOutcome(NamedTuple):
    """An outcome as the bootstrap reads it (the fields of ``schemas.Outcome``)."""

    event_id: str
    label: float
    event_time: int


def decode_events(
    source: EventSource, rows: Iterable[bytes | dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Valid records of ``source`` (tagged with it) and the count of invalid rows."""
    parser = EventParser(source)
    out: list[dict[str, Any]] = []
    bad = 0
    for raw in rows:
        try:
            if isinstance(raw, dict):
                record = dict(raw)
                parser.check(record)
            else:
                record = parser.parse(raw)
        except SchemaError:
            bad += 1
            continue
        record[SOURCE_TAG] = source.name
        out.append(record)
    return out, bad


def decode_outcomes(
    outcomes: Outcomes, rows: Iterable[bytes | dict[str, Any]]
) -> tuple[list[HistoricalOutcome], int]:
    """Valid outcomes (the task's labels) and the count of invalid rows."""
    out: list[HistoricalOutcome] = []
    bad = 0
    for raw in rows:
        try:
            doc = raw if isinstance(raw, dict) else json.loads(raw)
            eid, label, t = (doc[outcomes.event_id], doc[outcomes.label], doc[outcomes.event_time])
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            bad += 1
            continue
        if not _valid(outcomes.task, eid, label, t):
            bad += 1
            continue
        out.append(HistoricalOutcome(eid, float(label), int(t)))
    return out, bad


def _valid(task: str, eid: Any, label: Any, t: Any) -> bool:
    if type(eid) is not str or not eid or type(t) not in (int, float) or t <= 0:
        return False
    if type(label) not in (int, float) or not math.isfinite(label):
        return False
    return task != "binary" or label in (0, 1)
