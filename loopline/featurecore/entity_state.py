"""One entity's feature state, and the offline replay that runs the very same code.

Online, the streams dataflow keeps one :class:`EntityState` per key; offline,
the trainer replays history through :func:`replay`, so a model trains on
exactly the values it is served.

>>> from loopline.featurecore.sample import SAMPLE
>>> view = SAMPLE.feature_set().view("user")
>>> state = EntityState(view)
>>> state.update({"user_id": "u1", "price": 5.0}, t=1000.0)
>>> state.update({"user_id": "u1", "price": 7.5}, t=1060.0)
>>> state.values(as_of=1060.0)  # buys_10m, spend_10m, spend_mean_1h
(2.0, 12.5, 6.25)
>>> state.values(as_of=1060.0 + 7200)  # both events have left the windows
(0.0, 0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from loopline.contracts.errors import FeatureError
from loopline.featurecore.features import SOURCE_TAG, EntityView, FeatureSet
from loopline.featurecore.plan import plan_for


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
        self._plan = plan_for(view)
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
        self._plan = plan_for(self.view)
        self._tiles = state["tiles"]
        self.last_time = state["last_time"]
        self.last_values = state["last_values"]

    def update(self, event: Mapping[str, Any], t: float) -> None:
        """Apply one event that happened at event time ``t`` (seconds).

        Raises :class:`FeatureError` (and changes nothing) when a field the
        view aggregates is missing or not a finite number.
        """
        plan = self._plan
        try:
            plan.apply(self._tiles, event, t)
        except KeyError as e:
            raise FeatureError(f"event has no field {e.args[0]!r}") from None
        except TypeError as e:
            raise FeatureError(f"a distinct-count field is not hashable: {e}") from None
        if t >= self.last_time:
            self.last_time = t
            if plan.last:
                self.last_values = {f: event[f] for f in plan.last}

    def values(self, as_of: float) -> tuple[float, ...]:
        """The stored features as of ``as_of``, in the view's order."""
        return self._plan.read(self._tiles, as_of, self.last_time, self.last_values)  # type: ignore[no-any-return]

    def expires_at(self, as_of: float) -> float | None:
        """The next time after ``as_of`` when a value changes with no new event.

        Streaming uses it to refresh stored values as tiles leave a window.
        """
        return self._plan.expires(self._tiles, as_of)  # type: ignore[no-any-return]

    def is_empty(self, as_of: float) -> bool:
        """True when no window holds any event as of ``as_of``."""
        return self.expires_at(as_of) is None


@dataclass(frozen=True)
class PointInTimeRow:
    """One event with the features as of just before it (what serving sees)."""

    event: Mapping[str, Any]
    features: list[float]


def replay(fs: FeatureSet, events: Iterable[Mapping[str, Any]]) -> Iterator[PointInTimeRow]:
    """Offline, point-in-time correct features for each scored event, in order.

    Each row holds the model vector as of the event's time, computed from the
    events before it only (the event itself is applied afterwards), exactly as
    the online store holds it when a Predict call precedes the event. Events
    of several sources are told apart by their :data:`SOURCE_TAG` key: a view
    reads only its own source's events, and only the scored source's events
    yield rows.
    """
    states: dict[tuple[str, str], EntityState] = {}
    tf = fs.event_time_field
    scored = fs.scored_source
    for event in events:
        source = event.get(SOURCE_TAG)
        if scored is None or source is None or source == scored:
            t = float(event[tf]) / 1000.0
            stored: dict[str, tuple[float, ...] | None] = {}
            for view in fs.views:
                try:
                    st = states.get((view.entity, view.entity_id(event)))
                except KeyError:  # the scored event lacks this view's key: defaults
                    st = None
                stored[view.entity] = st.values(t) if st is not None else None
            yield PointInTimeRow(event, fs.assemble(stored, event, request_time=t))
        _apply_event(fs, states, event, source)


def _apply_event(
    fs: FeatureSet,
    states: dict[tuple[str, str], EntityState],
    event: Mapping[str, Any],
    source: str | None,
) -> None:
    for view in fs.views:
        if view.source is not None and source is not None and view.source != source:
            continue
        t = float(event[view.time_field or fs.event_time_field]) / 1000.0
        key = (view.entity, view.entity_id(event))
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
    for event in events:
        _apply_event(fs, states, event, event.get(SOURCE_TAG))
    out = {}
    for key, st in states.items():
        at = st.last_time if as_of is None else as_of
        out[key] = (at, st.values(at))
    return out
