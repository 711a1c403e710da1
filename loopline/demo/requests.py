"""What the demo asks the server for a scored event, and how live events are re-timed.

Pure: built from the repo's definitions, so the demo drives any repo.

>>> shape = RequestShape(entity_fields=("rider_id", "zone_id"), request_fields=("distance",),
...                      time_fields={"rides": "event_time"})
>>> from loopline.simulation import SimEvent
>>> ev = SimEvent("rides", {"event_id": "e1", "rider_id": "r1", "zone_id": "z2",
...                         "distance": 12.5, "event_time": 1000}, 1000, "r1", 7.5, 4.0)
>>> shape.entities(ev), shape.fields(ev)
({'rider_id': 'r1', 'zone_id': 'z2'}, {'distance': 12.5})
>>> later = shape.restamp(ev, 500)
>>> later.time_ms, later.record["event_time"], ev.record["event_time"]
(1500, 1500, 1000)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loopline.simulation.api import SimEvent

if TYPE_CHECKING:
    from loopline.contracts.definitions import Model
    from loopline.featurecore.project import Project


@dataclass(frozen=True)
class RequestShape:
    """Which record fields become Predict entities and request fields."""

    entity_fields: tuple[str, ...]  # every key field of the model's feature views
    request_fields: tuple[str, ...]  # the model's request fields
    time_fields: dict[str, str]  # source name -> its event-time field

    @staticmethod
    def of(project: Project, model: Model) -> RequestShape:
        keys = (k for v in project.feature_set(model.name).views for k in v.key_fields)
        return RequestShape(
            entity_fields=tuple(dict.fromkeys(keys)),
            request_fields=tuple(f.name for f in model.request),
            time_fields={s.name: s.event_time for s in project.sources},
        )

    def entities(self, ev: SimEvent) -> dict[str, str]:
        # A view keyed on a field the scored event lacks is looked up by the
        # server's own rules (missing entity): the demo sends what it has.
        return {
            k: str(ev.record[k]) for k in self.entity_fields if ev.record.get(k) not in (None, "")
        }

    def fields(self, ev: SimEvent) -> dict[str, float]:
        out = {}
        for name in self.request_fields:
            value = ev.record.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = float(value)
            elif isinstance(value, bool):
                out[name] = 1.0 if value else 0.0
        return out

    def restamp(self, ev: SimEvent, offset_ms: int) -> SimEvent:
        """The event moved ``offset_ms`` later, its record's event-time field too."""
        record = dict(ev.record)
        name = self.time_fields.get(ev.source)
        if name is not None and name in record:
            record[name] = _shift(record[name], offset_ms)
        return dataclasses.replace(ev, record=record, time_ms=ev.time_ms + offset_ms)


def _shift(value: Any, offset_ms: int) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value + offset_ms
    if isinstance(value, str):
        # ISO-8601 event times (EventParser accepts them) keep their format.
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        shifted = datetime.fromtimestamp(when.timestamp() + offset_ms / 1000, tz=UTC)
        return shifted.isoformat().replace("+00:00", "Z")
    return value
