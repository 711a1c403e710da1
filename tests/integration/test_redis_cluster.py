"""The online store on a real Redis Cluster: 3 masters + 1 replica each, started by the
stack's code on free ports (one cluster for the module; the failover test runs last).

The features flow writes every value into the cluster, serving reads each shard in
one pipelined round trip and follows MOVED and ASK, and a master killed with
``kill -9`` degrades only its own keys until its replica takes over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import model_factory
import pytest
import redis
from features_support import events, expected_store, features_flow, produce_events
from fraud_repo import FRAUD_FEATURES
from polling import wait_until
from redis.crc import key_slot
from redis_cluster_support import LocalCluster, local_cluster
from serving_requests import predict_request
from serving_support import card_values, merchant_values, running_server, serving_settings

from loopline.contracts.errors import ConfigError
from loopline.contracts.redis_layout import RedisLayout, pack
from loopline.contracts.settings import RedisSettings
from loopline.serving.cluster_store import SLOTS, ClusterFeatureStore
from loopline.stack.ports import free_port
from loopline.streams.features.aggregation import FeatureWrite
from loopline.streams.features.redis_sink import FeatureWriter
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def cluster(stack_settings, tmp_path_factory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("rcluster"), stack_settings) as c:
        yield c


def test_up_forms_a_cluster_that_status_shows(cluster: LocalCluster) -> None:
    summary, nodes = cluster.cluster.status()
    assert summary.up and "3 masters, 3 replicas, 16384/16384 slots ok" in summary.detail
    roles = sorted(n.detail.split(";")[0].split(" of ")[0] for n in nodes)
    assert roles == ["master"] * 3 + ["replica"] * 3


def test_the_features_flow_writes_every_value_into_the_cluster(
    cluster: LocalCluster, isolated_settings, topics, key_prefix, tmp_path
) -> None:
    settings = replace(isolated_settings, redis=cluster.settings.redis)
    good = events(600, seed=5)
    produce_events(settings, topics.events, good)
    env = {"LOOPLINE_REDIS__CLUSTER": "true"}
    flow = features_flow(
        settings, key_prefix, tmp_path / "flow.log", "--no-recovery", extra_env=env
    )
    expected = expected_store(good, key_prefix, cluster=True)
    client = cluster.client()

    def stored() -> dict[bytes, bytes]:
        keys = list(client.scan_iter(match=f"{key_prefix}:f:*", count=1000))
        return dict(zip(keys, client.mget_nonatomic(keys), strict=True))

    flow.until(lambda: stored() == expected, "every value in the cluster")
    flow.stop()
    # Hash-tagged by entity id, spread over every master.
    assert all(k.endswith(b"}") and b":{" in k for k in expected)
    assert len({cluster.owner(k).port for k in expected}) == 3


def test_serving_reads_every_shard_and_follows_moved_and_ask(cluster: LocalCluster) -> None:
    client = cluster.client()
    layout = RedisLayout("sv", cluster=True)
    keys = [layout.feature_key(FRAUD_FEATURES, "card", f"c{i}").encode() for i in range(40)]
    values = [pack(float(i), (float(i), 2.0)) for i in range(40)]
    writes = [
        FeatureWrite(k.decode(), v, float(i), 0)
        for i, (k, v) in enumerate(zip(keys, values, strict=True))
    ]
    writer = FeatureWriter(client, ttl_s=600)
    # The writer's slot map is stale for one key, and its masters lost the script:
    # the MOVED share goes again through the cluster pipeline, the script is reloaded.
    wrong = next(n for n in client.get_primaries() if n != client.get_node_from_key(keys[0]))
    client.nodes_manager.slots_cache[key_slot(keys[0])] = [wrong]
    writer._sha = "0" * 40
    assert writer.write(writes).written == 40
    assert client.mget_nonatomic(keys) == values
    store = ClusterFeatureStore.from_settings(cluster.settings.redis)
    assert store.mget([*keys, b"sv:absent:{x}"], 2.0) == [*values, None]

    # A stale slot map (every slot at one master): MOVED is followed, the map re-read.
    one = min(store.masters)
    store._table = (one,) * SLOTS
    assert store.mget(keys, 2.0) == values
    assert store.mget(keys, 2.0) == values and len(store.masters) == 3

    # A slot in migration: the key already moved answers ASK, followed with ASKING.
    key = keys[0]
    source = cluster.owner(key)
    target = next(n for n in cluster.cluster.nodes if n.port != source.port and is_master(n))
    src, dst = source.client(), target.client()
    slot = key_slot(key)
    src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    src.execute_command("MIGRATE", "127.0.0.1", target.port, key, 0, 5000)
    with pytest.raises(redis.exceptions.AskError):
        src.get(key)
    assert store.mget([key, keys[1]], 2.0) == [values[0], values[1]]
    # The migration ends: the slot's other keys (other tests' keys of the same entity
    # share its hash tag) move too, then the slot belongs to the target.
    while rest := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *rest)
    for node in (dst, src):
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def is_master(node) -> bool:
    return node.client().execute_command("ROLE")[0] == b"master"


def test_misconfigured_cluster_addresses_fail_at_start_naming_the_settings(
    stack_settings,
) -> None:
    not_cluster = replace(stack_settings.redis, cluster=True)  # the shared, plain Redis
    with pytest.raises(ConfigError, match=r"not a Redis Cluster node.*redis\.cluster"):
        ClusterFeatureStore.from_settings(not_cluster)
    nobody = RedisSettings(port=free_port(), cluster=True)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"redis\.host, redis\.port, redis\.cluster_nodes"):
        ClusterFeatureStore.from_settings(nobody)
    assert time.perf_counter() - t0 < 5.0


def predict(port: int, timeout: float = 5.0) -> pb.PredictResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return pb_grpc.InferenceStub(channel).Predict(predict_request(), timeout=timeout)


CARD = range(0, 13)  # the card's stored features (feature-set order)
MERCHANT = range(13, 16)


def test_a_killed_master_degrades_its_keys_until_its_replica_takes_over(
    cluster: LocalCluster, isolated_settings, tmp_path
) -> None:
    client = cluster.client()
    layout = RedisLayout("fo", cluster=True)
    card_key = layout.feature_key(FRAUD_FEATURES, "card", "c1")
    merchant_key = layout.feature_key(FRAUD_FEATURES, "merchant", "m1")
    victim = cluster.owner(card_key.encode())
    assert cluster.owner(merchant_key.encode()).port != victim.port
    now = time.time()
    writer = FeatureWriter(client, ttl_s=600)
    written = [
        FeatureWrite(card_key, pack(now, tuple(card_values())), now, 0),
        FeatureWrite(merchant_key, pack(now, tuple(merchant_values())), now, 0),
    ]
    assert writer.write(written).written == 2
    # Replication is asynchronous: a write survives a failover once a replica has it.
    # (A fresh cluster's replica may still be in its first sync: a long timeout.)
    waiter = redis.Redis(port=victim.port, socket_timeout=30)
    assert waiter.execute_command("WAIT", 1, 20000) == 1

    model_factory.publish(tmp_path / "reg")
    base = replace(isolated_settings, redis=cluster.settings.redis)
    settings = serving_settings(
        base, tmp_path / "reg", "fo", store_retry_ms=100.0, feature_timeout_ms=300.0
    )
    with running_server(settings) as server:
        fresh = predict(server.port)
        assert not fresh.degraded

        cluster.kill(victim)
        t0 = time.perf_counter()
        during = predict(server.port)
        assert time.perf_counter() - t0 < 2.0  # the deadline, never a hang
        assert during.degraded
        assert {during.features[i].status for i in CARD} == {pb.FEATURE_STATUS_DEFAULTED}
        assert {during.features[i].status for i in MERCHANT} == {pb.FEATURE_STATUS_OK}
        # The card's last known values answer meanwhile.
        assert [during.features[i].value for i in CARD] == [fresh.features[i].value for i in CARD]

        wait_until(
            lambda: not predict(server.port).degraded, timeout_s=30, what="the replica serving"
        )
        after = predict(server.port)
        assert [after.features[i].value for i in CARD] == [fresh.features[i].value for i in CARD]
    assert cluster.owner(card_key.encode()).port != victim.port
