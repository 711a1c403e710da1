"""Where the local stack keeps its files, all under one state directory.

Deleting the state directory resets the stack completely (jars, data, logs,
pid files); nothing is written anywhere else except Maven's own cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackPaths:
    """Every path the stack uses, derived from ``settings.stack.state_dir``."""

    root: Path

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> StackPaths:
        # Absolute, so pid files and generated configs stay valid whatever the
        # current directory of a later `loopline down` is.
        return cls(root=Path(state_dir).expanduser().resolve())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def lock(self) -> Path:
        """Held exclusively while `up` or `down` changes what runs."""
        return self.root / "stack.lock"

    @property
    def users_lock(self) -> Path:
        """Held shared by every session using the stack (see Stack.shared)."""
        return self.root / "users.lock"

    @property
    def kafka(self) -> Path:
        return self.root / "kafka"

    def kafka_lib(self, version: str) -> Path:
        return self.kafka / f"lib-{version}"

    @property
    def kafka_data(self) -> Path:
        return self.kafka / "data"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka / "server.properties"

    @property
    def kafka_log4j(self) -> Path:
        return self.kafka / "log4j2.xml"

    @property
    def kafka_pom(self) -> Path:
        return self.kafka / "pom.xml"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def redis_conf(self) -> Path:
        return self.redis / "redis.conf"

    @property
    def secure(self) -> Path:
        """The secure stack's certificates and secrets (``loopline up --secure``)."""
        return self.root / "secure"

    def pid_file(self, component: str) -> Path:
        return self.pids / f"{component}.json"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"
