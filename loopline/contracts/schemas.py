"""The JSON payloads on Loopline's topics, validated at the edge.

Every payload is a UTF-8 JSON object, so any producer (kcat included) can
write one. Times are epoch milliseconds (``*_ms`` or ``event_time``).
:func:`decode` checks types, required fields and finiteness and raises
:class:`SchemaError` naming the field; unknown fields are kept in ``extra``
where a schema allows them, so no producer's data is silently lost.

>>> decode(Outcome, b'{"event_id":"e1","label":"x","event_time":1}')
Traceback (most recent call last):
...
loopline.contracts.errors.SchemaError: Outcome.label: expected a number, got str 'x'
>>> decode(Outcome, encode(Outcome(event_id="e1", label=1, event_time=5))) == Outcome("e1", 1, 5)
True
>>> decode(Outcome, b'{"event_id":"e2","label":42.5,"event_time":5}').label  # regression
42.5
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from loopline.contracts.errors import SchemaError
from loopline.contracts.tasks import BINARY

T = TypeVar("T")

# What a model's labels mean: "binary" (0/1, fraud = 1) or "regression" (any finite number).
# The schemas carry both as JSON numbers; whoever knows the task checks the values.


def check_label(task: str, label: float, where: str = "Outcome.label") -> None:
    """Raise :class:`SchemaError` unless ``label`` is a valid label for ``task``.

    >>> check_label("binary", 1.0); check_label("regression", -3.25)
    >>> check_label("binary", 3)
    Traceback (most recent call last):
    ...
    loopline.contracts.errors.SchemaError: Outcome.label: must be 0 or 1
    """
    field_name = where.rpartition(".")[2]
    if task == BINARY:
        if label not in (0, 1):
            raise SchemaError(f"{where}: must be 0 or 1", field_name)
    elif not math.isfinite(label):
        raise SchemaError(f"{where}: must be a finite number", field_name)


@dataclass(frozen=True)
class Outcome:
    """``outcomes`` topic: the label of an earlier event, keyed by ``event_id``.

    A JSON number: 0/1 for a binary task (1 = fraud; producers may write ints),
    any finite value for a regression task. Which values are valid depends on
    the task, so the consumer that knows it checks them (:func:`check_label`).
    """

    event_id: str
    label: float
    event_time: int


@dataclass(frozen=True)
class PredictionLog:
    """``predictions`` topic: one served prediction, keyed by ``request_id``."""

    request_id: str
    model_name: str
    model_version: str
    feature_set: str
    fingerprint: str
    entities: dict[str, str]
    features: list[float]
    score: float
    event_time: int
    served_at_ms: int
    event_id: str = ""
    arm: str = "champion"
    feature_status: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LabeledExample:
    """``labeled`` topic and offline store: a prediction joined with its label."""

    request_id: str
    event_id: str
    model_name: str
    model_version: str
    fingerprint: str
    entities: dict[str, str]
    features: list[float]
    score: float
    label: float  # 0/1 for a binary task, the observed value for a regression task
    event_time: int
    labeled_at_ms: int
    # "outcome" when an outcome arrived, "timeout" when the maturity window's policy decided.
    resolution: str = "outcome"
    arm: str = "champion"
    # The prediction's non-fresh features (name -> "missing" | "stale" | "defaulted"),
    # as logged by serving: the trainer can leave out rows whose values were not real.
    feature_status: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftEvent:
    """``drift`` topic: one confirmed drift alarm."""

    id: str
    time_ms: int
    kind: str  # "data" | "prediction" | "concept" | "performance"
    detector: str
    feature: str
    statistic_before: float
    statistic_after: float
    window_before: int
    window_after: int
    model_version: str
    severity: str  # "info" | "warning" | "critical"
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainEvent:
    """``retrain`` topic: a request to train; ``id`` is the idempotency key."""

    id: str
    time_ms: int
    trigger: str  # "drift" | "schedule" | "manual"
    reason: str
    drift_event_ids: list[str] = field(default_factory=list)
    force: bool = False


@dataclass(frozen=True)
class ModelUpdate:
    """``model-updates`` topic (compacted, keyed by ``model_name``): a model's current state."""

    model_name: str
    version: str
    alias: str  # "champion" | "challenger" | ...
    sha256: str
    uri: str
    fingerprint: str
    time_ms: int
    action: str = "publish"  # "publish" | "promote" | "rollback" | "rollout"
    plan: dict[str, Any] = field(default_factory=dict)


# The most of a bad message's bytes (and of its key) a dead letter keeps: base64
# makes it 4/3 larger, and the letter must still fit the broker's default 1 MB
# message limit. A letter that could not be sent would stop its flow, which on
# restart would read the same message again: a crash loop on one huge event.
DEAD_LETTER_MAX_BYTES = 256 * 1024
DEAD_LETTER_MAX_ERROR_CHARS = 4096


@dataclass(frozen=True)
class DeadLetter:
    """``dead-letters`` topic: input that could not be processed, with its origin.

    ``value_b64`` holds the original bytes, cut to :data:`DEAD_LETTER_MAX_BYTES`
    (then ``value_size`` says how long the original was).

    >>> letter = DeadLetter.of(source_topic="t", partition=0, offset=1, reason="invalid",
    ...                        error="too big", value=b"x" * (DEAD_LETTER_MAX_BYTES + 5))
    >>> len(letter.original_value()), letter.value_size, letter.truncated
    (262144, 262149, True)
    """

    source_topic: str
    partition: int
    offset: int
    reason: str  # short machine-readable cause: "malformed", "invalid", "late", ...
    error: str
    value_b64: str
    key_b64: str = ""
    time_ms: int = 0
    value_size: int = 0  # bytes of the original value (value_b64 may hold fewer)

    @staticmethod
    def of(
        *,
        source_topic: str,
        partition: int,
        offset: int,
        reason: str,
        error: str,
        value: bytes | None,
        key: bytes | None = None,
        time_ms: int = 0,
    ) -> DeadLetter:
        value = value or b""
        return DeadLetter(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            reason=reason,
            error=error[:DEAD_LETTER_MAX_ERROR_CHARS],
            value_b64=base64.b64encode(value[:DEAD_LETTER_MAX_BYTES]).decode(),
            key_b64=base64.b64encode((key or b"")[:DEAD_LETTER_MAX_BYTES]).decode(),
            time_ms=time_ms,
            value_size=len(value),
        )

    def original_value(self) -> bytes:
        """The original bytes, or their first :data:`DEAD_LETTER_MAX_BYTES` (``truncated``)."""
        return base64.b64decode(self.value_b64)

    @property
    def truncated(self) -> bool:
        return self.value_size > len(self.original_value())


def encode(obj: Any) -> bytes:
    """Serialize a schema object to compact JSON bytes."""
    data = dataclasses.asdict(obj)
    extra = data.pop("extra", None)
    if extra:
        data = {**extra, **data}
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def decode(cls: type[T], raw: bytes | str | dict[str, Any]) -> T:
    """Parse and validate one payload; raises :class:`SchemaError` on any fault."""
    name = cls.__name__
    if isinstance(raw, dict):
        doc = raw
    else:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise SchemaError(f"{name}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"{name}: expected a JSON object, got {type(doc).__name__}")
    spec = _spec(cls)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in doc.items():
        if key in spec.fields:
            kwargs[key] = _check(name, key, value, spec.fields[key])
        elif spec.keeps_extra:
            extra[key] = value
    missing = [f for f in spec.required if f not in kwargs]
    if missing:
        raise SchemaError(f"{name}: missing required field {missing[0]!r}", missing[0])
    for key in spec.required:
        if key.endswith("id") and kwargs[key] == "":
            raise SchemaError(f"{name}.{key}: must not be empty", key)
    if spec.keeps_extra:
        kwargs["extra"] = extra
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


@dataclass(frozen=True)
class _Spec:
    fields: dict[str, Any]
    required: tuple[str, ...]
    keeps_extra: bool


@cache
def _spec(cls: type) -> _Spec:
    hints = typing.get_type_hints(cls)
    fields_, required = {}, []
    keeps_extra = False
    for f in dataclasses.fields(cls):
        if f.name == "extra":
            keeps_extra = True
            continue
        fields_[f.name] = hints[f.name]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    return _Spec(fields_, tuple(required), keeps_extra)


def _check(name: str, key: str, value: Any, kind: Any) -> Any:
    where = f"{name}.{key}"
    origin = typing.get_origin(kind)
    if kind is str:
        if not isinstance(value, str):
            raise SchemaError(f"{where}: expected a string, got {_show(value)}", key)
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: expected true or false, got {_show(value)}", key)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise SchemaError(f"{where}: expected an integer, got {_show(value)}", key)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaError(f"{where}: expected a number, got {_show(value)}", key)
        if not math.isfinite(value):
            raise SchemaError(f"{where}: must be finite", key)
        return float(value)
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {_show(value)}", key)
        (item,) = typing.get_args(kind)
        return [_check(name, f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {_show(value)}", key)
        _, item = typing.get_args(kind)
        if item is Any:
            return value
        return {k: _check(name, f"{key}.{k}", v, item) for k, v in value.items()}
    if kind is Any:
        return value
    raise SchemaError(f"{where}: unsupported schema type {kind}")


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"
