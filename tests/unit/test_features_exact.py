"""The feature engine's sums are exact: values never depend on arrival order."""

from __future__ import annotations

import math
import pickle
import random
from fractions import Fraction

import pytest
from fraud_repo import CARD_VIEW, FRAUD_FEATURES, MERCHANT_VIEW

from loopline.contracts.errors import FeatureError
from loopline.featurecore.entity_state import EntityState, final_values


def _events(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    base = 1_700_000_000_000
    return [
        {
            "event_id": f"e{i}",
            "card_id": f"c{rng.randrange(5)}",
            "merchant_id": f"m{rng.randrange(3)}",
            # Decimal amounts: plain float sums of these depend on the order.
            "amount": round(rng.uniform(0.01, 2500.0), 2),
            "event_time": base + rng.randrange(0, 3 * 3600 * 1000),
        }
        for i in range(n)
    ]


def test_any_arrival_order_gives_bit_identical_values() -> None:
    events = _events(2000, seed=3)
    expected = final_values(FRAUD_FEATURES, events, as_of=1_700_000_000 + 3 * 3600)
    rng = random.Random(11)
    for _ in range(3):
        shuffled = events.copy()
        rng.shuffle(shuffled)
        got = final_values(FRAUD_FEATURES, shuffled, as_of=1_700_000_000 + 3 * 3600)
        # Exact equality of every float, not approximate.
        assert got == expected


def test_a_float_running_sum_would_have_differed() -> None:
    # Guards the test above: the data really is order-sensitive for floats.
    amounts = [e["amount"] for e in _events(2000, seed=3)]
    forward, backward = 0.0, 0.0
    for a in amounts:
        forward += a  # type: ignore[operator]
    for a in reversed(amounts):
        backward += a  # type: ignore[operator]
    assert forward != backward


def test_sum_mean_and_std_are_correctly_rounded() -> None:
    st = EntityState(MERCHANT_VIEW)
    amounts = [0.1] * 10 + [0.2] * 10
    for i, a in enumerate(amounts):
        st.update({"merchant_id": "m", "amount": a}, t=1000.0 + i)
    _, mean_24h, n_24h = st.values(1020.0)
    assert n_24h == 20
    # The exact mean, rounded once (fsum then / 20 would round twice).
    assert mean_24h == float(sum(Fraction(a) for a in amounts) / 20)


def test_std_of_equal_values_is_exactly_zero() -> None:
    st = EntityState(CARD_VIEW)
    for i in range(7):
        st.update({"card_id": "c", "merchant_id": "m", "amount": 0.1}, t=5000.0 + i)
    names = [a.name for a in CARD_VIEW.aggregations]
    assert st.values(5006.0)[names.index("amount_std_24h")] == 0.0


@pytest.mark.parametrize(
    "event",
    [
        {"card_id": "c", "merchant_id": "m"},
        {"card_id": "c", "merchant_id": "m", "amount": "lots"},
        {"card_id": "c", "merchant_id": "m", "amount": math.nan},
        {"card_id": "c", "merchant_id": "m", "amount": 1e300},
        {"card_id": "c", "merchant_id": ["not", "hashable"], "amount": 1.0},
        {"card_id": "c", "amount": 1.0},
    ],
)
def test_bad_event_raises_and_changes_nothing(event: dict[str, object]) -> None:
    st = EntityState(CARD_VIEW)
    st.update({"card_id": "c", "merchant_id": "m", "amount": 3.0}, t=100.0)
    before = pickle.dumps(st)
    with pytest.raises(FeatureError):
        st.update(event, t=160.0)
    assert pickle.dumps(st) == before
    assert st.values(160.0) == pickle.loads(before).values(160.0)
