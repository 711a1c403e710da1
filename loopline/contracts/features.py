"""Declarative feature sets and the one pure engine that computes them.

The same code runs online (inside the streams dataflow, one
:class:`EntityState` per key) and offline (the trainer replays historical
events through :func:`replay`), so a model trains on exactly the values it is
served. Nothing here imports a framework.

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


# Sums are kept exactly, in fixed point (integers counting 2**-60), so a
# window's sum, mean and std depend only on which events it holds, never on
# the order they arrived in: an entity fed from several Kafka partitions gets
# the same values online (any interleaving, any worker count) and offline.
_SCALE = 2.0**60
_UNIT = 2.0**-60
_UNIT2 = 2.0**-120
# Beyond this a value times _SCALE would overflow a float.
_MAX_ABS = 2.0**900

# Tile slot kinds; a tile is a list ``[count, slot, slot, ...]``.
_S_SUM, _S_SUMSQ, _S_MIN, _S_MAX, _S_DISTINCT = range(5)


class _WindowPlan:
    """Where one window keeps each statistic inside its tiles."""

    __slots__ = ("distinct_pos", "ops", "seconds", "slot", "template", "tile_s", "tiles")

    def __init__(
        self, view: EntityView, w: Window, numeric: list[str], distinct: list[str]
    ) -> None:
        self.seconds, self.tiles, self.tile_s = w.seconds, w.tiles, w.tile_s
        aggs = [a for a in view.aggregations if a.window_s == w.seconds]
        wanted: list[tuple[int, str]] = []
        for a in aggs:
            kinds = {
                "sum": (_S_SUM,),
                "mean": (_S_SUM,),
                "std": (_S_SUM, _S_SUMSQ),
                "min": (_S_MIN,),
                "max": (_S_MAX,),
                "distinct": (_S_DISTINCT,),
            }.get(a.kind, ())
            for kind in kinds:
                if (kind, a.field) not in wanted:  # type: ignore[comparison-overlap]
                    wanted.append((kind, a.field))  # type: ignore[arg-type]
        # (kind, field) -> position in the tile list
        self.slot = {ks: i + 1 for i, ks in enumerate(wanted)}
        # (kind, tile position, index of the value in the prepared event)
        self.ops = tuple(
            (kind, pos, distinct.index(f) if kind == _S_DISTINCT else numeric.index(f))
            for (kind, f), pos in self.slot.items()
        )
        empty = {_S_SUM: 0, _S_SUMSQ: 0, _S_MIN: math.inf, _S_MAX: -math.inf, _S_DISTINCT: None}
        self.template = [0, *(empty[k] for k, _ in wanted)]
        self.distinct_pos = tuple(p for (k, _), p in self.slot.items() if k == _S_DISTINCT)

    def new_tile(self) -> list[Any]:
        tile = self.template.copy()
        for p in self.distinct_pos:
            tile[p] = set()
        return tile


class _ViewPlan:
    """A view compiled once into index lookups, so updates and reads do no searching."""

    def __init__(self, view: EntityView) -> None:
        numeric = sorted(
            {
                a.field
                for a in view.aggregations
                if a.kind in {"sum", "mean", "std", "min", "max"} and a.field
            }
        )
        distinct = sorted({a.field for a in view.aggregations if a.kind == "distinct" and a.field})
        self.numeric = tuple(numeric)
        self.distinct = tuple(distinct)
        self.last = tuple(
            sorted({a.field for a in view.aggregations if a.kind == "last" and a.field})
        )
        self.windows = tuple(_WindowPlan(view, w, numeric, distinct) for w in view.windows)
        by_seconds = {wp.seconds: i for i, wp in enumerate(self.windows)}
        reads: list[tuple[Any, ...]] = []
        for a in view.aggregations:
            if a.kind in ("last", "last_time"):
                reads.append((a.kind, a.field, 0, 0, a.default))
                continue
            wi = by_seconds[a.window_s]  # type: ignore[index]
            slots = self.windows[wi].slot
            if a.kind == "count":
                reads.append(("count", wi, 0, 0, a.default))
            elif a.kind in ("sum", "mean"):
                reads.append((a.kind, wi, slots[(_S_SUM, a.field)], 0, a.default))
            elif a.kind == "std":
                pos = (slots[(_S_SUM, a.field)], slots[(_S_SUMSQ, a.field)])
                reads.append(("std", wi, pos[0], pos[1], a.default))
            elif a.kind == "min":
                reads.append(("min", wi, slots[(_S_MIN, a.field)], 0, a.default))
            elif a.kind == "max":
                reads.append(("max", wi, slots[(_S_MAX, a.field)], 0, a.default))
            else:  # distinct
                reads.append(("distinct", wi, slots[(_S_DISTINCT, a.field)], 0, a.default))
        self.reads = tuple(reads)


_PLANS: dict[EntityView, _ViewPlan] = {}


def _plan_for(view: EntityView) -> _ViewPlan:
    plan = _PLANS.get(view)
    if plan is None:
        plan = _PLANS[view] = _ViewPlan(view)
    return plan


def _number(event: Mapping[str, Any], f: str) -> float:
    try:
        x = float(event[f])
    except KeyError:
        raise FeatureError(f"event has no field {f!r}") from None
    except (TypeError, ValueError):
        raise FeatureError(f"field {f!r} is not a number: {event[f]!r}") from None
    if not -_MAX_ABS <= x <= _MAX_ABS:  # also refuses NaN
        raise FeatureError(f"field {f!r} is not a finite number in range: {x!r}")
    return x


class EntityState:
    """Everything needed to answer one entity's features as of any time.

    Picklable (Bytewax snapshots it). Apply events with :meth:`update`; read
    with :meth:`values`. Events may arrive out of order; a value as of ``t``
    counts only applied events that fall in its window, and it does not
    depend on the order they were applied in (sums are exact).
    """

    __slots__ = ("_plan", "_tiles", "last_time", "last_values", "view")

    def __init__(self, view: EntityView) -> None:
        self.view = view
        self._plan = _plan_for(view)
        # one {tile index: tile} per window, in the view's window order
        self._tiles: list[dict[int, list[Any]]] = [{} for _ in view.windows]
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
        self._plan = _plan_for(self.view)
        self._tiles = state["tiles"]
        self.last_time = state["last_time"]
        self.last_values = state["last_values"]

    def update(self, event: Mapping[str, Any], t: float) -> None:
        """Apply one event that happened at event time ``t`` (seconds).

        Raises :class:`FeatureError` (and changes nothing) when a field the
        view aggregates is missing or not a finite number.
        """
        plan = self._plan
        # Read and check every input before changing anything.
        xs = [_number(event, f) for f in plan.numeric]
        fixed = [int(x * _SCALE) for x in xs]
        try:
            ds = [event[f] for f in plan.distinct]
            for d in ds:
                hash(d)
        except KeyError as e:
            raise FeatureError(f"event has no field {e.args[0]!r}") from None
        except TypeError as e:
            raise FeatureError(f"a distinct-count field is not hashable: {e}") from None
        for f in plan.last:
            _number(event, f)
        for wp, tiles in zip(plan.windows, self._tiles, strict=True):
            idx = int(t // wp.tile_s)
            tile = tiles.get(idx)
            if tile is None:
                tile = tiles[idx] = wp.new_tile()
                # Drop tiles no read at or after ``t`` can see again; events
                # older than the allowed lateness never reach here.
                horizon = idx - wp.tiles - 1
                for old in [i for i in tiles if i < horizon]:
                    del tiles[old]
            tile[0] += 1
            for kind, pos, src in wp.ops:
                if kind == _S_SUM:
                    tile[pos] += fixed[src]
                elif kind == _S_SUMSQ:
                    tile[pos] += fixed[src] * fixed[src]
                elif kind == _S_MIN:
                    if xs[src] < tile[pos]:
                        tile[pos] = xs[src]
                elif kind == _S_MAX:
                    if xs[src] > tile[pos]:
                        tile[pos] = xs[src]
                else:
                    tile[pos].add(ds[src])
        if t >= self.last_time:
            self.last_time = t
            self.last_values = {f: event[f] for f in plan.last}

    def values(self, as_of: float) -> tuple[float, ...]:
        """The stored features as of ``as_of``, in the view's order."""
        plan = self._plan
        windows = [
            self._window(wp, tiles, as_of)
            for wp, tiles in zip(plan.windows, self._tiles, strict=True)
        ]
        out: list[float] = []
        for kind, wi, pos, pos2, default in plan.reads:
            if kind == "last_time":
                out.append(self.last_time if self.last_time else default)
                continue
            if kind == "last":
                v = self.last_values.get(wi)
                out.append(default if v is None else float(v))
                continue
            acc = windows[wi]
            n = acc[0] if acc is not None else 0
            if kind == "count":
                out.append(float(n))
            elif n == 0:
                out.append(default)
            elif kind == "sum":
                out.append(acc[pos] * _UNIT)
            elif kind == "mean":
                out.append(acc[pos] / n * _UNIT)
            elif kind == "std":
                s, q = acc[pos], acc[pos2]
                out.append(math.sqrt((n * q - s * s) / (n * n) * _UNIT2))
            elif kind == "distinct":
                out.append(float(len(acc[pos])))
            else:  # min, max
                out.append(acc[pos])
        return tuple(out)

    def expires_at(self, as_of: float) -> float | None:
        """The next time after ``as_of`` when a value changes with no new event.

        Streaming uses it to refresh stored values as tiles leave a window.
        """
        nxt: float | None = None
        for wp, tiles in zip(self._plan.windows, self._tiles, strict=True):
            first = int(as_of // wp.tile_s) - wp.tiles + 1
            live = [i for i in tiles if i >= first]
            if live:
                t = float((min(live) + wp.tiles) * wp.tile_s)
                nxt = t if nxt is None else min(nxt, t)
        return nxt

    def is_empty(self, as_of: float) -> bool:
        """True when no window holds any event as of ``as_of``."""
        return self.expires_at(as_of) is None

    @staticmethod
    def _window(wp: _WindowPlan, tiles: dict[int, list[Any]], as_of: float) -> list[Any] | None:
        """The merged tiles of one window as of ``as_of`` (``None`` when empty).

        Every merge is exact or order-free (integer sums, min, max, set union),
        so iteration order does not matter.
        """
        last = int(as_of // wp.tile_s)
        low = last - wp.tiles
        acc: list[Any] | None = None
        shared = False
        for idx, tile in tiles.items():
            if not low < idx <= last:
                continue
            if acc is None:
                acc, shared = tile, True  # one tile: read it in place
                continue
            if shared:
                acc = acc.copy()
                for p in wp.distinct_pos:
                    acc[p] = set(acc[p])
                shared = False
            acc[0] += tile[0]
            for kind, pos, _ in wp.ops:
                if kind <= _S_SUMSQ:
                    acc[pos] += tile[pos]
                elif kind == _S_MIN:
                    if tile[pos] < acc[pos]:
                        acc[pos] = tile[pos]
                elif kind == _S_MAX:
                    if tile[pos] > acc[pos]:
                        acc[pos] = tile[pos]
                else:
                    acc[pos] |= tile[pos]
        return acc


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
