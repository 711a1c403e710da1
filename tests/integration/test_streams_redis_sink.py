"""The batched write-if-newer script behaves exactly like contracts' per-key script."""

from __future__ import annotations

import random

import redis

from loopline.contracts.redis_layout import WRITE_IF_NEWER, pack, unpack
from loopline.streams.features.aggregation import FeatureWrite
from loopline.streams.features.redis_sink import FeatureWriter


def test_batched_script_equals_the_per_key_rule(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    rng = random.Random(9)
    writes = []
    for i in range(3000):
        valid_at = float(rng.randrange(50))  # many ties and many older values
        writes.append((f"k{rng.randrange(40)}", pack(valid_at, (float(i), valid_at * 2))))
    single = redis_client.register_script(WRITE_IF_NEWER)
    for key, value in writes:
        single(keys=[f"{redis_prefix}a:{key}"], args=[value, 600])
    writer = FeatureWriter(redis_client, ttl_s=600, chunk=128)
    stale = 0
    for i in range(0, len(writes), 250):
        batch = [
            FeatureWrite(f"{redis_prefix}b:{k}", v, unpack(v)[0], 0) for k, v in writes[i : i + 250]
        ]
        result = writer.write(batch)
        assert result.written + result.stale == len(batch)
        stale += result.stale
    assert stale > 0
    for n in range(40):
        a = redis_client.get(f"{redis_prefix}a:k{n}")
        b = redis_client.get(f"{redis_prefix}b:k{n}")
        assert a is not None and a == b
        assert 0 < redis_client.ttl(f"{redis_prefix}b:k{n}") <= 600


def test_a_replayed_older_value_never_moves_a_key_back(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    writer = FeatureWriter(redis_client, ttl_s=60)
    key = f"{redis_prefix}card:c1"
    new, old = pack(200.0, (5.0,)), pack(100.0, (9.0,))
    assert writer.write([FeatureWrite(key, new, 200.0, 0)]).written == 1
    result = writer.write([FeatureWrite(key, old, 100.0, 0)])
    assert (result.written, result.stale) == (0, 1)
    assert redis_client.get(key) == new


def test_a_server_that_lost_the_script_gets_it_again(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    writer = FeatureWriter(redis_client, ttl_s=60)
    writer._sha = "0" * 40  # as after a Redis restart: NOSCRIPT
    key = f"{redis_prefix}card:c2"
    assert writer.write([FeatureWrite(key, pack(1.0, (2.0,)), 1.0, 0)]).written == 1
    assert redis_client.get(key) == pack(1.0, (2.0,))
