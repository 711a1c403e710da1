"""A local Redis Cluster: N masters (+ R replicas each), formed with ``redis-cli``.

``loopline up --redis-cluster 3 --redis-replicas 1`` starts ``redis-server
--cluster-enabled yes`` processes on ``redis.port`` and the ports after it, each
a :class:`RedisClusterNode` (the same reuse/start/record/stop rules as the one
Redis, see :mod:`loopline.stack.component`), with its data and ``nodes.conf``
under ``<state_dir>/redis-cluster/<port>``. A fresh set of nodes is joined by
``redis-cli --cluster create``; nodes that already form a cluster (a restart)
rejoin by themselves from their ``nodes.conf``. What runs is recorded in
``<state_dir>/redis-cluster/cluster.json``, so ``loopline status`` and
``loopline down`` find it without the flags.

The nodes keep answering for their own slots while another master is down
(``cluster-require-full-coverage no``): serving degrades only the keys of the
failed shard until its replica takes over (after ``cluster-node-timeout``).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import redis

from loopline.contracts.errors import ConfigError, StackError
from loopline.contracts.settings import Settings
from loopline.security.secrets import write_private
from loopline.stack import process
from loopline.stack.component import ComponentStatus, Progress
from loopline.stack.paths import StackPaths
from loopline.stack.redis_server import LOCAL_HOSTS, RedisServer, redis_config

# Redis listens for the cluster bus on the client port + this.
BUS_OFFSET = 10000
REDIS_CLI_INSTALL = "apt-get install redis-tools"


def cluster_config(settings: Settings, data_dir: Path) -> str:
    """redis.conf of one cluster node: the single server's, plus the cluster's lines."""
    return redis_config(settings, data_dir) + "\n".join(
        [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {settings.stack.redis_cluster_node_timeout_ms}",
            # The other shards keep serving while one has no master.
            "cluster-require-full-coverage no",
            # A replica takes over however long it was cut off: a local stack
            # prefers answering to waiting for an operator.
            "cluster-replica-validity-factor 0",
            "",
        ]
    )


def parse_info(text: str) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict.

    >>> parse_info("cluster_state:ok\\r\\ncluster_slots_assigned:16384\\r\\n")["cluster_state"]
    'ok'
    """
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass(frozen=True)
class NodeRole:
    """One line of ``CLUSTER NODES``: a node, its role and whom it replicates."""

    node_id: str
    port: int
    master: bool
    failed: bool
    master_id: str | None

    @classmethod
    def parse(cls, line: str) -> NodeRole:
        """
        >>> r = NodeRole.parse("ab 127.0.0.1:7001@17001 slave,fail cd 0 0 3 connected")
        >>> (r.port, r.master, r.failed, r.master_id)
        (7001, False, True, 'cd')
        """
        fields = line.split()
        flags = set(fields[2].split(","))
        port = int(fields[1].split("@", 1)[0].rpartition(":")[2])
        master = "master" in flags
        return cls(
            fields[0], port, master, bool(flags & {"fail", "fail?"}), None if master else fields[3]
        )


def node_roles(text: str) -> dict[int, NodeRole]:
    """``CLUSTER NODES`` by port."""
    roles = (NodeRole.parse(line) for line in text.splitlines() if line.strip())
    return {r.port: r for r in roles}


class RedisClusterNode(RedisServer):
    """One ``redis-server --cluster-enabled yes`` of the cluster, on its own port."""

    def __init__(
        self, settings: Settings, paths: StackPaths, port: int, progress: Progress | None = None
    ) -> None:
        super().__init__(
            replace(settings, redis=replace(settings.redis, port=port)), paths, progress
        )
        self.name = f"redis-{port}"
        self.port = port
        self.dir = paths.root / "redis-cluster" / str(port)

    def ports(self) -> list[int]:
        return [self.port, self.port + BUS_OFFSET]

    def prepare(self) -> None:
        self._server()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.dir / "redis.conf", cluster_config(self.settings, self.dir))

    def command(self) -> list[str]:
        return [self._server(), str(self.dir / "redis.conf")]

    def client(self) -> redis.Redis:
        return self._client()

    def cluster_info(self) -> dict[str, str]:
        """``CLUSTER INFO`` ({} when the node does not answer)."""
        return parse_info(self._cluster("INFO"))

    def roles(self) -> dict[int, NodeRole]:
        """``CLUSTER NODES`` as this node sees it ({} when it does not answer)."""
        return node_roles(self._cluster("NODES"))

    def _cluster(self, subcommand: str) -> str:
        """``CLUSTER <subcommand>``'s text ('' when the node does not answer as a cluster node)."""
        client = self._client()
        try:
            return client.execute_command("CLUSTER", subcommand).decode()
        except redis.RedisError:
            return ""
        finally:
            client.close()


class RedisCluster:
    """The local cluster's nodes: start and form, status, stop."""

    def __init__(
        self,
        settings: Settings,
        paths: StackPaths,
        masters: int,
        replicas: int,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.masters = masters
        self.replicas = replicas
        self.progress: Progress = progress or (lambda _: None)
        base = settings.redis.port
        count = masters * (1 + replicas)
        self.nodes = [RedisClusterNode(settings, paths, base + i, progress) for i in range(count)]

    @classmethod
    def configured(cls, settings: Settings, paths: StackPaths, progress: Progress | None = None):
        """The cluster the settings ask for (``stack.redis_cluster_masters``), else the one
        this state directory recorded, else None."""
        s = settings.stack
        if s.redis_cluster_masters:
            return cls(settings, paths, s.redis_cluster_masters, s.redis_cluster_replicas, progress)
        try:
            record = json.loads(cls.record_path(paths).read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise StackError(f"{cls.record_path(paths)} is unreadable ({e}); remove it") from e
        recorded = replace(settings, redis=replace(settings.redis, port=int(record["port"])))
        return cls(recorded, paths, int(record["masters"]), int(record["replicas"]), progress)

    @staticmethod
    def record_path(paths: StackPaths) -> Path:
        return paths.root / "redis-cluster" / "cluster.json"

    @property
    def address(self) -> str:
        return f"{self.settings.redis.host}:{self.settings.redis.port}"

    def check(self) -> None:
        """Settings that cannot make a working local cluster fail before anything starts."""
        if self.settings.stack.secure:
            raise ConfigError(
                "stack.secure with stack.redis_cluster_masters: the local Redis Cluster runs "
                "without TLS and ACL users; start one or the other"
            )
        if self.settings.redis.host not in LOCAL_HOSTS:
            raise ConfigError(
                f"loopline only starts a Redis Cluster on this machine (redis.host="
                f"{self.settings.redis.host})"
            )
        last = self.nodes[-1].port + BUS_OFFSET
        if last > 65535:
            raise ConfigError(
                f"redis.port {self.settings.redis.port}: the cluster's {len(self.nodes)} nodes "
                f"and their bus ports (+{BUS_OFFSET}) need ports up to {last}; lower redis.port"
            )

    def up(self) -> ComponentStatus:
        """Start (or reuse) every node, form the cluster if new, wait until it serves."""
        self.check()
        started: list[RedisClusterNode] = []
        try:
            for node in self.nodes:
                if node.up().started_now:
                    started.append(node)
            self._form()
            self._wait_ok()
        except BaseException:
            for node in reversed(started):
                node.down()
            raise
        path = self.record_path(self.paths)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"port": self.settings.redis.port, "masters": self.masters}
        path.write_text(json.dumps({**record, "replicas": self.replicas}) + "\n")
        return replace(self.status()[0], started_now=bool(started))

    def down(self) -> list[str]:
        stopped = [m for m in (node.down() for node in reversed(self.nodes)) if m is not None]
        self.record_path(self.paths).unlink(missing_ok=True)
        return stopped

    def status(self) -> tuple[ComponentStatus, tuple[ComponentStatus, ...]]:
        """The cluster as one line (up when its state is ok), then each node's line."""
        nodes = tuple(node.status() for node in self.nodes)
        answering = [n for n, s in zip(self.nodes, nodes, strict=True) if s.up]
        info = answering[0].cluster_info() if answering else {}
        roles = answering[0].roles() if answering else {}
        ports_by_id = {r.node_id: port for port, r in roles.items()}
        lines = []
        for node, st in zip(self.nodes, nodes, strict=True):
            role = roles.get(node.port)
            what = "?" if role is None else ("master" if role.master else "replica")
            if role is not None and role.master_id in ports_by_id:
                what += f" of {ports_by_id[role.master_id]}"
            if role is not None and role.failed:
                what += " (failed)"
            lines.append(replace(st, detail=f"{what}; {st.detail}"))
        state = info.get("cluster_state", "unreachable")
        up = state == "ok"
        masters = sum(1 for r in roles.values() if r.master and not r.failed)
        replicas = sum(1 for r in roles.values() if not r.master and not r.failed)
        detail = (
            f"Redis Cluster {state}: {masters} masters, {replicas} replicas, "
            f"{info.get('cluster_slots_ok', '0')}/16384 slots ok"
        )
        managed = all(s.managed for s in nodes)
        version = next((s.version for s in nodes if s.version), None)
        summary = ComponentStatus("redis", up, self.address, version, managed, None, detail)
        return summary, tuple(lines)

    # -- forming ------------------------------------------------------------------
    def _form(self) -> None:
        infos = [node.cluster_info() for node in self.nodes]
        plain = [node.address for node, info in zip(self.nodes, infos, strict=True) if not info]
        if plain:
            raise StackError(
                f"{', '.join(plain)} answer(s) but not as Redis Cluster nodes (a single Redis "
                "of an earlier `loopline up`?); stop it with `loopline down` or move the "
                "cluster with redis.port"
            )
        assigned = [int(i.get("cluster_slots_assigned", "0")) for i in infos]
        known = [int(i.get("cluster_known_nodes", "1")) for i in infos]
        if all(a == 16384 for a in assigned) and all(k == len(self.nodes) for k in known):
            return  # already one cluster (nodes restarted from their nodes.conf)
        if any(assigned) or any(k > 1 for k in known):
            raise StackError(
                f"the Redis nodes at {self.address} and after are part of another cluster "
                f"(slots assigned: {assigned}); stop them (`loopline down`) and remove "
                f"{self.paths.root / 'redis-cluster'} to form a new one"
            )
        cli = process.require_tool("redis-cli", REDIS_CLI_INSTALL)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        argv = [cli, "--cluster", "create", *addresses]
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        self.progress(
            f"redis: forming a cluster of {self.masters} masters x {self.replicas} replicas"
        )
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.settings.stack.startup_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise StackError(f"`{' '.join(argv)}` did not finish in time") from e
        if done.returncode != 0:
            raise StackError(
                f"`{' '.join(argv)}` failed ({done.returncode}):\n{done.stdout[-2000:]}"
                f"{done.stderr[-2000:]}"
            )

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + self.settings.stack.startup_timeout_s
        while True:
            infos = [node.cluster_info() for node in self.nodes]
            if all(i.get("cluster_state") == "ok" for i in infos):
                return
            if time.monotonic() > deadline:
                states = {
                    n.port: i.get("cluster_state") for n, i in zip(self.nodes, infos, strict=True)
                }
                raise StackError(f"the Redis Cluster did not reach state ok in time: {states}")
            time.sleep(0.1)
