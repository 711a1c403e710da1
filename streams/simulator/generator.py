"""A deterministic stream of card transactions with fraud, labels and optional drift.

Pure: no sockets, no clock. The same :class:`SimulatorConfig` yields the same
transactions, labels and delays, in event-time order.

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

>>> from loopline.streams.simulator.config import SimulatorConfig
>>> cfg = SimulatorConfig(seed=3, duration_s=30, rate=50, fraud_rate=0.05)
>>> first = [s.transaction for s in Simulator(cfg).transactions()]
>>> first == [s.transaction for s in Simulator(cfg).transactions()]
True
>>> all(a.event_time <= b.event_time for a, b in zip(first, first[1:]))
True
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from loopline.contracts.schemas import Outcome, Transaction
from loopline.streams.simulator.config import SimulatorConfig

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


@dataclass(frozen=True)
class SimulatedTransaction:
    """One transaction, its true label (1 = fraud) and when its outcome is known."""

    transaction: Transaction
    label: int
    outcome_delay_s: float
    pattern: str  # "legit" or one of PATTERNS

    @property
    def outcome(self) -> Outcome:
        t = self.transaction
        return Outcome(t.event_id, self.label, t.event_time + round(self.outcome_delay_s * 1000))


@dataclass(frozen=True)
class _Card:
    id: str
    scale: float  # typical amount
    favourites: tuple[int, ...]  # merchant indexes


class _Population:
    """Cards and merchants, drawn once from the seed."""

    def __init__(self, cfg: SimulatorConfig, rng: random.Random) -> None:
        n_m = cfg.merchants
        self.merchant_ids = [f"m{i:05d}" for i in range(n_m)]
        self.merchant_price = [rng.lognormvariate(0.0, 0.45) for _ in range(n_m)]
        popularity = [1.0 / (rank + 1) ** 0.9 for rank in range(n_m)]
        rng.shuffle(popularity)
        self.merchant_cum = list(itertools.accumulate(popularity))
        cards = []
        activity = []
        for i in range(cfg.cards):
            favourites = tuple(self.popular_merchant(rng) for _ in range(rng.randint(3, 8)))
            cards.append(_Card(f"c{i:06d}", rng.lognormvariate(math.log(35.0), 0.55), favourites))
            # Heavy users, but no card buys more than ~25x the typical one.
            activity.append(min(rng.paretovariate(1.6), 25.0))
        self.cards = cards
        self.card_cum = list(itertools.accumulate(activity))

    def popular_merchant(self, rng: random.Random) -> int:
        x = rng.random() * self.merchant_cum[-1]
        return min(bisect.bisect_right(self.merchant_cum, x), len(self.merchant_cum) - 1)

    def active_card(self, rng: random.Random) -> _Card:
        x = rng.random() * self.card_cum[-1]
        return self.cards[min(bisect.bisect_right(self.card_cum, x), len(self.cards) - 1)]


class Simulator:
    """``Simulator(config).transactions()`` or ``.timeline()``; each call starts over."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config

    def transactions(self) -> Iterator[SimulatedTransaction]:
        """Transactions in event-time order."""
        cfg = self.config
        rng = random.Random(cfg.seed)
        pop = _Population(cfg, rng)
        drift_at = cfg.drift_at_ms
        # Pending fraud transactions: (time ms, tie-break, fields).
        pending: list[tuple[int, int, tuple[str, str, float, str]]] = []
        seq = itertools.count()
        new_merchants = itertools.count()
        legit_t = float(cfg.start_ms)
        fraud_t = float(cfg.start_ms)
        legit_t += self._gap_ms(rng, legit_t, 1.0 - cfg.fraud_rate)
        fraud_t += self._episode_gap_ms(rng, fraud_t)
        n = 0
        id_prefix = f"{cfg.seed}-{cfg.start_ms // 1000}-"
        while cfg.max_events is None or n < cfg.max_events:
            # Start every fraud episode due before the next transaction.
            while fraud_t <= min(legit_t, pending[0][0] if pending else math.inf):
                if fraud_t >= cfg.end_ms:
                    fraud_t = math.inf
                    break
                drifted = drift_at is not None and fraud_t >= drift_at
                for t_ms, fields in self._episode(rng, pop, int(fraud_t), drifted, new_merchants):
                    heapq.heappush(pending, (t_ms, next(seq), fields))
                fraud_t += self._episode_gap_ms(rng, fraud_t)
            if pending and pending[0][0] <= legit_t:
                t_ms, _, (card_id, merchant_id, amount, pattern) = heapq.heappop(pending)
                label = 1
            else:
                t_ms = int(legit_t)
                card = pop.active_card(rng)
                if rng.random() < 0.8:
                    m = card.favourites[rng.randrange(len(card.favourites))]
                else:
                    m = pop.popular_merchant(rng)
                amount = card.scale * pop.merchant_price[m] * rng.lognormvariate(0.0, 0.6)
                if drift_at is not None and t_ms >= drift_at:
                    amount *= cfg.drift_amount_factor
                card_id, merchant_id, pattern, label = card.id, pop.merchant_ids[m], LEGIT, 0
                legit_t += self._gap_ms(rng, legit_t, 1.0 - cfg.fraud_rate)
            if t_ms >= cfg.end_ms:
                return
            delay = cfg.outcome_delay_s * rng.uniform(0.5, 1.5)
            tx = Transaction(
                event_id=f"{id_prefix}{n}",
                card_id=card_id,
                merchant_id=merchant_id,
                amount=max(round(amount, 2), 0.01),
                event_time=t_ms,
            )
            yield SimulatedTransaction(tx, label, delay, pattern)
            n += 1

    def timeline(self) -> Iterator[SimulatedTransaction | Outcome]:
        """Transactions and their outcomes, merged in time order (outcomes last on ties)."""
        due: list[tuple[int, int, Outcome]] = []
        seq = itertools.count()
        for sim in self.transactions():
            t = sim.transaction.event_time
            while due and due[0][0] < t:
                yield heapq.heappop(due)[2]
            yield sim
            out = sim.outcome
            heapq.heappush(due, (out.event_time, next(seq), out))
        while due:
            yield heapq.heappop(due)[2]

    # -- arrival processes --------------------------------------------------------
    def _rhythm(self, t_ms: float) -> float:
        """Traffic multiplier by hour of day (UTC): 0.45 at 03:00, 1.55 at 15:00, mean 1."""
        if not self.config.daily_rhythm:
            return 1.0
        hour = (t_ms / 3_600_000.0) % 24.0
        return 1.0 + 0.55 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)

    def _gap_ms(self, rng: random.Random, t_ms: float, share: float) -> float:
        rate = self.config.rate * share * self._rhythm(t_ms)
        return rng.expovariate(rate) * 1000.0

    def _episode_gap_ms(self, rng: random.Random, t_ms: float) -> float:
        cfg = self.config
        if cfg.fraud_rate <= 0:
            return math.inf
        drifted = cfg.drift_at_ms is not None and t_ms >= cfg.drift_at_ms
        mix = _MIX_AFTER if drifted else _MIX_BEFORE
        fraud_share = cfg.fraud_rate * (cfg.drift_fraud_factor if drifted else 1.0)
        mean_len = sum(mix[p] * _MEAN_LENGTH[p] for p in PATTERNS)
        return self._gap_ms(rng, t_ms, fraud_share / mean_len)

    def _episode(
        self,
        rng: random.Random,
        pop: _Population,
        t0: int,
        drifted: bool,
        new_merchants: Iterator[int],
    ) -> list[tuple[int, tuple[str, str, float, str]]]:
        mix = _MIX_AFTER if drifted else _MIX_BEFORE
        x, pattern = rng.random(), PATTERNS[-1]
        for p in PATTERNS:
            if x < mix[p]:
                pattern = p
                break
            x -= mix[p]
        card = pop.cards[rng.randrange(len(pop.cards))]
        out: list[tuple[int, tuple[str, str, float, str]]] = []
        t = float(t0)
        if pattern == BURST:
            for _ in range(rng.randint(3, 8)):
                m = pop.merchant_ids[rng.randrange(len(pop.merchant_ids))]
                out.append((int(t), (card.id, m, card.scale * rng.uniform(6.0, 25.0), pattern)))
                t += rng.expovariate(1 / 40.0) * 1000
        elif pattern == NEW_MERCHANT:
            low, high = (0.8, 2.0) if drifted else (2.0, 6.0)
            for _ in range(rng.randint(2, 5)):
                m = f"mnew{next(new_merchants):05d}"
                out.append((int(t), (card.id, m, card.scale * rng.uniform(low, high), pattern)))
                t += rng.expovariate(1 / 90.0) * 1000
        else:
            shops = [pop.merchant_ids[rng.randrange(len(pop.merchant_ids))] for _ in range(2)]
            for _ in range(rng.randint(6, 20)):
                out.append((int(t), (card.id, rng.choice(shops), rng.uniform(0.5, 2.5), pattern)))
                t += rng.expovariate(1 / 10.0) * 1000
            if rng.random() < 0.6:
                big = card.scale * rng.uniform(5.0, 15.0)
                out.append((int(t), (card.id, rng.choice(shops), big, pattern)))
        return out
