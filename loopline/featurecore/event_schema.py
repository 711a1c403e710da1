"""Decode and validate one event of a declared :class:`EventSource`.

The declaration is the schema: each field's type, whether it may be absent,
its bounds and allowed values. :class:`EventParser` turns bytes into the
flat record the feature engine reads (extra fields kept, timestamps as epoch
milliseconds) or raises :class:`SchemaError` naming the source and field;
bytes that are no JSON object at all raise :class:`MalformedEventError`.

The common case, a valid event, runs one generated check (as the feature
engine's plans do); any doubt falls back to the field-by-field path that
also words the error.

Hostile bytes are refused before they cost anything: an event over the
source's ``max_bytes``, nested deeper than :data:`MAX_DEPTH` or repeating a
key within one object (parsers disagree on which value wins) is a
:class:`MalformedEventError`, never a crash. :func:`load_json_object` does
this for any JSON record (the labels flow decodes with it too).

>>> from loopline.contracts.definitions import EventSource, Field
>>> src = EventSource("rides", topic="rides", fields=(
...     Field("ride_id", "string"), Field("zone", "string", allowed=("n", "s")),
...     Field("km", "float", ge=0), Field("vip", "bool", optional=True),
...     Field("ts", "timestamp")), event_id="ride_id", event_time="ts")
>>> p = EventParser(src)
>>> p.parse(b'{"ride_id":"r1","zone":"n","km":2,"ts":1700000000000,"x":1}')
{'ride_id': 'r1', 'zone': 'n', 'km': 2, 'ts': 1700000000000, 'x': 1}
>>> p.parse(b'{"ride_id":"r1","zone":"n","km":2,"ts":"2023-11-14T22:13:20Z"}')["ts"]
1700000000000
>>> p.parse(b'{"ride_id":"r1","zone":"w","km":2,"ts":1}')
Traceback (most recent call last):
...
loopline.contracts.errors.SchemaError: rides.zone: 'w' is not one of ('n', 's')
>>> p.parse(b'{"ride_id":"r1","zone":"n","km":-1,"ts":1}')
Traceback (most recent call last):
...
loopline.contracts.errors.SchemaError: rides.km: must be >= 0
>>> p.parse(b'[1]')
Traceback (most recent call last):
...
loopline.featurecore.event_schema.MalformedEventError: rides: expected a JSON object, got list
>>> p.parse(b'{"ride_id":"r1","ride_id":"r2","zone":"n","km":2,"ts":1}')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
loopline.featurecore.event_schema.MalformedEventError: rides: key 'ride_id' appears twice ...
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import datetime
from itertools import accumulate
from typing import Any

from loopline.contracts.definitions import EventSource, Field
from loopline.contracts.errors import SchemaError

# Numeric inputs beyond this magnitude are refused: the feature engine's exact
# sums need headroom, and no real measurement is near it.
MAX_ABS_INPUT = 1e15
# Events are flat records; a little nesting leaves room for metadata in extra
# fields. Deeper is a JSON bomb (parsers and pickling recurse), not data.
MAX_DEPTH = 32
# A JSON string (possessive: linear on any input), and each bracket's step in depth.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}

try:  # 4x faster than json.loads; optional (same verdicts without it)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment

    def _fast_loads(raw: bytes) -> Any:
        return json.loads(raw.decode())


class MalformedEventError(SchemaError):
    """The bytes are not a JSON object at all."""


class EventParser:
    """Bytes of one ``source`` event -> its record, or :class:`SchemaError`.

    ``keys`` names fields that must also be non-empty (entity keys; the
    event id always is).
    """

    def __init__(self, source: EventSource, keys: Iterable[str] = ()) -> None:
        self.source = source
        self.name = source.name
        self.time_field = source.event_time
        self.max_bytes = source.max_bytes
        self._non_empty = frozenset({source.event_id, *keys})
        self._fields = source.fields
        self._fast = _compile_fast_check(source.fields, self._non_empty)

    def parse(self, raw: bytes | None) -> dict[str, Any]:
        doc = load_json_object(raw, self.name, self.max_bytes, "its EventSource's max_bytes")
        if not self._fast(doc):
            self.check(doc)
        return doc  # type: ignore[no-any-return]

    def check(self, doc: dict[str, Any]) -> None:
        """Check (and normalise in place) every declared field; raise on the first fault."""
        for f in self._fields:
            value = doc.get(f.name)
            if value is None:
                if f.optional:
                    continue
                raise SchemaError(f"{self.name}: missing required field {f.name!r}", f.name)
            doc[f.name] = self._check_field(f, value)

    def _check_field(self, f: Field, value: Any) -> Any:
        where = f"{self.name}.{f.name}"
        value = _typed(where, f, value)
        if f.type == "string" and value == "" and f.name in self._non_empty:
            raise SchemaError(f"{where}: must not be empty", f.name)
        if f.ge is not None and value < f.ge:
            raise SchemaError(f"{where}: must be >= {_num(f.ge)}", f.name)
        if f.le is not None and value > f.le:
            raise SchemaError(f"{where}: must be <= {_num(f.le)}", f.name)
        if f.allowed is not None and value not in f.allowed:
            raise SchemaError(f"{where}: {value!r} is not one of {f.allowed}", f.name)
        return value


def load_json_object(raw: bytes | None, name: str, max_bytes: int, limit: str) -> dict[str, Any]:
    """``raw`` as a JSON object, or :class:`MalformedEventError` / :class:`SchemaError`.

    ``limit`` names what sets ``max_bytes``, for the message of an oversized record.
    """
    if not raw:
        raise MalformedEventError(f"{name}: empty message (no value)")
    if len(raw) > max_bytes:
        raise SchemaError(f"{name}: the message is {len(raw)} bytes, over {limit} {max_bytes}")
    # Depth is judged on the bytes: parsers recurse, and orjson can overflow
    # the stack on a deep enough document instead of raising.
    opens = raw.count(b"{") + raw.count(b"[")
    if opens > MAX_DEPTH:
        _refuse_deep(raw, name)
    try:
        doc = _fast_loads(raw)
    except ValueError:
        # orjson refuses what json takes (NaN, huge integers): let json and
        # the checks word the error, so verdicts never depend on orjson.
        doc = _slow_loads(raw, name)
    if type(doc) is not dict:
        raise MalformedEventError(f"{name}: expected a JSON object, got {type(doc).__name__}")
    # Every pair written has a colon, right after its key's quote or after
    # whitespace, so colons bound the pairs from above: as many as the keys
    # of a flat event, no key repeats. That is the common case; anything else
    # is looked at exactly.
    if opens != 1 or raw.count(b":") != len(doc):
        keys = len(doc) if opens == 1 else _count_keys(doc)
        if _pairs_bound(raw) != keys:
            _refuse_repeated_keys(raw, name)
    return doc  # type: ignore[no-any-return]


def _pairs_bound(raw: bytes) -> int:
    """At least the key-value pairs written in ``raw``: colons after a quote or whitespace."""
    n = raw.count(b'":') + raw.count(b" :") + raw.count(b"\n:")
    return n + raw.count(b"\t:") + raw.count(b"\r:")


def _slow_loads(raw: bytes, name: str) -> Any:
    try:
        return json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedEventError(f"{name}: not valid JSON ({e})") from None
    except RecursionError:
        raise MalformedEventError(f"{name}: nested deeper than {MAX_DEPTH} levels") from None


def _refuse_deep(raw: bytes, name: str) -> None:
    """Refuse ``raw`` if its brackets (outside strings) nest deeper than :data:`MAX_DEPTH`."""
    brackets = _STRING.sub(b"", raw).translate(None, _BRACKETS)
    if max(accumulate(map(_STEP.__getitem__, brackets))) > MAX_DEPTH:
        raise MalformedEventError(f"{name}: nested deeper than {MAX_DEPTH} levels")


def _count_keys(doc: dict[str, Any]) -> int:
    """Keys in every object of ``doc`` (its depth is checked by now)."""
    keys, todo = 0, [doc]
    while todo:
        node = todo.pop()
        if type(node) is dict:
            keys += len(node)
            node = node.values()
        todo += [c for c in node if type(c) in (dict, list)]
    return keys


class _RepeatedKeyError(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKeyError(key)
            seen.add(key)
    return out


def _refuse_repeated_keys(raw: bytes, name: str) -> None:
    # The depth is checked by now, so json's recursion is bounded.
    try:
        json.loads(raw.decode(), object_pairs_hook=_unique_pairs)
    except _RepeatedKeyError as e:
        key = repr(e.args[0])[:40]
        raise MalformedEventError(f"{name}: key {key} appears twice in one object") from None


def _typed(where: str, f: Field, value: Any) -> Any:
    name = f.name
    if f.type == "string":
        if type(value) is not str:
            raise SchemaError(f"{where}: expected a string, got {_show(value)}", name)
        return value
    if f.type == "bool":
        if type(value) is not bool:
            raise SchemaError(f"{where}: expected true or false, got {_show(value)}", name)
        return value
    if f.type == "timestamp" and type(value) is str:
        return _iso_ms(where, name, value)
    if type(value) is bool or type(value) not in (int, float):
        kind = "an integer" if f.type == "int" else "a number"
        if f.type == "timestamp":
            kind = "epoch milliseconds or an ISO-8601 string"
        raise SchemaError(f"{where}: expected {kind}, got {_show(value)}", name)
    # An int too large for a float is out of range too (isfinite would overflow).
    if type(value) is float and not math.isfinite(value):
        raise SchemaError(f"{where}: must be finite", name)
    if abs(value) > MAX_ABS_INPUT:
        raise SchemaError(f"{where}: {repr(value)[:40]} is out of range", name)
    if f.type in ("int", "timestamp"):
        if type(value) is float:
            if not value.is_integer():
                raise SchemaError(f"{where}: expected an integer, got {_show(value)}", name)
            value = int(value)
        if f.type == "timestamp" and value <= 0:
            raise SchemaError(f"{where}: must be epoch ms > 0", name)
    return value


def _iso_ms(where: str, name: str, text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SchemaError(f"{where}: {text[:40]!r} is not an ISO-8601 time", name) from None
    if dt.tzinfo is None:
        raise SchemaError(f"{where}: {text[:40]!r} has no time zone (add Z or +00:00)", name)
    return round(dt.timestamp() * 1000)


def _compile_fast_check(fields: tuple[Field, ...], non_empty: frozenset[str]) -> Any:
    """A function true when ``doc`` certainly passes every check with nothing to normalise."""
    lines = ["def fast(d):"]
    for i, f in enumerate(fields):
        v = f"v{i}"
        lines.append(f"    {v} = d.get({f.name!r})")
        conds: list[str] = []
        if f.type == "string":
            conds.append(f"{v}.__class__ is str")
            if f.name in non_empty:
                conds.append(f"{v} != ''")
        elif f.type == "bool":
            conds.append(f"{v}.__class__ is bool")
        elif f.type in ("int", "timestamp"):
            conds += [
                f"{v}.__class__ is int",
                f"-{int(MAX_ABS_INPUT)} <= {v} <= {int(MAX_ABS_INPUT)}",
            ]
            if f.type == "timestamp":
                conds.append(f"{v} > 0")
        else:  # float: an int is a number too; the range test is false for NaN and inf
            conds += [
                f"{v}.__class__ in (float, int)",
                f"-{MAX_ABS_INPUT!r} <= {v} <= {MAX_ABS_INPUT!r}",
            ]
        if f.ge is not None:
            conds.append(f"{v} >= {f.ge!r}")
        if f.le is not None:
            conds.append(f"{v} <= {f.le!r}")
        if f.allowed is not None:
            conds.append(f"{v} in {tuple(f.allowed)!r}")
        test = " and ".join(conds)
        if f.optional:
            test = f"{v} is None or ({test})"
        lines.append(f"    if not ({test}): return False")
    lines.append("    return True")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<event check>", "exec"), namespace)
    return namespace["fast"]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    return f"{type(value).__name__} {repr(value)[:40]}"
