"""Declarative feature sets and the one pure engine that computes them.

The same code runs online (inside the streams dataflow, one
:class:`~loopline.featurecore.entity_state.EntityState` per key) and offline
(the trainer replays historical events through
:func:`~loopline.featurecore.entity_state.replay`), so a model trains on exactly
the values it is served. Nothing here imports a framework.

Windows are sliding and tiled: a window of ``seconds`` is split into ``tiles``
aligned buckets, and a value "as of" time ``t`` covers the tile holding ``t``
and the ``tiles - 1`` before it. Values are recomputed from the tiles on every
read, and sums are exact (fixed point), so a result depends only on which
events were applied: never on their order, nor on when reads happened.

>>> fs = FeatureSet(
...     name="demo",
...     version=1,
...     views=(
...         EntityView(
...             entity="user",
...             key_field="user_id",
...             windows=(Window(3600, 12),),
...             aggregations=(
...                 Aggregation("n_1h", "count", window_s=3600),
...                 Aggregation("sum_1h", "sum", "amount", 3600),
...                 Aggregation("last_t", "last_time"),
...             ),
...         ),
...     ),
...     derived=(
...         Derived("amount", "field", ("amount",)),
...         Derived("since_last", "age", ("user.last_t",), default=-1.0),
...     ),
...     model_features=("user.n_1h", "user.sum_1h", "amount", "since_last"),
... )
>>> fs.assemble({"user": (2.0, 12.5, 1060.0)}, {"amount": 3.0}, request_time=1090.0)
[2.0, 12.5, 3.0, 30.0]

Per-entity state and the offline replay are in :mod:`loopline.featurecore.entity_state`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from loopline.contracts.errors import FeatureError

AggKind = Literal["count", "sum", "mean", "min", "max", "std", "distinct", "last", "last_time"]
DerivedKind = Literal["field", "ratio", "difference", "product", "log1p", "age"]

_WINDOWED = {"count", "sum", "mean", "min", "max", "std", "distinct"}
_NEEDS_FIELD = {"sum", "mean", "min", "max", "std", "distinct", "last"}
_FILTER_OPS = ("==", "!=", ">", ">=", "<", "<=", "in")
# Events of several sources reach one replay; this key names an event's source.
SOURCE_TAG = "__source__"


@dataclass(frozen=True)
class Window:
    """A sliding window of ``seconds``, kept as ``tiles`` aligned buckets."""

    seconds: int
    tiles: int

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.tiles <= 0 or self.seconds % self.tiles:
            raise FeatureError(f"window {self.seconds}s must split into {self.tiles} whole tiles")

    @property
    def tile_s(self) -> int:
        return self.seconds // self.tiles


@dataclass(frozen=True)
class Aggregation:
    """One stored feature of an entity: ``kind`` over ``field`` in a window.

    ``count``, ``sum``, ``mean``, ``min``, ``max``, ``std`` (population) and
    ``distinct`` need ``window_s``; ``last`` (latest value of ``field``) and
    ``last_time`` (latest event time) are unbounded.
    """

    name: str
    kind: AggKind
    field: str | None = None
    window_s: int | None = None
    default: float = 0.0
    # Only events matching (field, op, value) count; windowed kinds only.
    where: tuple[str, str, Any] | None = None

    def __post_init__(self) -> None:
        if self.where is not None:
            if self.kind not in _WINDOWED:
                raise FeatureError(f"aggregation {self.name}: where= needs a windowed kind")
            field_, op, value = self.where
            if op not in _FILTER_OPS:
                raise FeatureError(
                    f"aggregation {self.name}: filter op {op!r} is not {_FILTER_OPS}"
                )
            if op == "in":
                object.__setattr__(self, "where", (field_, op, tuple(value)))
        if self.kind in _WINDOWED and self.window_s is None:
            raise FeatureError(f"aggregation {self.name}: {self.kind} needs window_s")
        if self.kind not in _WINDOWED and self.window_s is not None:
            raise FeatureError(f"aggregation {self.name}: {self.kind} takes no window")
        if self.kind in _NEEDS_FIELD and not self.field:
            raise FeatureError(f"aggregation {self.name}: {self.kind} needs a field")


@dataclass(frozen=True)
class EntityView:
    """The stored features of one entity type (a user, an item)."""

    entity: str
    key_field: str
    windows: tuple[Window, ...]
    aggregations: tuple[Aggregation, ...]
    # Several key fields make a composite entity id (values joined by "|").
    key_fields: tuple[str, ...] = ()
    # The event source this view reads (None: every event), and its time field
    # (None: the feature set's event_time_field).
    source: str | None = None
    time_field: str | None = None

    def __post_init__(self) -> None:
        if not self.key_fields:
            object.__setattr__(self, "key_fields", (self.key_field,))
        elif self.key_fields[0] != self.key_field:
            raise FeatureError(f"{self.entity}: key_field must be the first of key_fields")
        known = {w.seconds for w in self.windows}
        for agg in self.aggregations:
            if agg.window_s is not None and agg.window_s not in known:
                raise FeatureError(
                    f"{self.entity}.{agg.name}: no window of {agg.window_s}s declared"
                )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.aggregations)

    def entity_id(self, record: Mapping[str, Any]) -> str:
        """The id this view keeps the record's entity under (``KeyError`` if a key is absent)."""
        if len(self.key_fields) == 1:
            return str(record[self.key_field])
        return "|".join(str(record[f]) for f in self.key_fields)

    @property
    def defaults(self) -> tuple[float, ...]:
        return tuple(a.default for a in self.aggregations)


@dataclass(frozen=True)
class Derived:
    """A feature computed at request time from request fields and stored values.

    - ``field``: the request field ``args[0]`` as a float;
    - ``ratio``: ``args[0] / args[1]`` (``default`` when the divisor is 0);
    - ``difference``, ``product``: ``args[0] - args[1]``, ``args[0] * args[1]``;
    - ``log1p``: ``log(1 + max(args[0], 0))``;
    - ``age``: request time minus the time in ``args[0]`` (``default`` if unset).

    Names of stored values are ``entity.name``; request fields are bare names.
    """

    name: str
    kind: DerivedKind
    args: tuple[str, ...]
    default: float = 0.0


@dataclass(frozen=True)
class FeatureSet:
    """A versioned, fingerprinted set of features and the model's input order."""

    name: str
    version: int
    views: tuple[EntityView, ...]
    derived: tuple[Derived, ...]
    model_features: tuple[str, ...]
    event_time_field: str = "event_time"
    # The event source whose events are scored (replay yields rows for these
    # only); None: every event is scored.
    scored_source: str | None = None
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        known = {f"{v.entity}.{n}" for v in self.views for n in v.names}
        known |= {d.name for d in self.derived}
        for d in self.derived:
            for arg in d.args:
                if "." in arg and arg not in known:
                    raise FeatureError(f"derived {d.name}: unknown stored feature {arg}")
        for name in self.model_features:
            if name not in known:
                raise FeatureError(f"model feature {name!r} is not defined")
        if len(set(self.model_features)) != len(self.model_features):
            raise FeatureError("model features must be unique")
        object.__setattr__(self, "fingerprint", _fingerprint(self))
        object.__setattr__(self, "_plan", _AssemblyPlan(self))

    def view(self, entity: str) -> EntityView:
        for v in self.views:
            if v.entity == entity:
                return v
        raise FeatureError(f"feature set {self.name} has no entity {entity!r}")

    def assemble(
        self,
        stored: Mapping[str, Sequence[float] | None],
        request: Mapping[str, Any],
        request_time: float,
    ) -> list[float]:
        """The model's input vector, in ``model_features`` order.

        ``stored`` maps each entity to its stored values (``None`` when the
        entity is unknown: its defaults are used).
        """
        return self._plan.run(stored, request, request_time)  # type: ignore[attr-defined]

    def describe(self) -> dict[str, Any]:
        """Canonical plain-data form; the fingerprint hashes exactly this."""
        return {
            "name": self.name,
            "version": self.version,
            "event_time_field": self.event_time_field,
            "views": [_describe_view(v) for v in self.views],
            **({"scored_source": self.scored_source} if self.scored_source else {}),
            "derived": [[d.name, d.kind, list(d.args), "float64", d.default] for d in self.derived],
            "model_features": list(self.model_features),
        }


def from_description(d: Mapping[str, Any]) -> FeatureSet:
    """The feature set a :meth:`FeatureSet.describe` output describes (same fingerprint).

    Applied versions are kept as descriptions, so a version the definitions
    no longer produce can still be computed and served.

    >>> from loopline.featurecore.sample import SAMPLE
    >>> fs = SAMPLE.feature_set()
    >>> from_description(fs.describe()).fingerprint == fs.fingerprint
    True
    """
    views = tuple(
        EntityView(
            entity=v["entity"],
            key_field=v["key_field"],
            windows=tuple(Window(s, n) for s, n in v["windows"]),
            aggregations=tuple(
                Aggregation(
                    a[0],
                    a[1],
                    a[2],
                    a[3],
                    a[5],
                    where=None if len(a) < 7 else (a[6][0], a[6][1], _restore(a[6][2])),
                )
                for a in v["aggregations"]
            ),
            key_fields=tuple(v.get("key_fields", ())),
            source=v.get("source"),
            time_field=v.get("time_field"),
        )
        for v in d["views"]
    )
    return FeatureSet(
        name=d["name"],
        version=d["version"],
        views=views,
        derived=tuple(
            Derived(n, k, tuple(args), default) for n, k, args, _t, default in d["derived"]
        ),
        model_features=tuple(d["model_features"]),
        event_time_field=d["event_time_field"],
        scored_source=d.get("scored_source"),
    )


def _restore(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _describe_view(v: EntityView) -> dict[str, Any]:
    # Options appear only when set, so the description (and fingerprint) of a
    # view that uses none of them is what it was before they existed.
    out: dict[str, Any] = {
        "entity": v.entity,
        "key_field": v.key_field,
        "windows": [[w.seconds, w.tiles] for w in v.windows],
        "aggregations": [
            [a.name, a.kind, a.field, a.window_s, "float64", a.default]
            + ([[a.where[0], a.where[1], _plain(a.where[2])]] if a.where else [])
            for a in v.aggregations
        ],
    }
    if len(v.key_fields) > 1:
        out["key_fields"] = list(v.key_fields)
    if v.source is not None:
        out["source"] = v.source
    if v.time_field is not None:
        out["time_field"] = v.time_field
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _fingerprint(fs: FeatureSet) -> str:
    canonical = json.dumps(fs.describe(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class _AssemblyPlan:
    """Precomputed index lookups so assembling a vector is a few list reads."""

    def __init__(self, fs: FeatureSet) -> None:
        self.defaults = {v.entity: v.defaults for v in fs.views}
        position = {
            f"{v.entity}.{n}": (v.entity, i) for v in fs.views for i, n in enumerate(v.names)
        }
        derived = {d.name: d for d in fs.derived}
        self.steps: list[tuple[str, Any]] = []
        for name in fs.model_features:
            if name in position:
                self.steps.append(("stored", position[name]))
            else:
                d = derived[name]
                refs = tuple(position.get(a, a) for a in d.args)
                self.steps.append((d.kind, (refs, d.default, d.name)))

    def run(
        self,
        stored: Mapping[str, Sequence[float] | None],
        request: Mapping[str, Any],
        now: float,
    ) -> list[float]:
        rows = {e: (stored.get(e) or dflt) for e, dflt in self.defaults.items()}

        def value(ref: Any) -> float:
            if isinstance(ref, tuple):
                return float(rows[ref[0]][ref[1]])
            raw = request.get(ref)
            if raw is None:
                raise FeatureError(f"request field {ref!r} is missing")
            return float(raw)

        out: list[float] = []
        for kind, arg in self.steps:
            if kind == "stored":
                out.append(float(rows[arg[0]][arg[1]]))
                continue
            refs, default, _name = arg
            if kind == "field":
                out.append(value(refs[0]))
            elif kind == "ratio":
                den = value(refs[1])
                out.append(value(refs[0]) / den if den else default)
            elif kind == "difference":
                out.append(value(refs[0]) - value(refs[1]))
            elif kind == "product":
                out.append(value(refs[0]) * value(refs[1]))
            elif kind == "log1p":
                out.append(math.log1p(max(value(refs[0]), 0.0)))
            else:  # age
                then = value(refs[0])
                out.append(now - then if then > 0 else default)
        return out
