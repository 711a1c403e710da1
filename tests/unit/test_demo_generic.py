"""The demo's repo-generic parts: Predict requests, re-timing, old-vs-new metrics."""

from __future__ import annotations

import json
import math
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from fraud_repo import PROJECT as FRAUD
from fraud_repo import ROOT as FRAUD_ROOT

from loopline.contracts.topics import Topics
from loopline.demo import metrics
from loopline.demo.config import DemoConfig
from loopline.demo.requests import RequestShape
from loopline.featurecore.event_schema import EventParser
from loopline.featurerepo.loader import load_project
from loopline.simulation import SimulationConfig
from loopline.simulation.api import load_simulation
from loopline.simulation.timeline import Routes

pytestmark = pytest.mark.unit

DELIVERY_ROOT = Path(__file__).resolve().parents[2] / "examples" / "delivery"


def test_fraud_requests_carry_both_entities_and_the_amount() -> None:
    shape = RequestShape.of(FRAUD, FRAUD.model())
    ev = next(iter(load_simulation(FRAUD_ROOT).simulate(SimulationConfig(duration_s=5))))
    assert set(shape.entities(ev)) == {"card_id", "merchant_id"}
    assert shape.fields(ev) == {"amount": ev.record["amount"]}


def test_a_regression_repo_with_two_sources_is_driven_the_same_way() -> None:
    project = load_project(DELIVERY_ROOT)
    model = project.model()
    assert model.task == "regression"
    shape = RequestShape.of(project, model)
    routes = Routes.of(project, model, Topics("d."))
    sim = load_simulation(DELIVERY_ROOT)
    cfg = SimulationConfig(seed=3, duration_s=300, rate=2, daily_rhythm=False)
    events = list(islice(sim.simulate(cfg), 2000))
    scored = [e for e in events if e.scored]
    assert scored and len(scored) < len(events)  # pings are only sent, orders scored
    parsers = {s.name: EventParser(s) for s in project.sources}
    for ev in scored[:50]:
        entities = shape.entities(ev)
        assert set(entities) <= set(shape.entity_fields) and entities
        assert set(shape.fields(ev)) == {f.name for f in model.request}
        moved = shape.restamp(ev, 60_000)
        # The moved record still parses, its event time 60 s later (ISO strings too).
        doc = parsers[ev.source].parse(json.dumps(moved.record).encode())
        time_field = shape.time_fields[ev.source]
        before = parsers[ev.source].parse(json.dumps(ev.record).encode())
        assert doc[time_field] - before[time_field] == 60_000
        assert moved.time_ms == ev.time_ms + 60_000
        out = json.loads(routes.outcome(moved).value)
        assert out[model.outcomes.label] == ev.label
        assert routes.outcome(moved).topic == "d." + model.outcomes.topic


def test_restamp_keeps_an_iso_time_iso() -> None:
    shape = RequestShape(("k",), (), {"s": "at"})
    from loopline.simulation import SimEvent

    ev = SimEvent("s", {"at": "2024-05-01T12:00:00Z"}, 1_714_564_800_000, "k")
    assert shape.restamp(ev, 1500).record["at"] == "2024-05-01T12:00:01.500000Z"


def test_binary_comparison_is_auc() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1], dtype=float)
    old = np.array([0.6, 0.1, 0.2, 0.9, 0.4, 0.3])
    new = np.array([0.1, 0.2, 0.7, 0.9, 0.3, 0.8])
    c = metrics.compare("binary", labels, old, new)
    assert c["auc_new"] == 1.0 and c["auc_old"] < 0.7 and c["positives"] == 3
    c.update(version_old=1.0, version_new=2.0)
    assert "AUC" in metrics.describe("binary", c) and "3 positive" in metrics.describe("binary", c)


def test_regression_comparison_is_rmse_and_mae() -> None:
    labels = np.array([100.0, 200.0, 300.0])
    c = metrics.compare("regression", labels, labels + 30.0, labels + np.array([3.0, -3, 0]))
    assert c["rmse_old"] == pytest.approx(30.0) and c["mae_old"] == pytest.approx(30.0)
    assert c["rmse_new"] == pytest.approx(math.sqrt(6.0)) and c["mae_new"] == pytest.approx(2.0)
    c.update(version_old=1.0, version_new=2.0)
    line = metrics.describe("regression", c)
    assert "RMSE" in line and "old v1 30 -> new v2 2.449" in line
    assert metrics.per_window("regression")[0] == "RMSE"
    assert math.isnan(metrics.rmse(np.array([]), np.array([])))


def test_demo_config_is_generic() -> None:
    cfg = DemoConfig(params={"fraud_rate": 0.05})
    assert cfg.params["fraud_rate"] == 0.05
    assert not hasattr(cfg, "cards") and not hasattr(cfg, "fraud_rate")
