"""The fraud example's simulator: deterministic, realistic enough, drift as configured."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fraud_repo import PROJECT, ROOT, transaction_parser

from loopline.contracts.errors import ConfigError
from loopline.simulation import SimEvent, SimulationConfig
from loopline.simulation.api import load_simulation

pytestmark = pytest.mark.unit

SIM = load_simulation(ROOT, "simulator.py")
BASE = SimulationConfig(
    seed=11, start_ms=1_700_000_000_000, duration_s=600, rate=40, params={"fraud_rate": 0.02}
)
BURST, CARD_TESTING, NEW_MERCHANT, LEGIT = "burst", "card_testing", "new_merchant", "legit"


def _events(cfg: SimulationConfig = BASE, **params: Any) -> list[SimEvent]:
    if params:
        cfg = dataclasses.replace(cfg, params={**cfg.params, **params})
    stream: Iterator[SimEvent] = SIM.simulate(cfg)
    return list(stream)


def test_the_repo_names_its_simulator_and_demo_params() -> None:
    from loopline.featurerepo.loader import read_repo_config

    assert read_repo_config(ROOT).simulator == "simulator.py"
    assert SIM.demo_params["fraud_rate"] > 0.01  # the demo runs a stronger scenario


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a, b = _events(), _events()
    assert a == b
    other = _events(dataclasses.replace(BASE, seed=12))
    assert [e.record for e in other[:50]] != [e.record for e in a[:50]]


def test_every_record_passes_the_repos_parser_in_time_order() -> None:
    events = _events()
    parser = transaction_parser()
    source = PROJECT.model().scores
    for e in events:
        assert e.source == source.name and e.scored
        assert parser.parse(json.dumps(e.record).encode()) == e.record
        assert e.record["event_time"] == e.time_ms and e.key == e.record["card_id"]
    times = [e.time_ms for e in events]
    assert times == sorted(times)
    assert BASE.start_ms <= times[0] and times[-1] < BASE.end_ms
    assert len({e.record["event_id"] for e in events}) == len(events)
    # Rate: ~40/s, modulated by the daily rhythm (22:13 UTC here: below the mean).
    assert 0.6 * 40 * 600 < len(events) < 1.1 * 40 * 600


def test_flat_rate_without_the_daily_rhythm() -> None:
    events = _events(dataclasses.replace(BASE, daily_rhythm=False))
    assert 0.9 * 40 * 600 < len(events) < 1.1 * 40 * 600


def test_population_is_large_and_skewed() -> None:
    cfg = dataclasses.replace(BASE, duration_s=1800)
    events = _events(cfg, cards=3000, merchants=800)
    per_card = Counter(e.record["card_id"] for e in events)
    per_merchant = Counter(e.record["merchant_id"] for e in events)
    assert len(per_card) > 1500 and len(per_merchant) > 400
    # Heavy users and popular merchants exist.
    assert per_card.most_common(1)[0][1] > 10 * statistics.median(per_card.values())
    assert per_merchant.most_common(1)[0][1] > 20 * statistics.median(per_merchant.values())


def test_fraud_share_patterns_and_labels() -> None:
    events = _events(dataclasses.replace(BASE, duration_s=1800))
    fraud = [e for e in events if e.label]
    assert 0.01 < len(fraud) / len(events) < 0.035
    assert {e.tag for e in fraud} == {BURST, NEW_MERCHANT, CARD_TESTING}
    assert all(e.tag == LEGIT and e.label == 0 for e in events if not e.label)
    legit_median = statistics.median(e.record["amount"] for e in events if not e.label)
    burst = [e.record["amount"] for e in fraud if e.tag == BURST]
    testing = [e.record["amount"] for e in fraud if e.tag == CARD_TESTING]
    assert statistics.median(burst) > 5 * legit_median
    assert statistics.median(testing) < 3.0
    assert all(e.record["merchant_id"].startswith("mnew") for e in fraud if e.tag == NEW_MERCHANT)


def test_outcomes_follow_their_transactions_by_the_configured_lag() -> None:
    for e in _events(dataclasses.replace(BASE, outcome_delay_s=120.0))[:2000]:
        assert e.outcome_delay_s is not None and 60.0 <= e.outcome_delay_s <= 180.0
        assert e.outcome_time_ms == e.time_ms + round(e.outcome_delay_s * 1000)


def test_drift_shifts_amounts_and_changes_the_fraud_pattern() -> None:
    cfg = dataclasses.replace(
        BASE, duration_s=7200, rate=5, drift_at_s=3600, params={"fraud_rate": 0.04}
    )
    assert cfg.drift_at_ms is not None
    events = _events(cfg)
    before = [e for e in events if e.time_ms < cfg.drift_at_ms]
    after = [e for e in events if e.time_ms >= cfg.drift_at_ms]
    legit = [
        statistics.median(e.record["amount"] for e in part if not e.label)
        for part in (before, after)
    ]
    assert legit[1] > 1.5 * legit[0]
    mix = [Counter(e.tag for e in part if e.label) for part in (before, after)]
    share = [m[CARD_TESTING] / sum(m.values()) for m in mix]
    assert share[1] > share[0] + 0.2
    assert mix[1][BURST] / sum(mix[1].values()) < mix[0][BURST] / sum(mix[0].values())
    # Fraud gets more frequent (drift_fraud_factor 1.5).
    rate = [sum(1 for e in part if e.label) / len(part) for part in (before, after)]
    assert rate[1] > 1.2 * rate[0]
    # Without drift the second hour looks like the first.
    plain = _events(dataclasses.replace(cfg, drift_at_s=None))
    late = [e.record["amount"] for e in plain if e.time_ms >= cfg.drift_at_ms and not e.label]
    assert statistics.median(late) < 1.3 * legit[0]


def test_drift_factors_come_from_params() -> None:
    cfg = dataclasses.replace(BASE, duration_s=1200, drift_at_s=600, daily_rhythm=False)
    assert cfg.drift_at_ms is not None

    def after_median(**params: Any) -> float:
        return statistics.median(
            e.record["amount"]
            for e in _events(cfg, **params)
            if e.time_ms >= cfg.drift_at_ms and not e.label
        )

    assert after_median(drift_amount_factor=4.0) > 1.8 * after_median()


def test_max_events_stops_early() -> None:
    assert len(_events(dataclasses.replace(BASE, max_events=123))) == 123


@pytest.mark.parametrize(
    "params",
    [{"cards": 0}, {"fraud_rate": 0.7}, {"fraud_rate": "lots"}, {"colour": "red"}],
)
def test_bad_params_are_refused_with_the_fix(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="param"):
        _events(dataclasses.replace(BASE, params=params))
