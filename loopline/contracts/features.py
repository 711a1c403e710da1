"""Declarative feature sets and the one pure engine that computes them.

The same code runs online (inside the streams dataflow, one
:class:`EntityState` per key) and offline (the trainer replays historical
events through :func:`replay`), so a model trains on exactly the values it is
served. Nothing here imports a framework.

Windows are sliding and tiled: a window of ``seconds`` is split into ``tiles``
aligned buckets, and a value "as of" time ``t`` covers the tile holding ``t``
and the ``tiles - 1`` before it. Values are recomputed from the tiles in index
order on every read, so the result depends only on the events applied (in
their order), never on when reads happened.

>>> fs = FeatureSet(
...     name="demo",
...     version=1,
...     views=(
...         EntityView(
...             entity="card",
...             key_field="card_id",
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
...         Derived("since_last", "age", ("card.last_t",), default=-1.0),
...     ),
...     model_features=("card.n_1h", "card.sum_1h", "amount", "since_last"),
... )
>>> state = EntityState(fs.views[0])
>>> state.update({"card_id": "c1", "amount": 5.0}, t=1000.0)
>>> state.update({"card_id": "c1", "amount": 7.5}, t=1060.0)
>>> state.values(as_of=1060.0)
(2.0, 12.5, 1060.0)
>>> state.values(as_of=1060.0 + 7200)  # both events have left the window
(0.0, 0.0, 1060.0)
>>> fs.assemble({"card": state.values(1060.0)}, {"amount": 3.0}, request_time=1090.0)
[2.0, 12.5, 3.0, 30.0]
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from loopline.contracts.errors import FeatureError

AggKind = Literal["count", "sum", "mean", "min", "max", "std", "distinct", "last", "last_time"]
DerivedKind = Literal["field", "ratio", "age"]

_WINDOWED = {"count", "sum", "mean", "min", "max", "std", "distinct"}
_NEEDS_FIELD = {"sum", "mean", "min", "max", "std", "distinct", "last"}


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

    def __post_init__(self) -> None:
        if self.kind in _WINDOWED and self.window_s is None:
            raise FeatureError(f"aggregation {self.name}: {self.kind} needs window_s")
        if self.kind not in _WINDOWED and self.window_s is not None:
            raise FeatureError(f"aggregation {self.name}: {self.kind} takes no window")
        if self.kind in _NEEDS_FIELD and not self.field:
            raise FeatureError(f"aggregation {self.name}: {self.kind} needs a field")


@dataclass(frozen=True)
class EntityView:
    """The stored features of one entity type (a card, a merchant)."""

    entity: str
    key_field: str
    windows: tuple[Window, ...]
    aggregations: tuple[Aggregation, ...]

    def __post_init__(self) -> None:
        known = {w.seconds for w in self.windows}
        for agg in self.aggregations:
            if agg.window_s is not None and agg.window_s not in known:
                raise FeatureError(
                    f"{self.entity}.{agg.name}: no window of {agg.window_s}s declared"
                )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.aggregations)

    @property
    def defaults(self) -> tuple[float, ...]:
        return tuple(a.default for a in self.aggregations)


@dataclass(frozen=True)
class Derived:
    """A feature computed at request time from request fields and stored values.

    - ``field``: the request field ``args[0]`` as a float;
    - ``ratio``: ``args[0] / args[1]`` (``default`` when the divisor is 0);
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
            "views": [
                {
                    "entity": v.entity,
                    "key_field": v.key_field,
                    "windows": [[w.seconds, w.tiles] for w in v.windows],
                    "aggregations": [
                        [a.name, a.kind, a.field, a.window_s, "float64", a.default]
                        for a in v.aggregations
                    ],
                }
                for v in self.views
            ],
            "derived": [[d.name, d.kind, list(d.args), "float64", d.default] for d in self.derived],
            "model_features": list(self.model_features),
        }


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
            else:  # age
                then = value(refs[0])
                out.append(now - then if then > 0 else default)
        return out


class _Tile:
    __slots__ = ("count", "distinct", "maxs", "mins", "sums", "sumsqs")

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, float] = {}
        self.sumsqs: dict[str, float] = {}
        self.mins: dict[str, float] = {}
        self.maxs: dict[str, float] = {}
        self.distinct: dict[str, set[Any]] = {}


class EntityState:
    """Everything needed to answer one entity's features as of any time.

    Picklable (Bytewax snapshots it). Apply events with :meth:`update`; read
    with :meth:`values`. Events may arrive out of order; a value as of ``t``
    counts only applied events that fall in its window.
    """

    __slots__ = ("_fields", "_tiles", "last_time", "last_values", "view")

    def __init__(self, view: EntityView) -> None:
        self.view = view
        # window seconds -> {tile index: tile}
        self._tiles: dict[int, dict[int, _Tile]] = {w.seconds: {} for w in view.windows}
        self._fields = _fields_by_window(view)
        self.last_time = 0.0
        self.last_values: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "tiles": self._tiles,
            "last_time": self.last_time,
            "last_values": self.last_values,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.view = state["view"]
        self._tiles = state["tiles"]
        self._fields = _fields_by_window(self.view)
        self.last_time = state["last_time"]
        self.last_values = state["last_values"]

    def update(self, event: Mapping[str, Any], t: float) -> None:
        """Apply one event that happened at event time ``t`` (seconds)."""
        for w in self.view.windows:
            tiles = self._tiles[w.seconds]
            idx = int(t // w.tile_s)
            tile = tiles.get(idx)
            if tile is None:
                tile = tiles[idx] = _Tile()
                # Drop tiles no read at or after ``t`` can see again; events
                # older than the allowed lateness never reach here.
                horizon = idx - w.tiles - 1
                for old in [i for i in tiles if i < horizon]:
                    del tiles[old]
            tile.count += 1
            numeric, distinct = self._fields[w.seconds]
            for f in numeric:
                x = float(event[f])
                if f in tile.sums:
                    tile.sums[f] += x
                    tile.sumsqs[f] += x * x
                    if x < tile.mins[f]:
                        tile.mins[f] = x
                    if x > tile.maxs[f]:
                        tile.maxs[f] = x
                else:
                    tile.sums[f] = x
                    tile.sumsqs[f] = x * x
                    tile.mins[f] = x
                    tile.maxs[f] = x
            for f in distinct:
                tile.distinct.setdefault(f, set()).add(event[f])
        if t >= self.last_time:
            self.last_time = t
            self.last_values = {f: event[f] for f in _last_fields(self.view)}

    def values(self, as_of: float) -> tuple[float, ...]:
        """The stored features as of ``as_of``, in the view's order."""
        summaries = {w.seconds: self._summary(w, as_of) for w in self.view.windows}
        out: list[float] = []
        for a in self.view.aggregations:
            if a.kind == "last_time":
                out.append(self.last_time if self.last_time else a.default)
                continue
            if a.kind == "last":
                v = self.last_values.get(a.field)  # type: ignore[arg-type]
                out.append(a.default if v is None else float(v))
                continue
            s = summaries[a.window_s]  # type: ignore[index]
            n = s.count
            if a.kind == "count":
                out.append(float(n))
            elif n == 0:
                out.append(a.default)
            elif a.kind == "sum":
                out.append(s.sums[a.field])
            elif a.kind == "mean":
                out.append(s.sums[a.field] / n)
            elif a.kind == "min":
                out.append(s.mins[a.field])
            elif a.kind == "max":
                out.append(s.maxs[a.field])
            elif a.kind == "std":
                mean = s.sums[a.field] / n
                out.append(math.sqrt(max(s.sumsqs[a.field] / n - mean * mean, 0.0)))
            else:  # distinct
                out.append(float(len(s.distinct[a.field])))
        return tuple(out)

    def expires_at(self, as_of: float) -> float | None:
        """The next time after ``as_of`` when a value changes with no new event.

        Streaming uses it to refresh stored values as tiles leave a window.
        """
        nxt: float | None = None
        for w in self.view.windows:
            first = int(as_of // w.tile_s) - w.tiles + 1
            live = [i for i in self._tiles[w.seconds] if i >= first]
            if live:
                t = float((min(live) + w.tiles) * w.tile_s)
                nxt = t if nxt is None else min(nxt, t)
        return nxt

    def is_empty(self, as_of: float) -> bool:
        """True when no window holds any event as of ``as_of``."""
        return self.expires_at(as_of) is None

    def _summary(self, w: Window, as_of: float) -> _Tile:
        last = int(as_of // w.tile_s)
        tiles = self._tiles[w.seconds]
        acc = _Tile()
        numeric, distinct = self._fields[w.seconds]
        # Index order, not insertion order: reads must not depend on history.
        for idx in sorted(i for i in tiles if last - w.tiles < i <= last):
            tile = tiles[idx]
            acc.count += tile.count
            for f in numeric:
                if f not in tile.sums:
                    continue
                if f in acc.sums:
                    acc.sums[f] += tile.sums[f]
                    acc.sumsqs[f] += tile.sumsqs[f]
                    acc.mins[f] = min(acc.mins[f], tile.mins[f])
                    acc.maxs[f] = max(acc.maxs[f], tile.maxs[f])
                else:
                    acc.sums[f] = tile.sums[f]
                    acc.sumsqs[f] = tile.sumsqs[f]
                    acc.mins[f] = tile.mins[f]
                    acc.maxs[f] = tile.maxs[f]
            for f in distinct:
                if f in tile.distinct:
                    acc.distinct.setdefault(f, set()).update(tile.distinct[f])
        return acc


def _fields_by_window(view: EntityView) -> dict[int, tuple[tuple[str, ...], tuple[str, ...]]]:
    out: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for w in view.windows:
        aggs = [a for a in view.aggregations if a.window_s == w.seconds]
        numeric = sorted({a.field for a in aggs if a.kind not in {"count", "distinct"} and a.field})
        distinct = sorted({a.field for a in aggs if a.kind == "distinct" and a.field})
        out[w.seconds] = (tuple(numeric), tuple(distinct))
    return out


def _last_fields(view: EntityView) -> tuple[str, ...]:
    return tuple(sorted({a.field for a in view.aggregations if a.kind == "last" and a.field}))


@dataclass(frozen=True)
class PointInTimeRow:
    """One event with the features as of just before it (what serving sees)."""

    event: Mapping[str, Any]
    features: list[float]


def replay(fs: FeatureSet, events: Iterable[Mapping[str, Any]]) -> Iterator[PointInTimeRow]:
    """Offline, point-in-time correct features for each event, in order.

    Each row holds the model vector as of the event's time, computed from the
    events before it only (the event itself is applied afterwards), exactly as
    the online store holds it when a Predict call precedes the event.
    """
    states: dict[tuple[str, str], EntityState] = {}
    tf = fs.event_time_field
    for event in events:
        t = float(event[tf]) / 1000.0
        stored: dict[str, tuple[float, ...] | None] = {}
        keys = []
        for view in fs.views:
            key = (view.entity, str(event[view.key_field]))
            keys.append((view, key))
            st = states.get(key)
            stored[view.entity] = st.values(t) if st is not None else None
        yield PointInTimeRow(event, fs.assemble(stored, event, request_time=t))
        for view, key in keys:
            st = states.get(key)
            if st is None:
                st = states[key] = EntityState(view)
            st.update(event, t)


def final_values(
    fs: FeatureSet, events: Iterable[Mapping[str, Any]], as_of: float | None = None
) -> dict[tuple[str, str], tuple[float, tuple[float, ...]]]:
    """Each entity's stored values after all ``events``: ``{(entity, id): (as_of, values)}``.

    ``as_of`` defaults to each entity's latest event time, which is what the
    streaming flow writes after an entity's last event.
    """
    states: dict[tuple[str, str], EntityState] = {}
    tf = fs.event_time_field
    for event in events:
        t = float(event[tf]) / 1000.0
        for view in fs.views:
            key = (view.entity, str(event[view.key_field]))
            st = states.get(key)
            if st is None:
                st = states[key] = EntityState(view)
            st.update(event, t)
    out = {}
    for key, st in states.items():
        at = st.last_time if as_of is None else as_of
        out[key] = (at, st.values(at))
    return out
