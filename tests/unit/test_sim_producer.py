"""The generic producer's pure parts: routes, outcomes, time order, pacing, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fraud_repo import PROJECT, ROOT

from loopline.contracts.errors import ConfigError, DefinitionError
from loopline.contracts.topics import Topics
from loopline.simulation import SimEvent, SimulationConfig
from loopline.simulation.api import load_simulation
from loopline.simulation.commands import parse_params, parse_start
from loopline.simulation.producer import produce_simulation
from loopline.simulation.timeline import Pacer, Routes, SimulationError, timeline

pytestmark = pytest.mark.unit

ROUTES = Routes.of(PROJECT, PROJECT.model(), Topics("t."))


def _ev(t: int, eid: str, label: float | None = 0, delay: float = 1.0, tag: str = "x") -> SimEvent:
    record = {"event_id": eid, "card_id": "c1", "merchant_id": "m1", "amount": 2.5}
    record["event_time"] = t
    return SimEvent("transactions", record, t, "c1", label, delay, tag)


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.flushed = 0

    def send(self, topic: str, value: bytes, key: str) -> None:
        self.sent.append((topic, key, value))

    def flush(self) -> None:
        self.flushed += 1


class FakeClock:
    """Time moves only when the producer sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_routes_follow_the_repo() -> None:
    model = PROJECT.model()
    assert ROUTES.topics == {"transactions": "t.events"}
    assert ROUTES.outcomes_topic == "t." + model.outcomes.topic
    out = ROUTES.outcome(_ev(5, "e1", label=1, delay=2.0))
    assert (out.topic, out.key, out.time_ms) == ("t.outcomes", "e1", 2005)
    assert json.loads(out.value) == {"event_id": "e1", "label": 1, "event_time": 2005}


def test_timeline_sends_outcomes_when_due_after_events_on_ties() -> None:
    events = [_ev(0, "a", delay=2.0), _ev(1000, "b", label=None), _ev(2000, "c", delay=0.5)]
    msgs = list(timeline(events, ROUTES))
    kinds = [(m.topic, m.key, m.time_ms) for m in msgs]
    assert kinds == [
        ("t.events", "c1", 0),
        ("t.events", "c1", 1000),
        ("t.events", "c1", 2000),  # the event first, then the outcome due at the same ms
        ("t.outcomes", "a", 2000),
        ("t.outcomes", "c", 2500),
    ]
    assert msgs[0].value == json.dumps(events[0].record, separators=(",", ":")).encode()


def test_timeline_refuses_what_it_cannot_send() -> None:
    with pytest.raises(SimulationError, match="event-time order"):
        list(timeline([_ev(10, "a"), _ev(5, "b")], ROUTES))
    with pytest.raises(DefinitionError, match="EventSource"):
        list(timeline([SimEvent("rides", {"event_id": "r"}, 0, "k")], ROUTES))
    with pytest.raises(SimulationError, match="event_id"):
        list(timeline([SimEvent("transactions", {"amount": 1.0}, 0, "k")], ROUTES))
    bad = _ev(0, "a")
    bad.record["amount"] = float("nan")
    with pytest.raises(SimulationError, match="JSON"):
        list(timeline([bad], ROUTES))


def test_pacer_maps_event_time_to_wall_time() -> None:
    p = Pacer(start_ms=0, speed=10.0, wall0_s=50.0)
    assert p.wait_s(20_000, now_s=50.5) == pytest.approx(1.5)
    assert p.wait_s(1_000, now_s=60.0) == 0.0  # late: no wait
    assert Pacer(0, 0.0, 0.0).wait_s(10**9, 0.0) == 0.0
    with pytest.raises(SimulationError):
        Pacer(0, -1.0, 0.0)


def test_produce_paces_sends_everything_and_reports_by_source_and_tag() -> None:
    events = [_ev(0, "a", 1, tag="burst"), _ev(4000, "b", 0, tag="legit"), _ev(6000, "c", None)]
    sink, clock = FakeSink(), FakeClock()
    lines: list[str] = []
    report = produce_simulation(
        events, ROUTES, sink, start_ms=0, speed=2.0, progress=lines.append,
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert [k for _, k, _ in sink.sent] == ["c1", "a", "c1", "b", "c1"]
    assert sink.flushed == 1
    # Speed 2: 6 s of event time in 3 s of wall time.
    assert clock.now - 1000.0 == pytest.approx(3.0)
    assert report.events == 3 and report.outcomes == 2 and report.scored == 2
    assert report.by_source == {"transactions": 3}
    assert report.by_tag == {"transactions/burst": 1, "transactions/legit": 1, "transactions/x": 1}
    text = report.describe(3.0)
    assert "produced 3 events" in text and "2 outcomes" in text and "mean label 0.5" in text
    assert lines == []  # under 5 s of wall time: no progress line


def test_produce_as_fast_as_possible_never_sleeps() -> None:
    sink, clock = FakeSink(), FakeClock()
    events = [_ev(t, f"e{t}") for t in range(0, 100_000, 1000)]
    produce_simulation(events, ROUTES, sink, start_ms=0, speed=0, clock=clock, sleep=clock.sleep)
    assert clock.slept == [] and len(sink.sent) == 200


def test_the_example_simulation_goes_through_the_routes() -> None:
    sim = load_simulation(ROOT)
    cfg = SimulationConfig(seed=2, duration_s=30, rate=20, outcome_delay_s=3)
    msgs = list(timeline(sim.simulate(cfg), ROUTES))
    events = [m for m in msgs if m.event is not None]
    outcomes = [m for m in msgs if m.outcome is not None]
    assert len(events) == len(outcomes) > 300
    assert [m.time_ms for m in msgs] == sorted(m.time_ms for m in msgs)


def test_params_and_start_parse() -> None:
    assert parse_params(["a=1", "b=0.5", "c=text", "d=true", "e="]) == {
        "a": 1,
        "b": 0.5,
        "c": "text",
        "d": True,
        "e": "",
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_params(["novalue"])
    assert parse_start("1700000000000") == 1_700_000_000_000
    with pytest.raises(ConfigError, match="ISO-8601"):
        parse_start("yesterday")


def test_a_repo_without_simulator_is_told_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="simulate"):
        load_simulation(tmp_path)
    (tmp_path / "simulator.py").write_text("x = 1\n")
    with pytest.raises(DefinitionError, match="simulate"):
        load_simulation(tmp_path)
