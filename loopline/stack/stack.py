"""The local stack as one thing: Kafka + Redis (one server or a cluster) + Loopline's topics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from loopline.contracts.errors import ConfigError, StackError
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.stack import locks
from loopline.stack.component import LOCK_TIMEOUT_S, Component, ComponentStatus, Progress
from loopline.stack.kafka import KafkaBroker
from loopline.stack.mlflow_server import MlflowServer
from loopline.stack.paths import StackPaths
from loopline.stack.redis_cluster import RedisCluster
from loopline.stack.redis_server import LOCAL_HOSTS, RedisServer
from loopline.stack.topics_admin import ensure_topics, existing_topics


@dataclass(frozen=True)
class StackStatus:
    """What runs, where, and which of Loopline's topics exist."""

    kafka: ComponentStatus
    redis: ComponentStatus
    expected_topics: tuple[str, ...]
    present_topics: tuple[str, ...]
    # Topics on the broker that are not Loopline's (other prefixes, e.g. tests).
    other_topics: int
    # A Redis Cluster's nodes (``redis`` then sums the cluster up); empty for one Redis.
    redis_nodes: tuple[ComponentStatus, ...] = ()
    # The MLflow server (`up --mlflow`); None when neither started nor answering.
    mlflow: ComponentStatus | None = None

    @property
    def components(self) -> tuple[ComponentStatus, ComponentStatus]:
        return (self.kafka, self.redis)

    @property
    def missing_topics(self) -> tuple[str, ...]:
        return tuple(t for t in self.expected_topics if t not in self.present_topics)

    @property
    def all_up(self) -> bool:
        return self.kafka.up and self.redis.up and not self.missing_topics

    def describe(self) -> str:
        lines = [c.describe() for c in self.components]
        lines += [f"  {node.describe()}" for node in self.redis_nodes]
        if self.mlflow is not None:
            lines.append(self.mlflow.describe())
        if not self.kafka.up:
            lines.append(f"{'topics':<6} {'?':<5} unknown while Kafka is down")
            return "\n".join(lines)
        have, want = len(self.present_topics), len(self.expected_topics)
        state = "ok" if not self.missing_topics else "miss"
        line = f"{'topics':<6} {state:<5} {have}/{want} present"
        if self.missing_topics:
            line += f"; missing: {', '.join(self.missing_topics)}"
        if self.other_topics:
            line += f"; {self.other_topics} other topic(s) on the broker"
        lines.append(line)
        lines += [f"         {name}" for name in self.present_topics]
        return "\n".join(lines)


def check_bootstrap(settings: Settings) -> None:
    """Clients must reach the broker `up` starts; a mismatch is a config error.

    Otherwise `up` would start one broker while every client talks to another.
    """
    port = settings.stack.kafka_port
    for entry in settings.kafka.bootstrap_servers.split(","):
        host, _, entry_port = entry.strip().rpartition(":")
        if host.strip("[]") in LOCAL_HOSTS and entry_port == str(port):
            return
    raise ConfigError(
        f"kafka.bootstrap_servers={settings.kafka.bootstrap_servers!r} does not point at the "
        f"local broker `loopline up` runs on 127.0.0.1:{port} (stack.kafka_port)"
    )


class Stack:
    """Start, inspect and stop the local Kafka broker and Redis.

    ``up`` starts what is missing, reuses what already answers, and records
    what it started under ``settings.stack.state_dir``; ``down`` stops only
    what that state directory recorded.
    """

    def __init__(self, settings: Settings, progress: Progress | None = None) -> None:
        self.settings = settings
        self.paths = StackPaths.for_state_dir(settings.stack.state_dir)
        self.kafka = KafkaBroker(settings, self.paths, progress)
        self.redis = RedisServer(settings, self.paths, progress)
        # `loopline up --redis-cluster N`, or the cluster this state dir runs.
        self.redis_cluster = RedisCluster.configured(settings, self.paths, progress)
        self.mlflow = MlflowServer(settings, self.paths, progress)
        self.progress: Progress = progress or (lambda _: None)
        # Long enough for another process's cold first fetch and start.
        self._lock_timeout_s = LOCK_TIMEOUT_S + 2 * settings.stack.startup_timeout_s

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.kafka.topic_prefix)

    def fetch(self) -> Path:
        """Download the Kafka jars only (no process started); returns the lib dir."""
        with locks.exclusive(self.paths.lock, self._lock_timeout_s):
            return self.kafka.fetch()

    def up(self, *, mlflow: bool = False) -> StackStatus:
        """Bring everything up (idempotent) and return the resulting status;
        ``mlflow``: an MLflow tracking server too."""
        with locks.exclusive(self.paths.lock, self._lock_timeout_s):
            status = self._up()
            if mlflow:
                status = replace(status, mlflow=self.mlflow.up())
            return status

    def down(self) -> list[str]:
        """Stop what this state directory's `up` started; returns what was stopped."""
        with locks.exclusive(self.paths.lock, self._lock_timeout_s):
            return self._down()

    def status(self) -> StackStatus:
        if self.redis_cluster is not None:
            summary, nodes = self.redis_cluster.status()
            status = self._status(self.kafka.status(), summary, nodes)
        else:
            status = self._status(self.kafka.status(), self.redis.status())
        mlflow = self.mlflow.status()
        return replace(status, mlflow=mlflow) if mlflow.up or mlflow.managed else status

    @contextmanager
    def shared(self) -> Iterator[StackStatus]:
        """Use the stack for a while, together with other processes.

        Starts what is missing; on exit, the last user of this state directory
        stops what it started (reused servers are never stopped). This is what
        the pytest session fixture uses, so parallel sessions do not pull the
        stack from under each other.
        """
        users = locks.UsersLock(self.paths.users_lock)
        with locks.exclusive(self.paths.lock, self._lock_timeout_s):
            status = self._up()
            users.hold()
        try:
            yield status
        finally:
            with locks.exclusive(self.paths.lock, self._lock_timeout_s):
                if users.release_and_check_last():
                    self._down()

    # -- unlocked implementations -------------------------------------------------
    def _up(self) -> StackStatus:
        check_bootstrap(self.settings)
        self._check_redis_mode()
        started: list[Component | RedisCluster] = []
        try:
            results: list[ComponentStatus] = []
            # Redis first: it answers in milliseconds, Kafka takes seconds.
            components: tuple[Component | RedisCluster, ...] = (
                self.redis_cluster or self.redis,
                self.kafka,
            )
            for component in components:
                result = component.up()
                if result.started_now:
                    started.append(component)
                results.append(result)
            created = ensure_topics(
                self.settings, self.topics, timeout_s=self.settings.stack.startup_timeout_s
            )
        except BaseException:
            # Leave nothing half-up behind: what this call started, it stops.
            for done in reversed(started):
                try:
                    done.down()
                except StackError as e:
                    self.progress(f"redis/kafka: could not stop after a failed up: {e}")
            raise
        if created:
            self.progress(f"topics: created {len(created)}: {', '.join(created)}")
        redis_status, kafka_status = results
        if self.redis_cluster is not None:
            return self._status(kafka_status, redis_status, self.redis_cluster.status()[1])
        return self._status(kafka_status, redis_status)

    def _check_redis_mode(self) -> None:
        """The clients' ``redis.cluster`` must match what `up` runs, or they find no keys."""
        cluster, s = self.settings.redis.cluster, self.settings.stack
        if s.redis_cluster_masters and not cluster:
            raise ConfigError(
                f"stack.redis_cluster_masters={s.redis_cluster_masters} starts a Redis Cluster "
                "but redis.cluster is false; set redis.cluster: true "
                "(`loopline up --redis-cluster N` sets both)"
            )
        if self.redis_cluster is not None and not s.redis_cluster_masters:
            raise StackError(
                f"this state dir runs a Redis Cluster of {self.redis_cluster.masters} masters "
                f"at {self.redis_cluster.address}: start with `loopline up --redis-cluster "
                f"{self.redis_cluster.masters}` or stop it first (`loopline down`)"
            )
        if cluster and not s.redis_cluster_masters and not self.redis.probe():
            raise ConfigError(
                f"redis.cluster is true but nothing answers at {self.redis.address} and "
                "`up` would start a single Redis; start a cluster with "
                "`loopline up --redis-cluster 3` (stack.redis_cluster_masters)"
            )

    def _down(self) -> list[str]:
        stopped = []
        # Kafka first: it may still flush to clients; Redis has nothing to wait for.
        for component in (self.mlflow, self.kafka, self.redis):
            message = component.down()
            if message is not None:
                stopped.append(message)
        if self.redis_cluster is not None:
            stopped += self.redis_cluster.down()
        return stopped

    def _status(
        self,
        kafka: ComponentStatus,
        redis: ComponentStatus,
        redis_nodes: tuple[ComponentStatus, ...] = (),
    ) -> StackStatus:
        expected = tuple(self.topics.all())
        present: tuple[str, ...] = ()
        others = 0
        if kafka.up:
            try:
                names = existing_topics(self.settings)
            except StackError:
                names = set()
            present = tuple(t for t in expected if t in names)
            others = len(names - set(expected))
        return StackStatus(kafka, redis, expected, present, others, redis_nodes)
