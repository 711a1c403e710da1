"""A Redis Cluster of its own for a test module: 3 masters (+ replicas), free ports.

Started with the stack's own code (:class:`loopline.stack.redis_cluster.RedisCluster`),
state under a temp dir, a short ``cluster-node-timeout`` so a failover takes
about two seconds; stopped when the ``with`` block ends. The shared stack's
Redis is never touched.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

from loopline.config.redis import cluster_client
from loopline.contracts.settings import Settings
from loopline.stack.paths import StackPaths
from loopline.stack.ports import free_port_run
from loopline.stack.redis_cluster import BUS_OFFSET, RedisCluster, RedisClusterNode


@dataclass(frozen=True)
class LocalCluster:
    cluster: RedisCluster
    # The base settings with redis.* at the cluster (redis.cluster on).
    settings: Settings

    def client(self) -> ClusterClient:
        return cluster_client(self.settings.redis, socket_timeout=10)

    def owner(self, key: bytes) -> RedisClusterNode:
        """The node that is the master of ``key``'s slot now."""
        slot = key_slot(key)
        for row in self.cluster.nodes[0].client().execute_command("CLUSTER", "SLOTS"):
            if row[0] <= slot <= row[1]:
                port = int(row[2][1])
                return next(n for n in self.cluster.nodes if n.port == port)
        raise AssertionError(f"no master for slot {slot}")

    def kill(self, node: RedisClusterNode) -> None:
        """kill -9, as a crash: no shutdown, no last replication."""
        record = node.record()
        assert record is not None, f"{node.name} is not ours"
        os.kill(record.pid, signal.SIGKILL)


@contextmanager
def local_cluster(
    tmp: Path, base: Settings, *, masters: int = 3, replicas: int = 1, timeout_ms: int = 1000
) -> Iterator[LocalCluster]:
    nodes = masters * (1 + replicas)
    port = free_port_run(nodes, offsets=(0, BUS_OFFSET))
    settings = replace(
        base,
        redis=replace(base.redis, port=port, host="127.0.0.1", cluster=True),
        stack=replace(
            base.stack,
            state_dir=tmp / "state",
            redis_cluster_masters=masters,
            redis_cluster_replicas=replicas,
            redis_cluster_node_timeout_ms=timeout_ms,
        ),
    )
    paths = StackPaths.for_state_dir(settings.stack.state_dir)
    cluster = RedisCluster(settings, paths, masters, replicas)
    try:
        cluster.up()
        yield LocalCluster(cluster, settings)
    finally:
        cluster.down()
