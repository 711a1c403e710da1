"""From simulated events to Kafka messages: routes, outcomes, time order, pacing, report.

Pure (no sockets, no clock of its own), so the producer and the demo share it
and unit tests check it without a broker.

>>> routes = Routes(
...     topics={"rides": "p.rides"}, event_ids={"rides": "ride_id"},
...     outcomes_topic="p.outcomes", outcome_fields=("event_id", "label", "event_time"))
>>> ev = SimEvent("rides", {"ride_id": "r1", "ts": 5}, time_ms=5, key="c1", label=12.5,
...               outcome_delay_s=0.01)
>>> [(m.topic, m.key, m.value) for m in timeline([ev], routes)]  # doctest: +NORMALIZE_WHITESPACE
[('p.rides', 'c1', b'{"ride_id":"r1","ts":5}'),
 ('p.outcomes', 'r1', b'{"event_id":"r1","label":12.5,"event_time":15}')]
>>> Pacer(start_ms=0, speed=2.0, wall0_s=100.0).wait_s(10_000, now_s=103.0)
2.0
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopline.contracts.errors import DefinitionError, LooplineError
from loopline.simulation.api import SimEvent

if TYPE_CHECKING:
    from loopline.contracts.definitions import Model
    from loopline.contracts.topics import Topics
    from loopline.featurecore.project import Project


class SimulationError(LooplineError):
    """A simulator yielded something Loopline cannot send."""


@dataclass(frozen=True)
class Message:
    """One Kafka message to send at ``time_ms``: an event (``event`` set) or an outcome."""

    topic: str
    key: str
    value: bytes
    time_ms: int
    event: SimEvent | None = None
    outcome: SimEvent | None = None  # the scored event this is the outcome of


def encode_record(record: dict[str, Any], where: str) -> bytes:
    """Compact JSON, as any producer would send it; NaN and objects JSON lacks are refused."""
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise SimulationError(
            f"{where}: record is not plain JSON ({e}); yield str/int/float/bool/None values"
        ) from None


@dataclass(frozen=True)
class Routes:
    """Where each source's events and the model's outcomes go, with the field names."""

    topics: dict[str, str]  # source name -> full topic name
    event_ids: dict[str, str]  # source name -> its event id field
    outcomes_topic: str
    outcome_fields: tuple[str, str, str]  # event id, label, event time

    @staticmethod
    def of(project: Project, model: Model, topics: Topics) -> Routes:
        o = model.outcomes
        return Routes(
            topics={s.name: topics.named(s.topic) for s in project.sources},
            event_ids={s.name: s.event_id for s in project.sources},
            outcomes_topic=topics.named(o.topic),
            outcome_fields=(o.event_id, o.label, o.event_time),
        )

    def event_id(self, ev: SimEvent) -> str:
        field_name = self.event_ids.get(ev.source)
        if field_name is None:
            raise DefinitionError(
                f"the simulator yields events of source {ev.source!r}, which the repo does not "
                f"declare (sources: {sorted(self.topics)}); fix SimEvent.source or add the "
                "EventSource"
            )
        value = ev.record.get(field_name)
        if value in (None, ""):
            raise SimulationError(
                f"{ev.source}: a simulated event has no {field_name!r} (its event id); "
                "set it in the record"
            )
        return str(value)

    def event(self, ev: SimEvent) -> Message:
        self.event_id(ev)  # checks the source and the id
        value = encode_record(ev.record, ev.source)
        return Message(self.topics[ev.source], ev.key, value, ev.time_ms, event=ev)

    def outcome_record(self, ev: SimEvent) -> dict[str, Any]:
        id_field, label_field, time_field = self.outcome_fields
        return {id_field: self.event_id(ev), label_field: ev.label, time_field: ev.outcome_time_ms}

    def outcome(self, ev: SimEvent) -> Message:
        eid = self.event_id(ev)
        value = encode_record(self.outcome_record(ev), "outcome")
        return Message(self.outcomes_topic, eid, value, ev.outcome_time_ms, outcome=ev)


def timeline(events: Iterable[SimEvent], routes: Routes) -> Iterator[Message]:
    """Every event and every scored event's outcome, in time order.

    An outcome due at the same millisecond as an event goes after it. Events
    must come in time order (the simulator contract); a step back is refused,
    since pacing and the features' lateness both rely on it.
    """
    due: list[tuple[int, int, Message]] = []
    seq = itertools.count()
    last = None
    for ev in events:
        if last is not None and ev.time_ms < last:
            raise SimulationError(
                f"the simulator went back in time ({ev.time_ms} after {last}); "
                "yield events in event-time order"
            )
        last = ev.time_ms
        while due and due[0][0] < ev.time_ms:
            yield heapq.heappop(due)[2]
        yield routes.event(ev)
        if ev.scored:
            out = routes.outcome(ev)
            heapq.heappush(due, (out.time_ms, next(seq), out))
    while due:
        yield heapq.heappop(due)[2]


@dataclass(frozen=True)
class Pacer:
    """Maps event time to wall time: ``speed`` event seconds per wall second (0: no waiting)."""

    start_ms: int
    speed: float
    wall0_s: float

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise SimulationError("speed must be >= 0 (0: as fast as possible)")

    def wait_s(self, time_ms: int, now_s: float) -> float:
        """How long to wait before sending what happens at ``time_ms`` (0 when late)."""
        if not self.speed:
            return 0.0
        return max(0.0, self.wall0_s + (time_ms - self.start_ms) / 1000.0 / self.speed - now_s)


@dataclass
class SimulationReport:
    """What was sent, by source and by tag."""

    events: int = 0
    outcomes: int = 0
    scored: int = 0
    label_sum: float = 0.0
    by_source: Counter[str] = field(default_factory=Counter)
    by_tag: Counter[str] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int = 0

    def count(self, m: Message) -> None:
        if m.event is None:
            self.outcomes += 1
            return
        ev = m.event
        self.events += 1
        self.by_source[ev.source] += 1
        self.by_tag[f"{ev.source}/{ev.tag}" if ev.tag else ev.source] += 1
        if ev.scored:
            self.scored += 1
            self.label_sum += float(ev.label or 0.0)
        if self.first_ms is None:
            self.first_ms = ev.time_ms
        self.last_ms = ev.time_ms

    @property
    def span_s(self) -> float:
        return 0.0 if self.first_ms is None else (self.last_ms - self.first_ms) / 1000

    def describe(self, wall_s: float) -> str:
        sources = ", ".join(f"{k} {v}" for k, v in sorted(self.by_source.items()))
        tags = ", ".join(f"{k} {v}" for k, v in sorted(self.by_tag.items()))
        mean = self.label_sum / self.scored if self.scored else 0.0
        return (
            f"produced {self.events} events ({sources}; by tag: {tags}), {self.scored} scored "
            f"(mean label {mean:.4g}), and {self.outcomes} outcomes over {self.span_s:.0f} s "
            f"of event time in {wall_s:.1f} s"
        )

    def progress(self, t_ms: int, start_ms: int) -> str:
        return (
            f"simulate: {self.events} events, {self.outcomes} outcomes, "
            f"event time +{(t_ms - start_ms) / 1000:.0f} s"
        )
