"""The traffic simulator's generator: deterministic, realistic enough, drift as configured."""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter

import pytest

from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import Outcome, Transaction, decode, encode
from loopline.streams.simulator import (
    BURST,
    CARD_TESTING,
    LEGIT,
    NEW_MERCHANT,
    Simulator,
    SimulatorConfig,
)
from loopline.streams.simulator.generator import SimulatedTransaction

BASE = SimulatorConfig(
    seed=11, start_ms=1_700_000_000_000, duration_s=600, rate=40, fraud_rate=0.02
)


def _txs(cfg: SimulatorConfig = BASE) -> list[SimulatedTransaction]:
    return list(Simulator(cfg).transactions())


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a, b = _txs(), _txs()
    assert a == b
    other = _txs(dataclasses.replace(BASE, seed=12))
    assert [s.transaction for s in other[:50]] != [s.transaction for s in a[:50]]


def test_stream_is_ordered_valid_unique_and_within_the_duration() -> None:
    txs = _txs()
    times = [s.transaction.event_time for s in txs]
    assert times == sorted(times)
    assert BASE.start_ms <= times[0] and times[-1] < BASE.end_ms
    assert len({s.transaction.event_id for s in txs}) == len(txs)
    for s in txs[:500]:
        assert decode(Transaction, encode(s.transaction)) == s.transaction
    # Rate: ~40/s, modulated by the daily rhythm (22:13 UTC here: below the mean).
    assert 0.6 * 40 * 600 < len(txs) < 1.1 * 40 * 600


def test_population_is_large_and_skewed() -> None:
    cfg = dataclasses.replace(BASE, duration_s=1800, rate=40, cards=3000, merchants=800)
    txs = _txs(cfg)
    per_card = Counter(s.transaction.card_id for s in txs)
    per_merchant = Counter(s.transaction.merchant_id for s in txs)
    assert len(per_card) > 1500 and len(per_merchant) > 400
    # Heavy users and popular merchants exist.
    assert per_card.most_common(1)[0][1] > 10 * statistics.median(per_card.values())
    assert per_merchant.most_common(1)[0][1] > 20 * statistics.median(per_merchant.values())


def test_fraud_share_patterns_and_labels() -> None:
    txs = _txs(dataclasses.replace(BASE, duration_s=1800))
    fraud = [s for s in txs if s.label]
    assert 0.01 < len(fraud) / len(txs) < 0.035
    assert {s.pattern for s in fraud} == {BURST, NEW_MERCHANT, CARD_TESTING}
    assert all(s.pattern == LEGIT for s in txs if not s.label)
    legit_median = statistics.median(s.transaction.amount for s in txs if not s.label)
    burst = [s.transaction.amount for s in fraud if s.pattern == BURST]
    testing = [s.transaction.amount for s in fraud if s.pattern == CARD_TESTING]
    assert statistics.median(burst) > 5 * legit_median
    assert statistics.median(testing) < 3.0
    new = [s.transaction.merchant_id for s in fraud if s.pattern == NEW_MERCHANT]
    assert all(m.startswith("mnew") for m in new)


def test_outcomes_follow_their_transactions_by_the_configured_lag() -> None:
    cfg = dataclasses.replace(BASE, outcome_delay_s=120.0)
    for s in _txs(cfg)[:2000]:
        assert 60.0 <= s.outcome_delay_s <= 180.0
        out = s.outcome
        assert out.event_id == s.transaction.event_id and out.label == s.label
        assert out.event_time == s.transaction.event_time + round(s.outcome_delay_s * 1000)


def test_timeline_merges_outcomes_in_time_order() -> None:
    cfg = dataclasses.replace(BASE, duration_s=300)
    items = list(Simulator(cfg).timeline())
    txs = [i for i in items if isinstance(i, SimulatedTransaction)]
    outs = [i for i in items if isinstance(i, Outcome)]
    assert len(txs) == len(outs)
    assert {o.event_id for o in outs} == {s.transaction.event_id for s in txs}
    times = [i.event_time if isinstance(i, Outcome) else i.transaction.event_time for i in items]
    assert times == sorted(times)


def test_drift_shifts_amounts_and_changes_the_fraud_pattern() -> None:
    cfg = dataclasses.replace(BASE, duration_s=7200, rate=5, drift_at_s=3600, fraud_rate=0.04)
    txs = _txs(cfg)
    before = [s for s in txs if s.transaction.event_time < cfg.drift_at_ms]
    after = [s for s in txs if s.transaction.event_time >= cfg.drift_at_ms]
    legit = [
        statistics.median(s.transaction.amount for s in part if not s.label)
        for part in (before, after)
    ]
    assert legit[1] > 1.5 * legit[0]
    mix = [Counter(s.pattern for s in part if s.label) for part in (before, after)]
    share = [m[CARD_TESTING] / sum(m.values()) for m in mix]
    assert share[1] > share[0] + 0.2
    assert mix[1][BURST] / sum(mix[1].values()) < mix[0][BURST] / sum(mix[0].values())
    # Without drift the second hour looks like the first.
    plain = _txs(dataclasses.replace(cfg, drift_at_s=None))
    late = [s.transaction.amount for s in plain if s.transaction.event_time >= cfg.drift_at_ms]
    assert (
        statistics.median(a for a, s in zip(late, plain[-len(late) :], strict=True) if not s.label)
        < 1.3 * legit[0]
    )


def test_max_events_stops_early() -> None:
    assert len(_txs(dataclasses.replace(BASE, max_events=123))) == 123


@pytest.mark.parametrize(
    "change",
    [{"rate": 0}, {"duration_s": -1}, {"cards": 0}, {"fraud_rate": 0.7}, {"outcome_delay_s": -1}],
)
def test_bad_configs_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(BASE, **change)
