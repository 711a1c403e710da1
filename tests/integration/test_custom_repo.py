"""A feature repo written only here, run on the real stack: Kafka, the features flow, Redis, gRPC.

Nothing of the fraud example: an ``int`` entity key, a ``regression`` label, a
``where=`` filter, ISO-8601 and epoch-ms times. Its events go to its own
topics under the test's unique prefix; the features flow, configured from the
repo's ``loopline.yaml`` alone, must write exactly what the offline replay
computes, dead-letter an event the declared schema refuses with the schema's
reason, and serving must answer a Predict with a finite value for a
regression model built for this feature set.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import model_factory
import pytest
import redis
from features_support import dead_letters, expected_store, stored
from kafka_support import kafka_env, produce_records
from serving_support import running_server, serving_settings

from loopline.config.loader import load_settings
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurecore.entity_state import final_values
from loopline.featurecore.event_schema import EventParser
from loopline.featurerepo.loader import model_of, project_of
from loopline.stack import delete_topics, ensure_topics
from loopline.streams.features.run import RunOptions, run_features
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc

BASE_MS = 1_700_000_000_000
# Less than the shortest tile expiry (10 min window, 1 min tiles: 9 min), so the
# flow never refreshes a value past its entity's last event: final_values is exact.
SPAN_MS = 4 * 60_000

LOOPLINE_YAML = """\
project: parcels
definitions: parcel_defs.py
streams:
  shards: 8
"""

DEFINITIONS = """\
from loopline.contracts.definitions import (
    Aggregate, Entity, EventSource, FeatureView, Field, Filter, Model, Outcomes,
    RequestField, Transform,
)

depot = Entity("depot", key="depot_id", key_type="int")

scans = EventSource(
    "scans",
    topic="parcel-scans",
    fields=(
        Field("scan_id", "string"),
        Field("depot_id", "int", ge=1),
        Field("weight_kg", "float", ge=0),
        Field("kind", "string", allowed=("in", "out")),
        Field("fragile", "bool", optional=True),
        Field("scanned_at", "timestamp"),
    ),
    event_id="scan_id",
    event_time="scanned_at",
)

depot_flow = FeatureView("depot", entities=(depot,), source=scans, features=(
    Aggregate("scans_10m", "count", window="10m", tiles=10),
    Aggregate("outbound_10m", "count", window="10m", tiles=10, where=Filter("kind", "==", "out")),
    Aggregate("heavy_1h", "count", window="1h", where=Filter("weight_kg", ">=", 20)),
    Aggregate("weight_sum_10m", "sum", "weight_kg", window="10m", tiles=10),
    Aggregate("weight_mean_1h", "mean", "weight_kg", window="1h"),
    Aggregate("weight_std_1h", "std", "weight_kg", window="1h"),
    Aggregate("since_last_scan", "time_since"),
))

dwell = Model(
    "dwell",
    scores=scans,
    outcomes=Outcomes("dwell-outcomes", task="regression", maturity="1h", on_timeout="drop"),
    request=(RequestField("weight_kg"),),
    transforms=(Transform("weight_to_mean", "ratio", ("weight_kg", "depot.weight_mean_1h"), 1.0),),
    features=(depot_flow, "weight_kg", "weight_to_mean"),
    gate_metric="mae",
)
"""


def write_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "loopline.yaml").write_text(LOOPLINE_YAML)
    (root / "parcel_defs.py").write_text(DEFINITIONS)
    return root


def repo_settings(root: Path, base: Settings, key_prefix: str) -> Settings:
    """The repo's own settings (loopline.yaml, model bound from it), on the test's stack."""
    env = {
        **kafka_env(base),
        "LOOPLINE_REDIS__HOST": base.redis.host,
        "LOOPLINE_REDIS__PORT": str(base.redis.port),
        "LOOPLINE_STREAMS__REDIS_KEY_PREFIX": key_prefix,
    }
    return load_settings(repo=root, env=env)


def iso(t_ms: int) -> str:
    dt = datetime.fromtimestamp(t_ms // 1000, UTC).replace(microsecond=t_ms % 1000 * 1000)
    return dt.isoformat(timespec="milliseconds")


def scan_events(n: int) -> list[dict[str, Any]]:
    """Scans of 12 depots over SPAN_MS, roughly in time order; every third time is ISO-8601."""
    out = []
    for i in range(n):
        t = BASE_MS + i * SPAN_MS // n
        doc: dict[str, Any] = {
            "scan_id": f"s{i}",
            "depot_id": 1 + (i * 7) % 12,
            "weight_kg": round((i * 37 % 290) / 10, 1),
            "kind": "out" if (i // 12) % 3 else "in",
            "scanned_at": iso(t) if i % 3 == 0 else t,
        }
        if i % 5 == 0:
            doc["fragile"] = i % 2 == 0
        out.append(doc)
    return out


@pytest.fixture
def repo_env(tmp_path: Path, isolated_settings: Settings, key_prefix: str):  # type: ignore[no-untyped-def]
    settings = repo_settings(write_repo(tmp_path / "parcels"), isolated_settings, key_prefix)
    # The fixture made the platform's topics; the repo's own ones come from its declarations.
    created = ensure_topics(settings)
    yield settings, key_prefix
    delete_topics(settings, created, timeout_s=10)


def test_custom_repo_features_flow_matches_replay_and_dead_letters_by_schema(
    repo_env: tuple[Settings, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings, key_prefix = repo_env
    project = project_of(settings)
    fs = project.feature_set()
    assert (model_of(settings).name, settings.streams.shards) == ("dwell", 8)
    assert project.model().task == "regression" and fs.views[0].key_field == "depot_id"
    topics = Topics(settings.kafka.topic_prefix)
    topic = topics.named("parcel-scans")

    docs = scan_events(1500)
    bad = [
        # A value its declaration does not allow, and a string where the int key belongs.
        {**docs[10], "scan_id": "bad-kind", "kind": "sideways"},
        {**docs[11], "scan_id": "bad-key", "depot_id": "7"},
    ]
    messages = [(str(d["depot_id"]).encode(), json.dumps(d).encode()) for d in docs]
    messages[700:700] = [(b"x", json.dumps(d).encode()) for d in bad]
    produce_records(settings, [(topic, key, value) for key, value in messages])

    started = time.monotonic()
    run_features(settings, RunOptions(recovery=False, metrics=False, drain_idle_s=2.0))
    assert time.monotonic() - started < 120

    parser = EventParser(project.source("scans"), ("depot_id",))
    expected = expected_store([parser.parse(json.dumps(d).encode()) for d in docs], key_prefix, fs)
    assert len(expected) == 12
    assert stored(redis_client, key_prefix) == expected
    offline = final_values(fs, [parser.parse(json.dumps(d).encode()) for d in docs])
    by_depot = {
        eid: dict(zip(fs.views[0].names, v, strict=True)) for (_e, eid), (_t, v) in offline.items()
    }
    # The filters really filtered: a third of the scans are inbound, not every parcel is heavy.
    assert all(0 < v["outbound_10m"] < v["scans_10m"] for v in by_depot.values())
    assert all(0 < v["heavy_1h"] < v["scans_10m"] for v in by_depot.values())

    letters = dead_letters(settings, topics.dead_letters)
    assert sorted((d.reason, json.loads(d.original_value())["scan_id"]) for d in letters) == [
        ("invalid", "bad-key"),
        ("invalid", "bad-kind"),
    ]
    errors = {json.loads(d.original_value())["scan_id"]: d.error for d in letters}
    assert errors["bad-kind"] == "scans.kind: 'sideways' is not one of ('in', 'out')"
    assert errors["bad-key"] == "scans.depot_id: expected an integer, got str '7'"
    assert all(d.source_topic == topic for d in letters)

    # Serving the same repo: a regression model for this feature set answers from Redis.
    registry = tmp_path / "registry"
    model_factory.publish_regression(registry, model="dwell", fs=fs)
    with running_server(serving_settings(settings, registry, key_prefix)) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        reply = pb_grpc.InferenceStub(channel).Predict(
            pb.PredictRequest(
                entities={"depot_id": "8"},
                fields={"weight_kg": 12.5},
                event_time_ms=BASE_MS + SPAN_MS,
                request_id="custom-1",
            ),
            timeout=10,
        )
        channel.close()
    assert math.isfinite(reply.score)
    features = {f.name: f.value for f in reply.features}
    assert list(features) == list(fs.model_features)
    assert features["depot.scans_10m"] == by_depot["8"]["scans_10m"] > 0
    assert features["depot.outbound_10m"] == by_depot["8"]["outbound_10m"]
    assert features["weight_kg"] == 12.5


DELIVERY = Path(__file__).resolve().parents[2] / "examples" / "delivery"


def test_delivery_example_two_topics_through_the_features_flow(
    isolated_settings: Settings, topics: Topics, redis_client: redis.Redis, key_prefix: str
) -> None:
    """The shipped multi-source example: orders and pings, each decoded by its own schema."""
    from loopline.featurecore.features import SOURCE_TAG
    from loopline.simulation.api import SimulationConfig, load_simulator

    settings = repo_settings(DELIVERY, isolated_settings, key_prefix)
    created = ensure_topics(settings)
    try:
        project = project_of(settings)
        fs = project.feature_set()
        config = SimulationConfig(seed=5, duration_s=240, rate=5, daily_rhythm=False)
        events = list(load_simulator(DELIVERY)(config))
        by_topic: dict[str, list[tuple[bytes, bytes]]] = {}
        for e in events:
            topic = topics.named(project.source(e.source).topic)
            by_topic.setdefault(topic, []).append((e.key.encode(), json.dumps(e.record).encode()))
        assert len(by_topic) == 2
        produce_records(
            settings, [(topic, k, v) for topic, msgs in by_topic.items() for k, v in msgs]
        )

        run_features(settings, RunOptions(recovery=False, metrics=False, drain_idle_s=2.0))

        keys = {k for v in fs.views for k in v.key_fields}
        parsers = {s.name: EventParser(s, keys) for s in project.sources}
        records = [
            {**parsers[e.source].parse(json.dumps(e.record).encode()), SOURCE_TAG: e.source}
            for e in events
        ]
        expected = expected_store(records, key_prefix, fs)
        assert {k.split(b":")[-2] for k in expected} == {
            b"courier",
            b"courier_orders",
            b"zone",
            b"zone_traffic",
        }
        assert stored(redis_client, key_prefix) == expected
        assert not dead_letters(settings, topics.dead_letters)
    finally:
        delete_topics(settings, created, timeout_s=10)
