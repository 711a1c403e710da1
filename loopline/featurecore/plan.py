"""A view compiled once into straight-line Python: the feature engine's inner loop.

The engine is pure Python and runs per event online, so the per-event work
is generated from the view's definition (as ``dataclasses`` does); see
:class:`ViewPlan`. :class:`loopline.featurecore.features.EntityState` drives it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loopline.contracts.errors import FeatureError

if TYPE_CHECKING:
    from loopline.featurecore.features import Aggregation, EntityView

# Sums are kept exactly, in fixed point (integers counting 2**-60), so a
# window's sum, mean and std depend only on which events it holds, never on
# the order they arrived in: an entity fed from several Kafka partitions gets
# the same values online (any interleaving, any worker count) and offline.
_SCALE = 2.0**60
_UNIT = 2.0**-60
_UNIT2 = 2.0**-120
# Beyond this a value times _SCALE would overflow a float.
_MAX_ABS = 2.0**900

# Statistics a tile can hold; a tile is a list ``[count, stat, stat, ...]``.
_COUNT, _SUM, _SUMSQ, _MIN, _MAX = "count", "sum", "sumsq", "min", "max"
_DISTINCT = "distinct"
_STATS_OF = {
    "sum": (_SUM,),
    "mean": (_SUM,),
    "std": (_SUM, _SUMSQ),
    "min": (_MIN,),
    "max": (_MAX,),
    "distinct": (_DISTINCT,),
}


class ViewPlan:
    """A view compiled once into straight-line Python functions.

    The engine is pure Python and runs per event online, so the per-event work
    is generated from the definition (as ``dataclasses`` does):

    - ``apply(tiles, event, t)`` reads and checks the event's fields first
      (raising before any change), then adds it to one tile per window;
    - ``read(tiles, as_of, last_time, last_values)`` sums up the tiles of each
      window and computes every aggregation;
    - ``expires(tiles, as_of)`` is :meth:`EntityState.expires_at`.

    ``source`` holds the generated code.
    """

    def __init__(self, view: EntityView) -> None:
        aggs = view.aggregations
        numeric_kinds = {"sum", "mean", "std", "min", "max"}
        self.numeric = tuple(sorted({a.field for a in aggs if a.kind in numeric_kinds and a.field}))
        self.distinct = tuple(sorted({a.field for a in aggs if a.kind == "distinct" and a.field}))
        self.last = tuple(sorted({a.field for a in aggs if a.kind == "last" and a.field}))
        self.windows = tuple((w.tile_s, w.tiles) for w in view.windows)
        # Distinct filters; filter -1 is "every event".
        self.filters: tuple[tuple[str, str, Any], ...] = tuple(
            dict.fromkeys(a.where for a in aggs if a.where is not None)
        )
        # Per window: the statistics its tiles hold, as {(stat, field, filter): position};
        # position 0 is the unfiltered count.
        self.slots: list[dict[tuple[str, str | None, int], int]] = []
        for w in view.windows:
            slots: dict[tuple[str, str | None, int], int] = {}
            for a in aggs:
                if a.window_s != w.seconds:
                    continue
                fid = self._fid(a)
                if fid >= 0:
                    slots.setdefault((_COUNT, None, fid), len(slots) + 1)
                for stat in _STATS_OF.get(a.kind, ()):
                    slots.setdefault((stat, a.field, fid), len(slots) + 1)
            self.slots.append(slots)
        self.source = "\n".join(
            [*self._apply_source(), "", *self._read_source(view), "", *self._expires_source()]
        )
        namespace: dict[str, Any] = {
            "_UNIT": _UNIT,
            "_UNIT2": _UNIT2,
            "_SCALE": _SCALE,
            "_MAX_ABS": _MAX_ABS,
            "_INF": math.inf,
            "_sqrt": math.sqrt,
            "_intern": sys.intern,
            "_number": _number,
            "_matches": _matches,
            "_FILTERS": self.filters,
        }
        exec(compile(self.source, f"<feature plan {view.entity}>", "exec"), namespace)
        self.apply = namespace["apply"]
        self.read = namespace["read"]
        self.expires = namespace["expires"]

    def _fid(self, a: Aggregation) -> int:
        return -1 if a.where is None else self.filters.index(a.where)

    def _apply_source(self) -> list[str]:
        lines = ["def apply(tiles_by_window, event, t):"]
        stats = {s for sl in self.slots for s, _, _ in sl}
        # Inputs first: a KeyError, TypeError or FeatureError leaves nothing changed.
        for i, f in enumerate(self.numeric):
            lines += [
                f"    x{i} = event[{f!r}]",
                f"    if x{i}.__class__ is not float or not -_MAX_ABS <= x{i} <= _MAX_ABS:",
                f"        x{i} = _number(event, {f!r})",
            ]
            if stats & {_SUM, _SUMSQ}:
                lines.append(f"    f{i} = int(x{i} * _SCALE)")
            if _SUMSQ in stats:
                lines.append(f"    q{i} = f{i} * f{i}")
        for i, f in enumerate(self.distinct):
            # One string object per distinct value, however many entities' sets
            # hold it: a set entry is then a pointer, not a copy of the string
            # (interned strings are freed once unused).
            lines += [
                f"    d{i} = event[{f!r}]",
                f"    if d{i}.__class__ is str: d{i} = _intern(d{i})",
                f"    else: hash(d{i})",
            ]
        lines += [f"    _number(event, {f!r})" for f in self.last]
        lines += [f"    m{k} = _matches(event, _FILTERS[{k}])" for k in range(len(self.filters))]
        for w, ((tile_s, n_tiles), slots) in enumerate(zip(self.windows, self.slots, strict=True)):
            empty = {
                _COUNT: "0", _SUM: "0", _SUMSQ: "0", _MIN: "_INF", _MAX: "-_INF",
                _DISTINCT: "set()",
            }  # fmt: skip
            new_tile = ", ".join(["0", *(empty[s] for s, _, _ in slots)])
            lines += [
                f"    tiles = tiles_by_window[{w}]",
                f"    idx = int(t // {tile_s})",
                "    tile = tiles.get(idx)",
                "    if tile is None:",
                f"        tile = tiles[idx] = [{new_tile}]",
                # Drop tiles no read at or after t can see again (events older
                # than the allowed lateness never reach here).
                f"        if len(tiles) > {n_tiles + 1}:",
                f"            for old in [i for i in tiles if i < idx - {n_tiles + 1}]:",
                "                del tiles[old]",
                "    tile[0] += 1",
            ]
            for (stat, f, fid), pos in slots.items():
                pad = "    "
                if fid >= 0:
                    lines.append(f"    if m{fid}:")
                    pad = "        "
                if stat == _COUNT:
                    lines.append(f"{pad}tile[{pos}] += 1")
                elif stat == _DISTINCT:
                    lines.append(f"{pad}tile[{pos}].add(d{self.distinct.index(f)})")
                elif stat == _SUM:
                    lines.append(f"{pad}tile[{pos}] += f{self.numeric.index(f)}")
                elif stat == _SUMSQ:
                    lines.append(f"{pad}tile[{pos}] += q{self.numeric.index(f)}")
                else:
                    i = self.numeric.index(f)
                    op = "<" if stat == _MIN else ">"
                    lines.append(f"{pad}if x{i} {op} tile[{pos}]: tile[{pos}] = x{i}")
        lines.append("    return None")
        return lines

    def _read_source(self, view: EntityView) -> list[str]:
        lines = ["def read(tiles_by_window, as_of, last_time, last_values):"]
        var: list[dict[tuple[str, str | None, int], str]] = []
        for w, ((tile_s, n_tiles), slots) in enumerate(zip(self.windows, self.slots, strict=True)):
            names = {key: f"v{w}_{pos}" for key, pos in slots.items()}
            var.append(names)
            start = {
                _COUNT: "0", _SUM: "0", _SUMSQ: "0", _MIN: "_INF", _MAX: "-_INF",
                _DISTINCT: "None",
            }  # fmt: skip
            lines += [f"    n{w} = 0"] + [f"    {names[k]} = {start[k[0]]}" for k in slots]
            lines += [
                f"    last = int(as_of // {tile_s})",
                f"    low = last - {n_tiles}",
                f"    for idx, tile in tiles_by_window[{w}].items():",
                "        if low < idx <= last:",
                f"            n{w} += tile[0]",
            ]
            # Exact or order-free merges (integer sums, min, max, set union):
            # the dict's iteration order does not matter.
            for key, pos in slots.items():
                stat, v = key[0], names[key]
                if stat in (_COUNT, _SUM, _SUMSQ):
                    lines.append(f"            {v} += tile[{pos}]")
                elif stat == _DISTINCT:
                    lines.append(
                        f"            {v} = tile[{pos}] if {v} is None else {v} | tile[{pos}]"
                    )
                else:
                    op = "<" if stat == _MIN else ">"
                    lines.append(f"            if tile[{pos}] {op} {v}: {v} = tile[{pos}]")
        index = {w.seconds: i for i, w in enumerate(view.windows)}
        values = []
        for a in view.aggregations:
            d = repr(float(a.default))
            if a.kind == "last_time":
                values.append(f"(last_time if last_time else {d})")
                continue
            if a.kind == "last":
                get = f"last_values.get({a.field!r})"
                values.append(f"({d} if {get} is None else float({get}))")
                continue
            w = index[a.window_s]  # type: ignore[index]
            fid = self._fid(a)
            n = f"n{w}" if fid < 0 else var[w][(_COUNT, None, fid)]
            if a.kind == "count":
                values.append(f"float({n})")
                continue
            v = var[w][(_STATS_OF[a.kind][0], a.field, fid)]
            expr = {
                "sum": f"{v} * _UNIT",
                "mean": f"{v} / {n} * _UNIT",
                "min": v,
                "max": v,
                "distinct": f"float(len({v}))",
            }.get(a.kind)
            if a.kind == "std":
                q = var[w][(_SUMSQ, a.field, fid)]
                expr = f"_sqrt(({n} * {q} - {v} * {v}) / ({n} * {n}) * _UNIT2)"
            values.append(f"({expr} if {n} else {d})")
        lines.append("    return (" + ", ".join(values) + ("," if len(values) == 1 else "") + ")")
        return lines

    def _expires_source(self) -> list[str]:
        lines = ["def expires(tiles_by_window, as_of):", "    nxt = None"]
        for w, (tile_s, n_tiles) in enumerate(self.windows):
            lines += [
                f"    tiles = tiles_by_window[{w}]",
                "    if tiles:",
                f"        first = int(as_of // {tile_s}) - {n_tiles - 1}",
                "        oldest = min(tiles)",
                "        if oldest < first:  # tiles out of the window linger until pruned",
                "            oldest = min([i for i in tiles if i >= first], default=None)",
                "        if oldest is not None:",
                f"            t = float((oldest + {n_tiles}) * {tile_s})",
                "            if nxt is None or t < nxt:",
                "                nxt = t",
            ]
        lines.append("    return nxt")
        return lines


_PLANS: dict[EntityView, ViewPlan] = {}
# By identity first: hashing a view (a tree of dataclasses) costs microseconds.
_PLANS_BY_ID: dict[int, tuple[EntityView, ViewPlan]] = {}


def plan_for(view: EntityView) -> ViewPlan:
    known = _PLANS_BY_ID.get(id(view))
    if known is not None and known[0] is view:
        return known[1]
    plan = _PLANS.get(view)
    if plan is None:
        plan = _PLANS[view] = ViewPlan(view)
    if len(_PLANS_BY_ID) < 256:  # bounded: unpickled copies are new objects
        _PLANS_BY_ID[id(view)] = (view, plan)
    return plan


def _matches(event: Mapping[str, Any], where: tuple[str, str, Any]) -> bool:
    """Whether ``event`` passes an aggregation's filter (an absent field never does)."""
    field_, op, value = where
    x = event.get(field_)
    if x is None:
        return False
    if op == "in":
        return x in value
    try:
        if op == "==":
            return bool(x == value)
        if op == "!=":
            return bool(x != value)
        if op == ">":
            return bool(x > value)
        if op == ">=":
            return bool(x >= value)
        if op == "<":
            return bool(x < value)
        return bool(x <= value)
    except TypeError:  # a string compared with a number: not a match
        return False


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
