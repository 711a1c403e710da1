"""A food-delivery city: couriers pinging as they ride, orders placed in numbered zones.

``simulate(config)`` yields :class:`~loopline.simulation.api.SimEvent` items in
event-time order, deterministic for a given config:

- ``pings`` (topic ``courier-pings``): each courier reports its speed and
  status every ``ping_every_s`` seconds (jittered), from its home zone;
- ``orders`` (topic ``orders``, the scored events) at ``config.rate`` per
  second, ``placed_at`` as an ISO-8601 string; each carries its true
  delivery time in seconds as ``label``.

A delivery takes preparation time (more items, longer) plus the ride:
distance over the courier's speed, slowed by the zone's congestion; express
orders skip part of the queue; the rest is noise. At ``config.drift_at_ms``
a traffic jam hits a share of the zones: rides there take ``jam_factor``
times longer, while ping speeds fall much less (couriers weave through, but
parking and crossings eat the time), so a model trained before the jam
underestimates deliveries in jammed zones after it.

Outcome delays: with ``params["real_delays"]`` the outcome arrives when the
food does (``delivery_s`` after the order); otherwise delays are scaled so a
typical 30-minute delivery reports after ``config.outcome_delay_s`` seconds,
which keeps a demo's loop short.

``params`` (defaults): ``couriers`` (200), ``zones`` (12), ``ping_every_s``
(20), ``jam_share`` (0.34 of the zones), ``jam_factor`` (2.2),
``jam_ping_factor`` (0.8, what jammed pings' speeds are multiplied by),
``real_delays`` (False).

>>> from loopline.simulation.api import SimulationConfig
>>> cfg = SimulationConfig(seed=3, duration_s=60, rate=2, daily_rhythm=False)
>>> events = list(simulate(cfg))
>>> sorted({e.source for e in events})
['orders', 'pings']
>>> order = next(e for e in events if e.source == "orders")
>>> sorted(order.record)
['courier_id', 'distance_km', 'items', 'order_id', 'placed_at', 'priority', 'zone_id']
>>> order.label > 0 and order.outcome_delay_s > 0
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

from loopline.simulation.api import SimEvent, SimulationConfig
from loopline.simulation.toolkit import Arrivals, Population, event_ids, ids, jitter, merge, rounded

# What `loopline demo --repo examples/delivery` runs: a smaller city, a harsher jam
# (read by loopline.simulation.api.load_simulation; --param overrides).
DEMO_PARAMS = {"couriers": 150, "zones": 10, "jam_share": 0.4, "jam_factor": 2.5}

TYPICAL_DELIVERY_S = 1800.0
FIRST_ZONE_ID = 101
# Share of a courier's orders placed outside its home zone.
AWAY_SHARE = 0.15


@dataclass(frozen=True)
class Courier:
    courier_id: str
    home_zone: int
    speed_kmh: float  # cruising speed: bikes ~14, scooters ~26
    busy: float  # share of pings sent while delivering


@dataclass(frozen=True)
class Zone:
    zone_id: int
    congestion: float  # ride-time multiplier before any jam (1 = free flow)


@dataclass(frozen=True)
class City:
    couriers: tuple[Courier, ...]
    zones: tuple[Zone, ...]
    jammed: frozenset[int]  # zone ids hit by the jam after the drift
    jam_factor: float
    jam_ping_factor: float
    drift_at_ms: int | None

    def jam(self, zone_id: int, t_ms: int) -> bool:
        """Whether ``zone_id`` is jammed at ``t_ms``."""
        return self.drift_at_ms is not None and t_ms >= self.drift_at_ms and zone_id in self.jammed

    def zone(self, zone_id: int) -> Zone:
        return self.zones[zone_id - FIRST_ZONE_ID]


def build_city(config: SimulationConfig) -> City:
    """The couriers and zones of a run: the same for the same seed and params."""
    rng = random.Random(f"{config.seed}-city")
    n_zones = int(config.param("zones", 12))
    zones = tuple(
        Zone(FIRST_ZONE_ID + i, congestion=round(rng.uniform(0.8, 1.5), 3)) for i in range(n_zones)
    )
    couriers = tuple(
        Courier(
            courier_id=cid,
            home_zone=rng.choice(zones).zone_id,
            speed_kmh=round(rng.choice((14.0, 26.0)) * rng.uniform(0.8, 1.2), 2),
            busy=rng.uniform(0.3, 0.85),
        )
        for cid in ids("k", int(config.param("couriers", 200)), width=4)
    )
    n_jammed = max(1, round(n_zones * float(config.param("jam_share", 0.34))))
    jammed = frozenset(z.zone_id for z in rng.sample(zones, n_jammed))
    return City(
        couriers=couriers,
        zones=zones,
        jammed=jammed,
        jam_factor=float(config.param("jam_factor", 2.2)),
        jam_ping_factor=float(config.param("jam_ping_factor", 0.8)),
        drift_at_ms=config.drift_at_ms,
    )


def delivery_seconds(
    rng: random.Random,
    city: City,
    courier: Courier,
    *,
    zone_id: int,
    distance_km: float,
    items: int,
    express: bool,
    t_ms: int,
) -> float:
    """The true delivery time of one order (the label).

    >>> city = build_city(SimulationConfig(seed=1))
    >>> c = city.couriers[0]
    >>> t = delivery_seconds(
    ...     random.Random(0), city, c, zone_id=c.home_zone, distance_km=3.0, items=2,
    ...     express=False, t_ms=0)
    >>> 300 < t < 7200
    True
    """
    prep_s = 240.0 + 45.0 * items
    ride_s = distance_km / courier.speed_kmh * 3600.0 * city.zone(zone_id).congestion
    if city.jam(zone_id, t_ms):
        ride_s *= city.jam_factor
    queue_s = rng.expovariate(1 / 120.0) * (0.4 if express else 1.0)
    total = (prep_s + ride_s + queue_s) * rng.lognormvariate(0.0, 0.1)
    return min(total, 7000.0)  # under the 2 h maturity: every order gets its label


def simulate(config: SimulationConfig) -> Iterator[SimEvent]:
    """The run's pings and orders, in event-time order (at most ``config.max_events``)."""
    city = build_city(config)
    timelines = [_courier_pings(config, city, i) for i in range(len(city.couriers))]
    events = merge(*timelines, _orders(config, city))
    if config.max_events is not None:
        events = islice(events, config.max_events)
    yield from events


def _courier_pings(
    config: SimulationConfig, city: City, index: int
) -> Iterator[tuple[int, SimEvent]]:
    """One courier's pings: its own random stream, so couriers never depend on each other."""
    courier = city.couriers[index]
    rng = random.Random(f"{config.seed}-pings-{index}")
    every_ms = float(config.param("ping_every_s", 20)) * 1000.0
    prefix = f"p{config.seed}-{config.start_ms // 1000}-{index}-"
    t = config.start_ms + rng.uniform(0.0, every_ms)
    n = 0
    while t < config.end_ms:
        t_ms = int(t)
        speed = jitter(rng, courier.speed_kmh, 0.3) / city.zone(courier.home_zone).congestion
        if city.jam(courier.home_zone, t_ms):
            speed *= city.jam_ping_factor
        delivering = rng.random() < courier.busy
        record = {
            "ping_id": f"{prefix}{n}",
            "courier_id": courier.courier_id,
            "zone_id": courier.home_zone,
            "speed_kmh": speed if delivering else speed * rng.uniform(0.0, 0.3),
            "status": "delivering" if delivering else "idle",
            "at": t_ms,
        }
        yield t_ms, SimEvent("pings", rounded(record), t_ms, courier.courier_id, tag="ping")
        n += 1
        t += jitter(rng, every_ms, 0.2)


def _orders(config: SimulationConfig, city: City) -> Iterator[tuple[int, SimEvent]]:
    rng = random.Random(f"{config.seed}-orders")
    couriers = Population.weighted([c.courier_id for c in city.couriers], rng, skew=2.5, cap=5.0)
    order_ids = event_ids(config.seed, config.start_ms)
    arrivals = Arrivals(config.rate, rhythm=config.daily_rhythm)
    for t_ms in arrivals.times(rng, config.start_ms, config.end_ms):
        courier = city.couriers[couriers.pick_index(rng)]
        zone_id = courier.home_zone
        if rng.random() < AWAY_SHARE:
            zone_id = rng.choice(city.zones).zone_id
        distance = round(min(max(rng.lognormvariate(math.log(2.5), 0.6), 0.2), 25.0), 2)
        items = min(1 + int(rng.expovariate(0.6)), 20)
        express = rng.random() < 0.2
        seconds = delivery_seconds(
            rng,
            city,
            courier,
            zone_id=zone_id,
            distance_km=distance,
            items=items,
            express=express,
            t_ms=t_ms,
        )
        label = round(seconds, 1)
        record = {
            "order_id": f"o{next(order_ids)}",
            "courier_id": courier.courier_id,
            "zone_id": zone_id,
            "distance_km": distance,
            "items": items,
            "priority": "express" if express else "standard",
            "placed_at": iso_ms(t_ms),
        }
        yield (
            t_ms,
            SimEvent(
                "orders",
                record,
                t_ms,
                courier.courier_id,
                label=label,
                outcome_delay_s=_outcome_delay(config, label),
                tag="jam" if city.jam(zone_id, t_ms) else "normal",
            ),
        )


def _outcome_delay(config: SimulationConfig, delivery_s: float) -> float:
    if config.param("real_delays", False):
        return delivery_s
    return round(delivery_s * config.outcome_delay_s / TYPICAL_DELIVERY_S, 3)


def iso_ms(t_ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC string, as many producers send times.

    >>> iso_ms(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    """
    # Whole seconds plus exact milliseconds: no float rounding of the fraction.
    dt = datetime.fromtimestamp(t_ms // 1000, UTC).replace(microsecond=t_ms % 1000 * 1000)
    return dt.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
