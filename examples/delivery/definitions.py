"""Food-delivery ETA: Loopline's regression example, two entities and two topics.

Orders arrive on ``orders`` (the scored events: the model predicts how many
seconds each delivery will take); couriers report where they are and how fast
they move on ``courier-pings``. The actual delivery time arrives on
``delivery-outcomes`` once the food is at the door. Features come from both
topics: courier activity from pings, zone load and courier workload from
orders, zone traffic from pings.

Zones are numbered (an ``int`` key), couriers named (a ``string`` key);
``placed_at`` may be an ISO-8601 string, ``at`` is epoch milliseconds.
"""

from loopline.contracts.definitions import (
    Aggregate,
    Drift,
    Entity,
    EventSource,
    FeatureView,
    Field,
    Filter,
    Model,
    Outcomes,
    RequestField,
    Retrain,
    Transform,
)

courier = Entity("courier", key="courier_id", description="a courier on a bike or scooter")
zone = Entity("zone", key="zone_id", key_type="int", description="a numbered city delivery zone")

orders = EventSource(
    "orders",
    topic="orders",
    fields=(
        Field("order_id", "string"),
        Field("courier_id", "string"),
        Field("zone_id", "int", ge=0),
        Field("distance_km", "float", ge=0, le=100),
        Field("items", "int", ge=1, le=100),
        Field("priority", "string", allowed=("standard", "express")),
        Field("placed_at", "timestamp"),
    ),
    event_id="order_id",
    event_time="placed_at",
    description="an order assigned to a courier; placed_at in ISO-8601 or epoch ms",
)

pings = EventSource(
    "pings",
    topic="courier-pings",
    fields=(
        Field("ping_id", "string"),
        Field("courier_id", "string"),
        Field("zone_id", "int", ge=0),
        Field("speed_kmh", "float", ge=0, le=150),
        Field("status", "string", allowed=("idle", "delivering")),
        Field("at", "timestamp"),
    ),
    event_id="ping_id",
    event_time="at",
    description="a courier's periodic position report; at in epoch milliseconds",
)

# How a courier moves right now: speed, how busy, how recently heard from.
courier_activity = FeatureView(
    "courier",
    entities=(courier,),
    source=pings,
    features=(
        Aggregate("speed_mean_10m", "mean", "speed_kmh", window="10m", tiles=10),
        Aggregate("speed_mean_1h", "mean", "speed_kmh", window="1h"),
        Aggregate("ping_count_1h", "count", window="1h"),
        Aggregate(
            "delivering_pings_1h",
            "count",
            window="1h",
            where=Filter("status", "==", "delivering"),
        ),
        Aggregate("since_last_ping", "time_since"),
    ),
)

# How much the courier already carries: orders assigned over the last hour.
courier_workload = FeatureView(
    "courier_orders",
    entities=(courier,),
    source=orders,
    features=(
        Aggregate("order_count_1h", "count", window="1h"),
        Aggregate("items_sum_1h", "sum", "items", window="1h"),
    ),
)

# How loaded a zone is: demand, trip lengths, couriers at work there.
zone_load = FeatureView(
    "zone",
    entities=(zone,),
    source=orders,
    features=(
        Aggregate("order_count_10m", "count", window="10m", tiles=10),
        Aggregate("order_count_1h", "count", window="1h"),
        Aggregate("distance_mean_1h", "mean", "distance_km", window="1h"),
        Aggregate("courier_distinct_1h", "distinct", "courier_id", window="1h"),
        Aggregate(
            "express_count_1h", "count", window="1h", where=Filter("priority", "==", "express")
        ),
    ),
)

# How fast traffic moves in a zone: every courier's pings there (a jam shows here first).
zone_traffic = FeatureView(
    "zone_traffic",
    entities=(zone,),
    source=pings,
    features=(
        Aggregate("speed_mean_10m", "mean", "speed_kmh", window="10m", tiles=10),
        Aggregate("speed_min_10m", "min", "speed_kmh", window="10m", tiles=10),
    ),
)

eta = Model(
    "eta",
    scores=orders,
    outcomes=Outcomes(
        "delivery-outcomes",
        event_id="order_id",
        label="delivery_s",
        event_time="delivered_at",
        task="regression",
        maturity="2h",
        on_timeout="drop",
    ),
    request=(RequestField("distance_km"), RequestField("items", "int")),
    transforms=(
        # Hours of riding at the courier's recent pace (-1: the courier never pinged).
        Transform("ride_hours", "ratio", ("distance_km", "courier.speed_mean_1h"), -1.0),
        # The same at the zone's current traffic speed.
        Transform("ride_hours_zone", "ratio", ("distance_km", "zone_traffic.speed_mean_10m"), -1.0),
        Transform(
            "orders_per_courier", "ratio", ("zone.order_count_1h", "zone.courier_distinct_1h")
        ),
        Transform("log_distance", "log1p", ("distance_km",)),
    ),
    features=(
        courier_activity,
        courier_workload,
        zone_load,
        zone_traffic,
        "distance_km",
        "items",
        "ride_hours",
        "ride_hours_zone",
        "orders_per_courier",
        "log_distance",
    ),
    gate_metric="rmse",
    drift=Drift(error=True, prediction=True),
    retrain=Retrain(on_drift=True, schedule="6h", min_new_rows=500, min_interval="10m"),
    description="seconds from order placed to food at the door",
)
