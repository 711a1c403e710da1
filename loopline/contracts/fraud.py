"""The reference feature set: card-transaction fraud scoring.

Another use case is another :class:`FeatureSet` value, not new code.

>>> FRAUD_FEATURES.model_features[:3]
('card.txn_count_10m', 'card.amount_sum_10m', 'card.amount_max_10m')
>>> len(FRAUD_FEATURES.model_features), len(FRAUD_FEATURES.fingerprint)
(20, 64)
"""

from __future__ import annotations

from loopline.contracts.errors import FeatureError
from loopline.contracts.features import (
    Aggregation,
    Derived,
    EntityView,
    FeatureSet,
    Window,
)

_10M, _1H, _24H = 600, 3600, 86400

CARD_VIEW = EntityView(
    entity="card",
    key_field="card_id",
    windows=(Window(_10M, 10), Window(_1H, 12), Window(_24H, 24)),
    aggregations=(
        Aggregation("txn_count_10m", "count", window_s=_10M),
        Aggregation("amount_sum_10m", "sum", "amount", _10M),
        Aggregation("amount_max_10m", "max", "amount", _10M),
        Aggregation("txn_count_1h", "count", window_s=_1H),
        Aggregation("amount_sum_1h", "sum", "amount", _1H),
        Aggregation("amount_mean_1h", "mean", "amount", _1H),
        Aggregation("amount_max_1h", "max", "amount", _1H),
        Aggregation("merchant_distinct_1h", "distinct", "merchant_id", _1H),
        Aggregation("txn_count_24h", "count", window_s=_24H),
        Aggregation("amount_sum_24h", "sum", "amount", _24H),
        Aggregation("amount_mean_24h", "mean", "amount", _24H),
        Aggregation("amount_std_24h", "std", "amount", _24H),
        Aggregation("amount_max_24h", "max", "amount", _24H),
        Aggregation("merchant_distinct_24h", "distinct", "merchant_id", _24H),
        Aggregation("last_amount", "last", "amount"),
        Aggregation("last_event_time", "last_time"),
    ),
)

MERCHANT_VIEW = EntityView(
    entity="merchant",
    key_field="merchant_id",
    windows=(Window(_1H, 12), Window(_24H, 24)),
    aggregations=(
        Aggregation("txn_count_1h", "count", window_s=_1H),
        Aggregation("amount_mean_24h", "mean", "amount", _24H),
        Aggregation("txn_count_24h", "count", window_s=_24H),
    ),
)

FRAUD_FEATURES = FeatureSet(
    name="fraud",
    version=1,
    views=(CARD_VIEW, MERCHANT_VIEW),
    derived=(
        Derived("amount", "field", ("amount",)),
        Derived("amount_to_card_mean_24h", "ratio", ("amount", "card.amount_mean_24h"), 1.0),
        Derived(
            "amount_to_merchant_mean_24h", "ratio", ("amount", "merchant.amount_mean_24h"), 1.0
        ),
        Derived("seconds_since_last_txn", "age", ("card.last_event_time",), -1.0),
    ),
    model_features=(
        "card.txn_count_10m",
        "card.amount_sum_10m",
        "card.amount_max_10m",
        "card.txn_count_1h",
        "card.amount_sum_1h",
        "card.amount_mean_1h",
        "card.amount_max_1h",
        "card.merchant_distinct_1h",
        "card.txn_count_24h",
        "card.amount_mean_24h",
        "card.amount_std_24h",
        "card.amount_max_24h",
        "card.merchant_distinct_24h",
        "merchant.txn_count_1h",
        "merchant.amount_mean_24h",
        "merchant.txn_count_24h",
        "amount",
        "amount_to_card_mean_24h",
        "amount_to_merchant_mean_24h",
        "seconds_since_last_txn",
    ),
)

FEATURE_SETS = {FRAUD_FEATURES.name: FRAUD_FEATURES}


def get_feature_set(name: str) -> FeatureSet:
    """Look a registered feature set up by name."""
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise FeatureError(f"unknown feature set {name!r}; known: {sorted(FEATURE_SETS)}") from None
