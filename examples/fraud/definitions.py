"""Card-transaction fraud: Loopline's first example feature repo.

Transactions arrive on ``events``; a chargeback (label 1) may follow on
``outcomes`` within a day, and no chargeback by then means legitimate. The
model scores each transaction from card and merchant activity.
"""

from loopline.contracts.definitions import (
    Aggregate,
    Drift,
    Entity,
    EventSource,
    FeatureView,
    Field,
    Model,
    Outcomes,
    RequestField,
    Retrain,
    Transform,
)

card = Entity("card", key="card_id", description="a payment card")
merchant = Entity("merchant", key="merchant_id", description="where the card was used")

transactions = EventSource(
    "transactions",
    topic="events",
    fields=(
        Field("event_id", "string"),
        Field("card_id", "string"),
        Field("merchant_id", "string"),
        Field("amount", "float", ge=0),
        Field("event_time", "int", ge=1),
    ),
    event_id="event_id",
    event_time="event_time",
    description="one card transaction; event_time in epoch milliseconds",
)

card_activity = FeatureView(
    "card",
    entities=(card,),
    source=transactions,
    features=(
        Aggregate("txn_count_10m", "count", window="10m", tiles=10),
        Aggregate("amount_sum_10m", "sum", "amount", window="10m", tiles=10),
        Aggregate("amount_max_10m", "max", "amount", window="10m", tiles=10),
        Aggregate("txn_count_1h", "count", window="1h"),
        Aggregate("amount_sum_1h", "sum", "amount", window="1h"),
        Aggregate("amount_mean_1h", "mean", "amount", window="1h"),
        Aggregate("amount_max_1h", "max", "amount", window="1h"),
        Aggregate("merchant_distinct_1h", "distinct", "merchant_id", window="1h"),
        Aggregate("txn_count_24h", "count", window="24h", tiles=24),
        Aggregate("amount_sum_24h", "sum", "amount", window="24h", tiles=24),
        Aggregate("amount_mean_24h", "mean", "amount", window="24h", tiles=24),
        Aggregate("amount_std_24h", "std", "amount", window="24h", tiles=24),
        Aggregate("amount_max_24h", "max", "amount", window="24h", tiles=24),
        Aggregate("merchant_distinct_24h", "distinct", "merchant_id", window="24h", tiles=24),
        Aggregate("last_amount", "last", "amount"),
        Aggregate("last_event_time", "last_time"),
    ),
)

merchant_activity = FeatureView(
    "merchant",
    entities=(merchant,),
    source=transactions,
    features=(
        Aggregate("txn_count_1h", "count", window="1h"),
        Aggregate("amount_mean_24h", "mean", "amount", window="24h", tiles=24),
        Aggregate("txn_count_24h", "count", window="24h", tiles=24),
    ),
)

fraud = Model(
    "fraud",
    scores=transactions,
    outcomes=Outcomes("outcomes", task="binary", maturity="24h", on_timeout="negative"),
    request=(RequestField("amount"),),
    transforms=(
        Transform("amount_to_card_mean_24h", "ratio", ("amount", "card.amount_mean_24h"), 1.0),
        Transform(
            "amount_to_merchant_mean_24h", "ratio", ("amount", "merchant.amount_mean_24h"), 1.0
        ),
        Transform("seconds_since_last_txn", "age", ("card.last_event_time",), -1.0),
    ),
    features=(
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
    gate_metric="auc",
    drift=Drift(error=True, prediction=True),
    retrain=Retrain(on_drift=True, schedule="1d", min_new_rows=1000, min_interval="1h"),
)
