"""Redis Cluster logic without sockets: settings, the hash-tagged layout, partial
degradation in serving, the flow's snapshot check, the stack's checks."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from fraud_repo import FRAUD_FEATURES
from prometheus_client import CollectorRegistry
from redis.crc import key_slot
from serving_support import KEY_PREFIX, LAYOUT, MemoryStore, card_values, merchant_values

from loopline.cli import _with_redis_cluster
from loopline.contracts.errors import ConfigError, FeatureError
from loopline.contracts.redis_layout import RedisLayout
from loopline.contracts.settings import RedisSettings, ServingSettings, Settings, StackSettings
from loopline.serving.feature_store import PartialStoreError
from loopline.serving.features import FeatureStatus, LookupPlan
from loopline.serving.metrics import ServingMetrics
from loopline.serving.online_features import OnlineFeatures
from loopline.stack.paths import StackPaths
from loopline.stack.redis_cluster import RedisCluster, cluster_config, node_roles
from loopline.stack.stack import Stack
from loopline.streams.features.aggregation import FeatureShard

FS_V1 = SimpleNamespace(name="fraud", version=1, fingerprint="0123456789abcdef")
FS_V2 = SimpleNamespace(name="fraud", version=2, fingerprint="fedcba9876543210")


def test_cluster_settings_are_checked_with_the_setting_named() -> None:
    with pytest.raises(ConfigError, match=r"redis\.db\ must\ be\ 0"):
        RedisSettings(cluster=True, db=2)
    with pytest.raises(ConfigError, match=r"redis\.cluster_nodes:\ 'nohost'\ is\ not\ host:port"):
        RedisSettings(cluster_nodes="10.0.0.1:7000,nohost")
    assert RedisSettings(port=7000, cluster_nodes="10.0.0.1:7001, [::1]:7002").seeds == (
        ("127.0.0.1", 7000),
        ("10.0.0.1", 7001),
        ("::1", 7002),
    )
    with pytest.raises(ConfigError, match="at least 3"):
        StackSettings(redis_cluster_masters=2)
    with pytest.raises(ConfigError, match="--redis-cluster N"):
        _with_redis_cluster(Settings(), None, 1)
    s = _with_redis_cluster(Settings(), 3, 1)
    assert (s.redis.cluster, s.stack.redis_cluster_masters, s.stack.redis_cluster_nodes) == (
        True,
        3,
        6,
    )


def test_one_entity_id_keeps_one_slot_across_views_and_versions() -> None:
    tagged = RedisLayout("ll", cluster=True)
    keys = [
        tagged.feature_key(fs, entity, "c42").encode()
        for fs in (FS_V1, FS_V2)
        for entity in ("card", "merchant")
    ]
    assert {key_slot(k) for k in keys} == {key_slot(b"c42")}
    assert key_slot(tagged.feature_key(FS_V1, "card", "c43").encode()) != key_slot(b"c42")
    # A single Redis keeps the keys it always had.
    assert (
        RedisLayout("ll").feature_key(FS_V1, "card", "c42") == "ll:f:fraud:v1:0123456789ab:card:c42"
    )
    with pytest.raises(ConfigError, match=r"streams\.redis_key_prefix"):
        RedisLayout("t{1}", cluster=True)


def test_serving_builds_the_same_tagged_keys_as_the_flow() -> None:
    plan = LookupPlan(FRAUD_FEATURES, "ll", cluster=True)
    layout = RedisLayout("ll", cluster=True)
    assert plan.keys(["c1", "m1"]) == [
        layout.feature_key(FRAUD_FEATURES, "card", "c1").encode(),
        layout.feature_key(FRAUD_FEATURES, "merchant", "m1").encode(),
    ]


class HalfDown(MemoryStore):
    """A cluster whose shard holding the ``down`` keys fails."""

    def __init__(self, down: set[bytes]) -> None:
        super().__init__()
        self.down = down

    def mget(self, keys, timeout_s):
        values = super().mget(keys, timeout_s)
        failed = frozenset(i for i, k in enumerate(keys) if k in self.down)
        if not failed:
            return values
        for i in failed:
            values[i] = None
        raise PartialStoreError("shard down", "down", values, failed)


def test_a_failed_shard_degrades_only_its_own_keys() -> None:
    now = time.time()
    card = LAYOUT.feature_key(FRAUD_FEATURES, "card", "c1").encode()
    store = HalfDown({card})
    stored = card_values()
    store.put("card", "c1", stored, now)
    store.put("merchant", "m1", merchant_values(), now)
    metrics = ServingMetrics(CollectorRegistry())
    plan = LookupPlan(FRAUD_FEATURES, KEY_PREFIX)
    features = OnlineFeatures(ServingSettings(), FRAUD_FEATURES, plan, store, metrics)
    keys = features.keys(["c1", "m1"])
    store.down = set()
    assert [lk.status for lk in features.lookup(keys, None, [now])] == [FeatureStatus.OK] * 2
    store.down = {card}
    card_lookup, merchant_lookup = features.lookup(keys, None, [now])
    assert card_lookup.status is FeatureStatus.DEFAULTED
    assert card_lookup.values == tuple(stored)  # the last known values
    assert merchant_lookup.status is FeatureStatus.OK
    assert (
        metrics.registry.get_sample_value("loopline_serving_store_errors_total", {"reason": "down"})
        == 1
    )


def test_a_snapshot_of_the_other_layout_is_refused() -> None:
    rec = {"card_id": "a", "merchant_id": "m", "amount": 5.0}
    single = FeatureShard(FRAUD_FEATURES, RedisLayout("t"))
    single.apply([(0, "a", 1_700_000_000_000, rec, 0, 0)])
    with pytest.raises(FeatureError, match=r"redis\.cluster\ changed"):
        FeatureShard(FRAUD_FEATURES, RedisLayout("t", cluster=True), snapshot=single.snapshot())
    tagged = FeatureShard(FRAUD_FEATURES, RedisLayout("t", cluster=True))
    tagged.apply([(0, "a", 1_700_000_000_000, rec, 0, 0)])
    with pytest.raises(FeatureError, match=r"redis\.cluster\ changed"):
        FeatureShard(FRAUD_FEATURES, RedisLayout("t"), snapshot=tagged.snapshot())


def cluster_settings(tmp_path: Path, **stack: object) -> Settings:
    s = Settings()
    return replace(
        s,
        redis=replace(s.redis, cluster=True, port=17000),
        stack=replace(s.stack, state_dir=tmp_path, redis_cluster_masters=3, **stack),
    )


def test_the_stack_refuses_a_cluster_its_clients_would_not_use(tmp_path: Path) -> None:
    s = cluster_settings(tmp_path)
    with pytest.raises(ConfigError, match=r"redis\.cluster\ is\ false"):
        Stack(replace(s, redis=replace(s.redis, cluster=False)))._check_redis_mode()
    paths = StackPaths.for_state_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"stack\.secure"):
        RedisCluster(replace(s, stack=replace(s.stack, secure=True)), paths, 3, 0).check()
    high = replace(s, redis=replace(s.redis, port=60000))
    with pytest.raises(ConfigError, match=r"lower\ redis\.port"):
        RedisCluster(high, paths, 3, 1).check()


def test_cluster_nodes_config_and_roles(tmp_path: Path) -> None:
    conf = cluster_config(cluster_settings(tmp_path, redis_cluster_node_timeout_ms=1500), tmp_path)
    for line in ("cluster-enabled yes", "cluster-node-timeout 1500", "port 17000"):
        assert line in conf.splitlines()
    roles = node_roles(
        "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "b2 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n"
        "c3 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected\n"
    )
    assert roles[7000].master and not roles[7000].failed
    assert roles[7003].master_id == "a1" and not roles[7003].master
    assert roles[7001].failed
