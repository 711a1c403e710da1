"""A small generic project for docstring examples: users buying items.

Examples across the package use it instead of any real use case, so they
show the machinery, not a domain. Real use cases live in feature repos
(``examples/`` of the source checkout).

>>> SAMPLE.feature_set().model_features
('user.buys_10m', 'user.spend_10m', 'user.spend_mean_1h', 'item.buys_1h', 'price', 'price_to_mean')
>>> [v.key_fields for v in SAMPLE.feature_set().views]
[('user_id',), ('item_id',)]
"""

from __future__ import annotations

from loopline.contracts.definitions import (
    Aggregate,
    Entity,
    EventSource,
    FeatureView,
    Field,
    Model,
    Outcomes,
    RequestField,
    Transform,
)
from loopline.featurecore.project import Project

USER = Entity("user", key="user_id")
ITEM = Entity("item", key="item_id")
PURCHASES = EventSource(
    "purchases",
    topic="purchases",
    fields=(
        Field("event_id", "string"),
        Field("user_id", "string"),
        Field("item_id", "string"),
        Field("price", "float", ge=0),
        Field("event_time", "timestamp"),
    ),
    event_id="event_id",
    event_time="event_time",
)
USER_VIEW = FeatureView(
    "user",
    entities=(USER,),
    source=PURCHASES,
    features=(
        Aggregate("buys_10m", "count", window="10m", tiles=10),
        Aggregate("spend_10m", "sum", "price", window="10m", tiles=10),
        Aggregate("spend_mean_1h", "mean", "price", window="1h"),
    ),
)
ITEM_VIEW = FeatureView(
    "item",
    entities=(ITEM,),
    source=PURCHASES,
    features=(Aggregate("buys_1h", "count", window="1h"),),
)
RETURNS = Model(
    "returns",
    scores=PURCHASES,
    outcomes=Outcomes("returns"),
    request=(RequestField("price"),),
    transforms=(Transform("price_to_mean", "ratio", ("price", "user.spend_mean_1h"), 1.0),),
    features=(USER_VIEW, "item.buys_1h", "price", "price_to_mean"),
)
SAMPLE = Project.of("sample", [RETURNS, ITEM_VIEW])


def event(n: int, user: str, item: str, price: float, t_ms: int) -> dict[str, object]:
    """One purchase record, as the features flow reads it."""
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "item_id": item,
        "price": price,
        "event_time": t_ms,
    }
