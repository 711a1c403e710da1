"""What a simulation produces: rate, duration, population, fraud, outcomes, drift.

>>> c = SimulatorConfig(seed=1, start_ms=1_700_000_000_000, duration_s=60, rate=100)
>>> c.end_ms - c.start_ms, c.drift_at_ms is None
(60000, True)
>>> parse_start("2024-05-01T12:00:00Z")
1714564800000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from loopline.contracts.errors import ConfigError


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes a simulated stream; the same config gives the same stream."""

    seed: int = 7
    # Event time of the first moment simulated (epoch ms); fixed for reproducibility.
    start_ms: int = 1_700_000_000_000
    # Simulated event-time span; the stream also stops after max_events if set.
    duration_s: float = 60.0
    max_events: int | None = None
    # Mean transactions per second of event time over a day; the daily rhythm
    # makes nights quieter and afternoons busier.
    rate: float = 200.0
    daily_rhythm: bool = True
    cards: int = 5000
    merchants: int = 800
    # Share of transactions that are fraudulent (they come in episodes).
    fraud_rate: float = 0.01
    # Outcomes (labels) follow their transaction after this delay, +-50 %.
    outcome_delay_s: float = 30.0
    # Drift: from this offset (s of event time) legit amounts are multiplied by
    # drift_amount_factor, fraud becomes drift_fraud_factor times as frequent
    # and changes its pattern mix (card testing and low-key new-merchant fraud
    # replace high-amount bursts).
    drift_at_s: float | None = None
    drift_amount_factor: float = 1.8
    drift_fraud_factor: float = 1.5

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ConfigError("simulator rate must be > 0 events/s")
        if self.duration_s <= 0:
            raise ConfigError("simulator duration must be > 0 s")
        if self.cards < 1 or self.merchants < 1:
            raise ConfigError("simulator needs at least one card and one merchant")
        if not 0 <= self.fraud_rate < 0.5:
            raise ConfigError("simulator fraud_rate must be in [0, 0.5)")
        if self.outcome_delay_s < 0:
            raise ConfigError("simulator outcome delay must be >= 0 s")
        if self.max_events is not None and self.max_events < 0:
            raise ConfigError("simulator max_events must be >= 0")

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.duration_s * 1000)

    @property
    def drift_at_ms(self) -> int | None:
        if self.drift_at_s is None:
            return None
        return self.start_ms + int(self.drift_at_s * 1000)


def parse_start(text: str) -> int:
    """``now``, epoch milliseconds, or an ISO-8601 time (UTC when no zone) -> epoch ms."""
    if text == "now":
        return int(time.time()) * 1000
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ConfigError(f"start time {text!r}: use now, epoch ms or ISO-8601") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def add_simulator_arguments(p: argparse.ArgumentParser) -> None:
    d = SimulatorConfig()
    p.add_argument("--seed", type=int, default=d.seed, help="same seed, same stream")
    p.add_argument(
        "--start",
        default="now",
        help="event time of the first moment: now, epoch ms or ISO-8601 (default now)",
    )
    p.add_argument("--duration", type=float, default=d.duration_s, help="event-time seconds")
    p.add_argument("--max-events", type=int, help="stop after this many transactions")
    p.add_argument("--rate", type=float, default=d.rate, help="mean transactions per second")
    p.add_argument("--flat", action="store_true", help="no daily rhythm: the same rate at any hour")
    p.add_argument("--cards", type=int, default=d.cards, help="card population")
    p.add_argument("--merchants", type=int, default=d.merchants, help="merchant population")
    p.add_argument("--fraud-rate", type=float, default=d.fraud_rate, help="share of fraud")
    p.add_argument(
        "--outcome-delay",
        type=float,
        default=d.outcome_delay_s,
        help="seconds from a transaction to its label (+-50%%)",
    )
    p.add_argument("--drift-at", type=float, help="inject drift this many seconds in")
    p.add_argument(
        "--drift-amount-factor",
        type=float,
        default=d.drift_amount_factor,
        help="legit amounts are multiplied by this after the drift",
    )
    p.add_argument(
        "--drift-fraud-factor",
        type=float,
        default=d.drift_fraud_factor,
        help="fraud is this many times as frequent after the drift (and changes pattern)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="event time per wall-clock second (1: real time; 0: as fast as possible)",
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        seed=args.seed,
        start_ms=parse_start(args.start),
        duration_s=args.duration,
        max_events=args.max_events,
        rate=args.rate,
        daily_rhythm=not args.flat,
        cards=args.cards,
        merchants=args.merchants,
        fraud_rate=args.fraud_rate,
        outcome_delay_s=args.outcome_delay,
        drift_at_s=args.drift_at,
        drift_amount_factor=args.drift_amount_factor,
        drift_fraud_factor=args.drift_fraud_factor,
    )
