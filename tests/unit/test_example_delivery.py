"""The delivery example repo: regression, two entities (one int-keyed), two topics.

The repo loads and compiles; its simulator is deterministic, time-ordered and
produces only events its own declarations accept; point-in-time replay over
both topics gives a finite vector for every order; and the jam really makes
deliveries in jammed zones slower (what the demo's retrain must catch).
"""

from __future__ import annotations

import json
import math
import statistics
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from loopline.config.loader import load_settings
from loopline.featurecore.entity_state import final_values, replay
from loopline.featurecore.event_schema import EventParser
from loopline.featurecore.features import SOURCE_TAG
from loopline.featurecore.project import Project
from loopline.featurerepo.loader import _LOADED, load_project, model_of, read_repo_config
from loopline.simulation.api import SimEvent, SimulationConfig, load_simulator

REPO = Path(__file__).resolve().parents[2] / "examples" / "delivery"
CONFIG = SimulationConfig(seed=11, duration_s=900, rate=8, drift_at_s=450, daily_rhythm=False)


@cache
def project() -> Project:
    return load_project(REPO)


@cache
def stream(config: SimulationConfig = CONFIG) -> tuple[SimEvent, ...]:
    return tuple(load_simulator(REPO, read_repo_config(REPO).simulator)(config))


def parsed(events: tuple[SimEvent, ...]) -> list[dict[str, Any]]:
    """Each event as the features flow sees it: decoded by its source, tagged with it."""
    p = project()
    keys = {k for v in p.feature_set().views for k in v.key_fields}
    parsers = {s.name: EventParser(s, keys) for s in p.sources}
    return [
        {**parsers[e.source].parse(json.dumps(e.record).encode()), SOURCE_TAG: e.source}
        for e in events
    ]


def test_repo_loads_and_compiles_to_a_multi_source_regression_model() -> None:
    p = project()
    model = p.model()
    assert (p.name, model.name, model.task, model.primary_metric) == (
        "delivery",
        "eta",
        "regression",
        "rmse",
    )
    assert {e.name: e.key_type for e in p.entities} == {"courier": "string", "zone": "int"}
    assert sorted(p.topics()) == ["courier-pings", "delivery-outcomes", "orders"]
    fs = p.feature_set()
    assert fs.scored_source == "orders" and fs.event_time_field == "placed_at"
    assert {v.entity: v.source for v in fs.views} == {
        "courier": "pings",
        "courier_orders": "orders",
        "zone": "orders",
        "zone_traffic": "pings",
    }
    # A pings view reads its own time field; an orders view the scored one.
    assert fs.view("courier").time_field == "at" and fs.view("zone").time_field is None
    assert len(fs.model_features) == 20
    assert model.outcomes.on_timeout == "drop" and model.outcomes.maturity_s == 7200


def test_fingerprint_is_stable_across_loads() -> None:
    fs = project().feature_set()
    # Compiled afresh from the same declarations: the same fingerprint.
    fresh = Project.of("delivery", [*project().views, *project().models])
    assert fresh.feature_set().fingerprint == fs.fingerprint
    # Imported again from disk (a new module, new objects): still the same.
    _LOADED.clear()
    assert load_project(REPO).feature_set().fingerprint == fs.fingerprint


def test_settings_sections_apply_and_bind_the_model() -> None:
    s = load_settings(repo=REPO, env={})
    assert model_of(s).name == "eta"
    assert (s.labels.timeout_policy, s.labels.maturity_s) == ("drop", 7200.0)
    assert s.drift.error_mode == "absolute"


def test_simulator_is_deterministic_and_time_ordered() -> None:
    events = stream()
    assert events == tuple(load_simulator(REPO)(CONFIG))
    times = [e.time_ms for e in events]
    assert times == sorted(times)
    assert CONFIG.start_ms <= times[0] and times[-1] < CONFIG.end_ms
    assert {e.source for e in events} == {"orders", "pings"}
    other = load_simulator(REPO)(SimulationConfig(seed=12, duration_s=900, rate=8))
    assert [e.record for e in islice(other, 50)] != [e.record for e in events[:50]]


def test_only_orders_are_scored_and_ids_are_unique() -> None:
    events = stream()
    orders = [e for e in events if e.source == "orders"]
    assert all(e.scored for e in orders)
    assert not any(e.scored for e in events if e.source != "orders")
    assert abs(len(orders) / CONFIG.duration_s - CONFIG.rate) < CONFIG.rate * 0.15
    assert len({e.record["order_id"] for e in orders}) == len(orders)
    pings = [e.record["ping_id"] for e in events if e.source == "pings"]
    assert len(set(pings)) == len(pings)
    # Demo-scale delays: a typical delivery reports after config.outcome_delay_s.
    delays = [e.outcome_delay_s or 0.0 for e in orders]
    assert 5 < statistics.median(delays) < 60 and min(delays) > 0


def test_real_delays_are_the_delivery_times() -> None:
    cfg = SimulationConfig(seed=3, duration_s=60, rate=4, params={"real_delays": True})
    orders = [e for e in load_simulator(REPO)(cfg) if e.scored]
    assert orders and all(e.outcome_delay_s == e.label for e in orders)


def test_max_events_bounds_the_stream() -> None:
    cfg = SimulationConfig(seed=3, duration_s=600, rate=10, max_events=123)
    assert len(list(load_simulator(REPO)(cfg))) == 123


def test_every_simulated_record_passes_its_sources_parser() -> None:
    records = parsed(stream())
    orders = [r for r in records if r[SOURCE_TAG] == "orders"]
    # ISO-8601 placed_at became epoch ms equal to the event's time.
    by_id = {e.record.get("order_id"): e.time_ms for e in stream() if e.source == "orders"}
    assert all(r["placed_at"] == by_id[r["order_id"]] for r in orders)
    assert all(isinstance(r["zone_id"], int) for r in records)


def test_replay_gives_finite_features_for_every_order() -> None:
    fs = project().feature_set()
    records = parsed(stream())
    rows = list(replay(fs, records))
    assert len(rows) == sum(r[SOURCE_TAG] == "orders" for r in records)
    assert all(len(r.features) == len(fs.model_features) for r in rows)
    assert all(math.isfinite(x) for r in rows for x in r.features)
    # Features are really fed by both topics: late rows know their courier and zone.
    late = rows[len(rows) // 2 :]
    col = {name: i for i, name in enumerate(fs.model_features)}
    assert statistics.mean(r.features[col["courier.speed_mean_1h"]] for r in late) > 5
    assert statistics.mean(r.features[col["zone.order_count_1h"]] for r in late) > 10
    assert statistics.mean(r.features[col["courier.delivering_pings_1h"]] for r in late) > 1
    assert all(r.features[col["courier.since_last_ping"]] < 60 for r in late)
    # Both key types end up as entity ids the store can hold.
    entities = {entity for entity, _ in final_values(fs, records)}
    assert entities == {"courier", "courier_orders", "zone", "zone_traffic"}


def test_jam_raises_delivery_times_in_jammed_zones_only() -> None:
    events = stream()
    drift_ms = CONFIG.drift_at_ms
    assert drift_ms is not None
    jammed = {e.record["zone_id"] for e in events if e.tag == "jam"}
    assert jammed

    def mean_label(in_jam: bool, after: bool) -> float:
        return statistics.mean(
            e.label or 0.0
            for e in events
            if e.scored
            and (e.record["zone_id"] in jammed) == in_jam
            and (e.time_ms >= drift_ms) == after
        )

    assert mean_label(True, True) > 1.4 * mean_label(True, False)
    assert mean_label(False, True) == pytest.approx(mean_label(False, False), rel=0.1)
    # Pings from jammed zones slow down too, but far less than the deliveries.
    speeds = {
        after: statistics.mean(
            e.record["speed_kmh"]
            for e in events
            if e.source == "pings"
            and e.record["zone_id"] in jammed
            and e.record["status"] == "delivering"
            and (e.time_ms >= drift_ms) == after
        )
        for after in (False, True)
    }
    assert 0.6 < speeds[True] / speeds[False] < 0.95


def test_no_drift_means_no_jam() -> None:
    cfg = SimulationConfig(seed=11, duration_s=300, rate=8)
    assert {e.tag for e in load_simulator(REPO)(cfg) if e.scored} == {"normal"}
