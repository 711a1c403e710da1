"""Card traffic with fraud episodes, delayed chargebacks and an optional drift.

``loopline simulate`` and ``loopline demo`` call :func:`simulate`; it is pure
(no sockets, no clock): the same config yields the same events, labels and
delays, in event-time order. Every transaction is scored (label 1 = fraud).

Legit traffic: cards differ in activity (a few heavy users) and spending level;
each has a handful of favourite merchants; merchants differ in popularity and
price level; the rate follows a daily rhythm (quiet nights, busy afternoons).
Fraud comes in episodes on a compromised card:

- ``burst``: a few high amounts within minutes, at merchants the card never uses;
- ``new_merchant``: purchases at merchants never seen before;
- ``card_testing``: many tiny amounts within a minute or two, often followed by
  one large purchase.

Drift (from ``drift_at_s``): legit amounts shift up, fraud gets more frequent
and its mix changes (card testing and low-key new-merchant fraud at ordinary
amounts replace the high-amount bursts a model learned), so a model trained
before it loses accuracy after it.

Scenario knobs (``config.params``, ``--param NAME=VALUE``): ``cards`` (5000),
``merchants`` (800), ``fraud_rate`` (0.01, the share of fraudulent
transactions), ``drift_amount_factor`` (1.8, legit amounts after the drift),
``drift_fraud_factor`` (1.5, how much more frequent fraud gets after it).

>>> from loopline.simulation import SimulationConfig
>>> cfg = SimulationConfig(seed=3, duration_s=30, rate=50, params={"fraud_rate": 0.05})
>>> first = list(simulate(cfg))
>>> first == list(simulate(cfg))
True
>>> all(a.time_ms <= b.time_ms for a, b in zip(first, first[1:]))
True
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.simulation import SimEvent, SimulationConfig
from loopline.simulation.toolkit import Arrivals, Pending, Population, choose, event_ids, ids

SOURCE = "transactions"  # the EventSource in definitions.py
LEGIT = "legit"
BURST = "burst"
NEW_MERCHANT = "new_merchant"
CARD_TESTING = "card_testing"
PATTERNS = (BURST, NEW_MERCHANT, CARD_TESTING)

# Share of fraud episodes by pattern, before and after drift.
_MIX_BEFORE = {BURST: 0.55, NEW_MERCHANT: 0.30, CARD_TESTING: 0.15}
_MIX_AFTER = {BURST: 0.10, NEW_MERCHANT: 0.40, CARD_TESTING: 0.50}
# Mean transactions per episode (see _episode): used to hit the fraud rate.
_MEAN_LENGTH = {BURST: 5.5, NEW_MERCHANT: 3.5, CARD_TESTING: 13.0 + 0.6}

# What `loopline demo` runs on this repo: a smaller world, more fraud and a
# drift strong enough that the old model visibly degrades within minutes.
DEMO_PARAMS = {
    "cards": 3000,
    "merchants": 400,
    "fraud_rate": 0.03,
    "drift_amount_factor": 4.0,
    "drift_fraud_factor": 3.0,
}


@dataclass(frozen=True)
class FraudParams:
    """The scenario knobs, checked; defaults are the realistic (non-demo) world."""

    cards: int = 5000
    merchants: int = 800
    fraud_rate: float = 0.01
    drift_amount_factor: float = 1.8
    drift_fraud_factor: float = 1.5

    @staticmethod
    def of(config: SimulationConfig) -> FraudParams:
        known = set(FraudParams.__dataclass_fields__)
        unknown = sorted(set(config.params) - known)
        if unknown:
            raise ConfigError(
                f"fraud simulator: unknown param {unknown[0]!r}; known: {sorted(known)}"
            )
        d = FraudParams()
        return FraudParams(
            cards=int(_number(config, "cards", d.cards)),
            merchants=int(_number(config, "merchants", d.merchants)),
            fraud_rate=_number(config, "fraud_rate", d.fraud_rate),
            drift_amount_factor=_number(config, "drift_amount_factor", d.drift_amount_factor),
            drift_fraud_factor=_number(config, "drift_fraud_factor", d.drift_fraud_factor),
        )

    def __post_init__(self) -> None:
        if self.cards < 1 or self.merchants < 1:
            raise ConfigError("fraud simulator needs --param cards>=1 and --param merchants>=1")
        if not 0 <= self.fraud_rate < 0.5:
            raise ConfigError("fraud simulator: --param fraud_rate must be in [0, 0.5)")
        if self.drift_amount_factor <= 0 or self.drift_fraud_factor <= 0:
            raise ConfigError("fraud simulator: drift factors must be > 0")


def _number(config: SimulationConfig, name: str, default: float) -> float:
    value: Any = config.param(name, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"fraud simulator: --param {name}={value!r} must be a number") from None


@dataclass(frozen=True)
class _Card:
    id: str
    scale: float  # typical amount
    favourites: tuple[int, ...]  # merchant indexes


class _World:
    """Cards and merchants, drawn once from the seed."""

    def __init__(self, p: FraudParams, rng: random.Random) -> None:
        self.merchant_ids = ids("m", p.merchants)
        self.merchant_price = [rng.lognormvariate(0.0, 0.45) for _ in range(p.merchants)]
        self.merchants = Population.zipf(self.merchant_ids, rng, exponent=0.9)
        self.cards = [
            _Card(
                card_id,
                rng.lognormvariate(math.log(35.0), 0.55),
                tuple(self.merchants.pick_index(rng) for _ in range(rng.randint(3, 8))),
            )
            for card_id in ids("c", p.cards, width=6)
        ]
        # Heavy users, but no card buys more than ~25x the typical one.
        self.activity = Population.weighted([c.id for c in self.cards], rng, skew=1.6, cap=25.0)

    def active_card(self, rng: random.Random) -> _Card:
        return self.cards[self.activity.pick_index(rng)]

    def any_merchant(self, rng: random.Random) -> str:
        return self.merchant_ids[rng.randrange(len(self.merchant_ids))]


# One scheduled transaction: (card id, merchant id, amount, pattern).
_Fields = tuple[str, str, float, str]


def simulate(config: SimulationConfig) -> Iterator[SimEvent]:
    """Transactions in event-time order, each with its label and outcome delay."""
    p = FraudParams.of(config)
    rng = random.Random(config.seed)
    world = _World(p, rng)
    arrivals = Arrivals(config.rate, config.daily_rhythm)
    drift_at = config.drift_at_ms
    pending = Pending()  # fraud transactions of started episodes
    new_merchants = itertools.count()
    event_id = event_ids(config.seed, config.start_ms)
    legit_share = 1.0 - p.fraud_rate

    def episode_gap_ms(t_ms: float) -> float:
        if p.fraud_rate <= 0:
            return math.inf
        drifted = drift_at is not None and t_ms >= drift_at
        mix = _MIX_AFTER if drifted else _MIX_BEFORE
        share = p.fraud_rate * (p.drift_fraud_factor if drifted else 1.0)
        mean_len = sum(mix[k] * _MEAN_LENGTH[k] for k in PATTERNS)
        return arrivals.gap_ms(rng, t_ms, share / mean_len)

    legit_t = config.start_ms + arrivals.gap_ms(rng, config.start_ms, legit_share)
    fraud_t = config.start_ms + episode_gap_ms(config.start_ms)
    n = 0
    while config.max_events is None or n < config.max_events:
        # Start every fraud episode due before the next transaction.
        while fraud_t <= min(legit_t, pending.next_time()):
            if fraud_t >= config.end_ms:
                fraud_t = math.inf
                break
            drifted = drift_at is not None and fraud_t >= drift_at
            for t_ms, fields in _episode(rng, world, int(fraud_t), drifted, new_merchants):
                pending.push(t_ms, (t_ms, fields))
            fraud_t += episode_gap_ms(fraud_t)
        if pending.next_time() <= legit_t:
            t_ms, (card_id, merchant_id, amount, pattern) = pending.pop()
            label = 1
        else:
            t_ms = int(legit_t)
            card = world.active_card(rng)
            if rng.random() < 0.8:
                m = card.favourites[rng.randrange(len(card.favourites))]
            else:
                m = world.merchants.pick_index(rng)
            amount = card.scale * world.merchant_price[m] * rng.lognormvariate(0.0, 0.6)
            if drift_at is not None and t_ms >= drift_at:
                amount *= p.drift_amount_factor
            card_id, merchant_id, pattern, label = card.id, world.merchant_ids[m], LEGIT, 0
            legit_t += arrivals.gap_ms(rng, legit_t, legit_share)
        if t_ms >= config.end_ms:
            return
        delay = config.outcome_delay_s * rng.uniform(0.5, 1.5)
        record = {
            "event_id": next(event_id),
            "card_id": card_id,
            "merchant_id": merchant_id,
            "amount": max(round(amount, 2), 0.01),
            "event_time": t_ms,
        }
        yield SimEvent(SOURCE, record, t_ms, card_id, label, delay, pattern)
        n += 1


def _episode(
    rng: random.Random, world: _World, t0: int, drifted: bool, new_merchants: Iterator[int]
) -> list[tuple[int, _Fields]]:
    """One fraud episode on a random card: its transactions with their times."""
    pattern = choose(rng, _MIX_AFTER if drifted else _MIX_BEFORE)
    card = world.cards[rng.randrange(len(world.cards))]
    out: list[tuple[int, _Fields]] = []
    t = float(t0)
    if pattern == BURST:
        for _ in range(rng.randint(3, 8)):
            amount = card.scale * rng.uniform(6.0, 25.0)
            out.append((int(t), (card.id, world.any_merchant(rng), amount, pattern)))
            t += rng.expovariate(1 / 40.0) * 1000
    elif pattern == NEW_MERCHANT:
        # After the drift new-merchant fraud hides at ordinary amounts.
        low, high = (0.8, 2.0) if drifted else (2.0, 6.0)
        for _ in range(rng.randint(2, 5)):
            merchant = f"mnew{next(new_merchants):05d}"
            out.append((int(t), (card.id, merchant, card.scale * rng.uniform(low, high), pattern)))
            t += rng.expovariate(1 / 90.0) * 1000
    else:
        shops = [world.any_merchant(rng) for _ in range(2)]
        for _ in range(rng.randint(6, 20)):
            out.append((int(t), (card.id, rng.choice(shops), rng.uniform(0.5, 2.5), pattern)))
            t += rng.expovariate(1 / 10.0) * 1000
        if rng.random() < 0.6:
            big = card.scale * rng.uniform(5.0, 15.0)
            out.append((int(t), (card.id, rng.choice(shops), big, pattern)))
    return out
