"""A small deterministic card-transaction history with fraud, for tests.

Not the streams simulator: just enough structure for a model to learn
(compromised cards spend in bursts, at larger amounts, across merchants), and
the same output for the same seed.

>>> txs, outcomes = synthetic_history(n_cards=30, hours=6, seed=2)
>>> txs == synthetic_history(n_cards=30, hours=6, seed=2)[0]
True
>>> all(a.event_time <= b.event_time for a, b in zip(txs, txs[1:]))
True
>>> {o.label for o in outcomes}, 0 < len(outcomes) < len(txs)
({1}, True)
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.contracts.schemas import Outcome, encode

START_MS = 1_700_000_000_000


@dataclass(frozen=True)
class Transaction:
    """One event of the fraud example's ``transactions`` source."""

    event_id: str
    card_id: str
    merchant_id: str
    amount: float
    event_time: int

    def as_record(self) -> dict[str, Any]:
        """The record the feature engine and the trainer read."""
        return dataclasses.asdict(self)


def records(txs: Sequence[Transaction]) -> list[dict[str, Any]]:
    return [t.as_record() for t in txs]


def synthetic_history(
    *,
    n_cards: int = 300,
    n_merchants: int = 40,
    hours: float = 48.0,
    txn_per_card_per_day: float = 6.0,
    fraud_card_share: float = 0.08,
    start_ms: int = START_MS,
    seed: int = 0,
) -> tuple[list[Transaction], list[Outcome]]:
    """Transactions in event-time order and an outcome (label 1) for every fraud.

    Legitimate events get no outcome (no chargeback), as in real fraud data.
    Outcomes arrive 10-60 minutes after their event.
    """
    rng = random.Random(seed)
    span_ms = int(hours * 3_600_000)
    merchants = [f"m{j:03d}" for j in range(n_merchants)]
    txs: list[Transaction] = []
    outcomes: list[Outcome] = []
    counter = 0

    def add(card: str, merchant: str, amount: float, t: int, fraud: bool) -> None:
        nonlocal counter
        counter += 1
        eid = f"{seed}-{counter:07d}"
        txs.append(Transaction(eid, card, merchant, round(amount, 2), t))
        if fraud:
            outcomes.append(Outcome(eid, 1, t + rng.randint(600_000, 3_600_000)))

    for c in range(n_cards):
        card = f"c{c:05d}"
        base = rng.lognormvariate(3.3, 0.6)  # typical spend, ~27
        favourites = rng.sample(merchants, k=min(4, n_merchants))
        rate_per_ms = txn_per_card_per_day / 86_400_000
        t = start_ms + int(rng.expovariate(rate_per_ms))
        while t < start_ms + span_ms:
            # Now and then a legitimate big purchase, so amount alone is not the answer.
            scale = rng.uniform(2.0, 6.0) if rng.random() < 0.05 else 1.0
            merchant = rng.choice(merchants if rng.random() < 0.1 else favourites)
            add(card, merchant, scale * base * rng.lognormvariate(0, 0.4), t, False)
            t += int(rng.expovariate(rate_per_ms))
        if rng.random() < fraud_card_share:
            # A compromised card: a burst at unusual merchants, mostly of large
            # purchases, sometimes of small "card testing" ones.
            t = start_ms + int(rng.uniform(0.1, 0.95) * span_ms)
            low, high = (0.2, 1.0) if rng.random() < 0.3 else (1.5, 8.0)
            for _ in range(rng.randint(2, 7)):
                add(card, rng.choice(merchants), base * rng.uniform(low, high), t, True)
                t += rng.randint(20_000, 900_000)
    txs.sort(key=lambda tx: (tx.event_time, tx.event_id))
    outcomes.sort(key=lambda o: (o.event_time, o.event_id))
    return txs, outcomes


def write_jsonl(path: str | Path, records: Sequence[Transaction | Outcome]) -> Path:
    """One JSON object per line, as on the topics."""
    p = Path(path)
    p.write_text("".join(encode(r).decode() + "\n" for r in records))
    return p


def as_json_rows(records: Sequence[Transaction | Outcome]) -> list[dict[str, object]]:
    return [json.loads(encode(r)) for r in records]
