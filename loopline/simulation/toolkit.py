"""Pieces every simulator needs: arrivals, populations, rhythm, merged timelines.

Pure and deterministic: each takes a :class:`random.Random` (or a seed), so
a simulator built from them yields the same stream for the same config.

>>> import random
>>> rng = random.Random(1)
>>> arrivals = Arrivals(rate=10.0, rhythm=False)
>>> t = arrivals.first(rng, 0.0)
>>> t2 = arrivals.next(rng, t)
>>> 0 < t < t2
True
>>> pop = Population.weighted([f"c{i}" for i in range(100)], rng, skew=1.2)
>>> pop.pick(rng) in pop.ids
True
>>> list(merge([(1, "a"), (5, "c")], [(2, "b")]))
['a', 'b', 'c']
>>> round(daily_rhythm(15 * 3_600_000), 2), round(daily_rhythm(3 * 3_600_000), 2)
(1.55, 0.45)
>>> choose(random.Random(3), {"a": 0.5, "b": 0.5}) in ("a", "b")
True
>>> q = Pending()
>>> q.push(20, "late"); q.push(10, "early")
>>> q.next_time(), q.pop(), len(q)
(10, 'early', 1)
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def daily_rhythm(t_ms: float) -> float:
    """Traffic multiplier by hour of day (UTC): 0.45 at 03:00, 1.55 at 15:00, mean 1."""
    hour = (t_ms / 3_600_000.0) % 24.0
    return 1.0 + 0.55 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)


@dataclass(frozen=True)
class Arrivals:
    """A Poisson process of ``rate`` events per second, shaped by the daily rhythm."""

    rate: float
    rhythm: bool = True

    def gap_ms(self, rng: random.Random, t_ms: float, share: float = 1.0) -> float:
        rate = self.rate * share * (daily_rhythm(t_ms) if self.rhythm else 1.0)
        return math.inf if rate <= 0 else rng.expovariate(rate) * 1000.0

    def first(self, rng: random.Random, start_ms: float) -> float:
        return start_ms + self.gap_ms(rng, start_ms)

    def next(self, rng: random.Random, t_ms: float) -> float:
        return t_ms + self.gap_ms(rng, t_ms)

    def times(self, rng: random.Random, start_ms: float, end_ms: float) -> Iterator[int]:
        """Arrival times (epoch ms) in ``[start_ms, end_ms)``."""
        t = self.first(rng, start_ms)
        while t < end_ms:
            yield int(t)
            t = self.next(rng, t)


@dataclass(frozen=True)
class Population:
    """Entities with unequal activity: a few heavy ones, a long tail."""

    ids: tuple[str, ...]
    cumulative: tuple[float, ...]

    @staticmethod
    def weighted(
        ids: Sequence[str], rng: random.Random, skew: float = 1.6, cap: float = 25.0
    ) -> Population:
        """Pareto(``skew``) activity, capped at ``cap`` times the typical entity's."""
        weights = [min(rng.paretovariate(skew), cap) for _ in ids]
        return Population(tuple(ids), tuple(itertools.accumulate(weights)))

    @staticmethod
    def zipf(ids: Sequence[str], rng: random.Random, exponent: float = 0.9) -> Population:
        """Popularity falling as 1/rank^exponent, ranks shuffled."""
        weights = [1.0 / (rank + 1) ** exponent for rank in range(len(ids))]
        rng.shuffle(weights)
        return Population(tuple(ids), tuple(itertools.accumulate(weights)))

    def pick_index(self, rng: random.Random) -> int:
        x = rng.random() * self.cumulative[-1]
        return min(bisect.bisect_right(self.cumulative, x), len(self.ids) - 1)

    def pick(self, rng: random.Random) -> str:
        return self.ids[self.pick_index(rng)]


def merge(*timelines: Iterable[tuple[int, T]]) -> Iterator[T]:
    """Items of several time-ordered ``(time_ms, item)`` streams, in time order (stable)."""
    keyed = (((t, n, i, item) for i, (t, item) in enumerate(tl)) for n, tl in enumerate(timelines))
    for _t, _n, _i, item in heapq.merge(*keyed, key=lambda x: (x[0], x[1], x[2])):
        yield item


def ids(prefix: str, n: int, width: int = 5) -> list[str]:
    """``prefix`` + zero-padded numbers: ``ids("c", 2) == ["c00000", "c00001"]``."""
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def event_ids(seed: int, start_ms: int) -> Iterator[str]:
    """Event ids unique across seeds and runs started at different times."""
    prefix = f"{seed}-{start_ms // 1000}-"
    return (f"{prefix}{n}" for n in itertools.count())


def jitter(rng: random.Random, value: float, spread: float = 0.5) -> float:
    """``value`` times a uniform factor in ``[1 - spread, 1 + spread]``."""
    return value * rng.uniform(1.0 - spread, 1.0 + spread)


def rounded(record: dict[str, Any], digits: int = 2) -> dict[str, Any]:
    """Floats rounded as a real producer would send them."""
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in record.items()}


def choose(rng: random.Random, shares: Mapping[str, float]) -> str:
    """One key of ``shares`` drawn with its share as probability (shares sum to ~1)."""
    x = rng.random()
    last = ""
    for name, share in shares.items():
        if x < share:
            return name
        x -= share
        last = name
    return last  # rounding left x just above the total: the last key


class Pending:
    """Events scheduled ahead (an episode's later steps), popped in time order.

    A simulator that mixes a steady stream with episodes (bursts, jams,
    outages) pushes each episode's events here and, before emitting the next
    steady event, pops whatever is due first. Ties keep insertion order.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time_ms: int, item: Any) -> None:
        heapq.heappush(self._heap, (time_ms, next(self._seq), item))

    def next_time(self) -> float:
        """When the earliest pending item is due (``inf`` when none is)."""
        return self._heap[0][0] if self._heap else math.inf

    def pop(self) -> Any:
        return heapq.heappop(self._heap)[2]
