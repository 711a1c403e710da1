"""Entities, event sources and feature views: the data side of the definition language.

A feature repo's definitions module builds these frozen objects; Loopline
compiles them (:mod:`loopline.featurecore.project`) into the feature set the
dataflow and the trainer both run, the event decoders, the label join and
the model's training and gate. Each object checks itself on construction and
raises :class:`DefinitionError` naming the object and the fix; cross-object
checks (a view aggregating a field its source lacks, ...) run at compile time.

>>> user = Entity("user", key="user_id")
>>> purchases = EventSource(
...     "purchases",
...     topic="purchases",
...     fields=(Field("event_id", "string"), Field("user_id", "string"),
...             Field("amount", "float", ge=0), Field("event_time", "timestamp")),
...     event_id="event_id",
...     event_time="event_time",
... )
>>> view = FeatureView("user", entities=(user,), source=purchases, features=(
...     Aggregate("amount_sum_1h", "sum", "amount", window="1h"),
...     Aggregate("buys_1h", "count", window="1h"),
... ))
>>> view.windows_s
(3600,)
>>> Aggregate("bad", "sum", "amount", window="0s")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
loopline.contracts.errors.DefinitionError: Aggregate 'bad': window '0s' must be a positive ...
>>> parse_duration("90s"), parse_duration("2h"), parse_duration(300)
(90, 7200, 300)
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any, Literal

from loopline.contracts.errors import DefinitionError

FieldType = Literal["string", "int", "float", "bool", "timestamp"]
FIELD_TYPES: tuple[str, ...] = ("string", "int", "float", "bool", "timestamp")
KEY_TYPES: tuple[str, ...] = ("string", "int")
AggregateKind = Literal[
    "count", "sum", "mean", "min", "max", "std", "distinct", "last", "last_time", "time_since"
]
AGGREGATE_KINDS: tuple[str, ...] = (
    "count", "sum", "mean", "min", "max", "std", "distinct", "last", "last_time", "time_since",
)  # fmt: skip
# Aggregations over a numeric field, and the ones bounded by a window.
NUMERIC_AGGREGATES = frozenset({"sum", "mean", "min", "max", "std", "last"})
WINDOWED_AGGREGATES = frozenset({"count", "sum", "mean", "min", "max", "std", "distinct"})
TransformKind = Literal["ratio", "difference", "product", "log1p", "age"]
TRANSFORM_ARITY = {"ratio": 2, "difference": 2, "product": 2, "log1p": 1, "age": 1}
FilterOp = Literal["==", "!=", ">", ">=", "<", "<=", "in"]
FILTER_OPS: tuple[str, ...] = ("==", "!=", ">", ">=", "<", "<=", "in")
# Training hyper-parameters a Model may set (each a trainer setting of that name).
MODEL_PARAMS = {
    "num_trees": int, "num_leaves": int, "learning_rate": float, "min_data_in_leaf": int,
    "early_stopping_rounds": int,
}  # fmt: skip
GATE_METRICS = {"binary": ("auc", "log_loss", "brier"), "regression": ("rmse", "mae")}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: str | int | float, what: str = "duration") -> int:
    """Seconds in ``'90s'``, ``'10m'``, ``'1h'``, ``'7d'`` (or a number of seconds)."""
    if isinstance(value, bool):
        raise DefinitionError(f"{what} {value!r} must be a duration such as '10m'")
    if isinstance(value, int | float):
        if value != int(value):
            raise DefinitionError(f"{what} {value!r} must be whole seconds")
        return int(value)
    m = _DURATION.match(str(value))
    if not m or m.group(2) == "ms":
        raise DefinitionError(f"{what} {value!r} must be a duration such as '10m', '1h' or '7d'")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def check_name(kind: str, name: str) -> None:
    """Names become Redis keys, topic parts and model feature names: keep them plain."""
    if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
        raise DefinitionError(
            f"{kind} name {name!r} must be lowercase letters, digits and '_', "
            "starting with a letter"
        )


@dataclass(frozen=True)
class Entity:
    """A thing features are kept per: ``key`` is the event and request field naming it."""

    name: str
    key: str
    key_type: str = "string"
    description: str = ""

    def __post_init__(self) -> None:
        check_name("Entity", self.name)
        if not isinstance(self.key, str) or not self.key:
            raise DefinitionError(f"Entity {self.name!r}: key must name a field, e.g. 'user_id'")
        if self.key_type not in KEY_TYPES:
            raise DefinitionError(
                f"Entity {self.name!r}: key_type {self.key_type!r} must be one of {KEY_TYPES}"
            )


@dataclass(frozen=True)
class Field:
    """One field of an event: its type, whether it may be absent, simple constraints."""

    name: str
    type: str
    optional: bool = False
    ge: float | None = None
    le: float | None = None
    allowed: tuple[Any, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DefinitionError(f"Field {self.name!r}: a field needs a non-empty name")
        if self.type not in FIELD_TYPES:
            raise DefinitionError(
                f"Field {self.name!r}: type {self.type!r} must be one of {FIELD_TYPES}"
            )
        numeric = self.type in ("int", "float", "timestamp")
        if (self.ge is not None or self.le is not None) and not numeric:
            raise DefinitionError(
                f"Field {self.name!r}: ge/le apply to numeric fields, not {self.type}"
            )
        if self.ge is not None and self.le is not None and self.ge > self.le:
            raise DefinitionError(f"Field {self.name!r}: ge {self.ge} is above le {self.le}")
        if self.allowed is not None:
            if isinstance(self.allowed, str) or not len(self.allowed):
                raise DefinitionError(
                    f"Field {self.name!r}: allowed must be a non-empty list of values"
                )
            object.__setattr__(self, "allowed", tuple(self.allowed))


@dataclass(frozen=True)
class EventSource:
    """A Kafka topic of JSON events and their declared schema.

    ``event_id`` names the field that identifies an event (outcomes join on
    it); ``event_time`` the field holding when it happened (epoch ms, or an
    ISO-8601 string for a ``timestamp`` field). ``topic`` is appended to the
    project's topic prefix. ``max_bytes`` bounds one event's size.
    """

    name: str
    topic: str
    fields: tuple[Field, ...]
    event_id: str
    event_time: str
    max_bytes: int = 64 * 1024
    description: str = ""

    def __post_init__(self) -> None:
        check_name("EventSource", self.name)
        object.__setattr__(self, "fields", tuple(self.fields))
        where = f"EventSource {self.name!r}"
        if not self.topic or not re.match(r"^[A-Za-z0-9._-]+$", self.topic):
            raise DefinitionError(f"{where}: topic {self.topic!r} must be letters, digits, . _ -")
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DefinitionError(f"{where}: field {dup[0]!r} is declared twice")
        for role in ("event_id", "event_time"):
            name = getattr(self, role)
            if name not in names:
                raise DefinitionError(
                    f"{where}: {role} {name!r} is not one of its fields {names}; "
                    "declare it in fields="
                )
        if self.field(self.event_time).type not in ("timestamp", "int"):
            raise DefinitionError(f"{where}: event_time field must be of type timestamp")
        if self.field(self.event_id).optional or self.field(self.event_time).optional:
            raise DefinitionError(f"{where}: event_id and event_time fields cannot be optional")
        if self.max_bytes <= 0:
            raise DefinitionError(f"{where}: max_bytes must be positive")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise DefinitionError(
            f"EventSource {self.name!r} has no field {name!r}; its fields: "
            f"{[f.name for f in self.fields]}"
        )

    def has(self, name: str) -> bool:
        return any(f.name == name for f in self.fields)


@dataclass(frozen=True)
class Filter:
    """Only events whose ``field`` compares true to ``value`` count (``op`` as in Python)."""

    field: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in FILTER_OPS:
            raise DefinitionError(f"Filter on {self.field!r}: op {self.op!r} must be {FILTER_OPS}")
        if self.op == "in":
            if isinstance(self.value, str) or not hasattr(self.value, "__iter__"):
                raise DefinitionError(f"Filter on {self.field!r}: 'in' needs a list of values")
            object.__setattr__(self, "value", tuple(self.value))

    def describe(self) -> list[Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return [self.field, self.op, value]


@dataclass(frozen=True)
class Aggregate:
    """A stored feature of a view: ``kind`` of ``field`` over a sliding ``window``.

    Windowed kinds: count, sum, mean, min, max, std (population), distinct
    (count of distinct values). Unbounded: ``last`` (latest value of a
    numeric field), ``last_time`` (epoch seconds of the entity's latest
    event) and ``time_since`` (seconds from the entity's latest event to the
    request; -1 when there was none). ``where`` keeps only matching events. ``default`` is the
    value when the window is empty or the entity unknown.
    """

    name: str
    kind: str
    field: str | None = None
    window: str | int | None = None
    where: Filter | None = None
    default: float = 0.0
    tiles: int | None = None

    def __post_init__(self) -> None:
        check_name("Aggregate", self.name)
        where = f"Aggregate {self.name!r}"
        if self.kind not in AGGREGATE_KINDS:
            raise DefinitionError(f"{where}: kind {self.kind!r} must be one of {AGGREGATE_KINDS}")
        if self.kind in WINDOWED_AGGREGATES:
            if self.window is None:
                raise DefinitionError(f"{where}: {self.kind} needs window=, e.g. window='1h'")
            if parse_duration(self.window, f"{where}: window") <= 0:
                raise DefinitionError(
                    f"{where}: window {self.window!r} must be a positive duration such as "
                    "'10m', '1h' or '7d'"
                )
        elif self.window is not None:
            raise DefinitionError(f"{where}: {self.kind} is not windowed; remove window=")
        needs_field = self.kind not in ("count", "last_time", "time_since")
        if needs_field and not self.field:
            raise DefinitionError(f"{where}: {self.kind} needs field=, the event field it reads")
        if not needs_field and self.field:
            raise DefinitionError(f"{where}: {self.kind} reads no field; remove field=")
        if self.where is not None and self.kind not in WINDOWED_AGGREGATES:
            raise DefinitionError(f"{where}: where= applies to windowed aggregates only")
        if self.tiles is not None and self.tiles <= 0:
            raise DefinitionError(f"{where}: tiles must be positive")

    @property
    def window_s(self) -> int | None:
        return None if self.window is None else parse_duration(self.window)


@dataclass(frozen=True)
class FeatureView:
    """Aggregates of one event source, kept per entity (or per several entities)."""

    name: str
    entities: tuple[Entity, ...]
    source: EventSource
    features: tuple[Aggregate, ...]
    ttl: str | int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        check_name("FeatureView", self.name)
        object.__setattr__(self, "entities", tuple(self.entities))
        object.__setattr__(self, "features", tuple(self.features))
        where = f"FeatureView {self.name!r}"
        if not self.entities:
            raise DefinitionError(f"{where}: entities= needs at least one Entity")
        if not self.features:
            raise DefinitionError(f"{where}: features= needs at least one Aggregate")
        names = [a.name for a in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DefinitionError(f"{where}: feature {dup[0]!r} is declared twice")
        ents = [e.name for e in self.entities]
        if len(set(ents)) != len(ents):
            raise DefinitionError(f"{where}: an entity is listed twice")

    @property
    def key_fields(self) -> tuple[str, ...]:
        return tuple(e.key for e in self.entities)

    @property
    def windows_s(self) -> tuple[int, ...]:
        return tuple(sorted({a.window_s for a in self.features if a.window_s is not None}))
