"""A secure Redis of its own for a test: TLS only, ACL users, on a free port.

The shared plaintext stack keeps running beside it; this server has its own
state directory and certificates under the test's temp dir and is stopped
when the ``with`` block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from loopline.config.loader import apply_layers
from loopline.config.redis import redis_client
from loopline.contracts.settings import RedisSettings, Settings
from loopline.stack.paths import StackPaths
from loopline.stack.ports import free_port
from loopline.stack.redis_server import RedisServer
from loopline.stack.secure_material import SecureMaterial


@dataclass(frozen=True)
class SecureRedis:
    """The running server, its material and the settings that reach it."""

    server: RedisServer
    material: SecureMaterial
    # The base settings with redis.port at the secure server (no credentials).
    settings: Settings

    @property
    def port(self) -> int:
        return self.settings.redis.port

    @property
    def key_prefix(self) -> str:
        return self.settings.streams.redis_key_prefix

    def service_settings(self, service: str) -> Settings:
        """What ``service`` runs with: its ACL user, password file and TLS."""
        return apply_layers(self.settings, {"redis": self.material.settings(service)["redis"]})

    def redis_settings(self, service: str) -> RedisSettings:
        return self.service_settings(service).redis

    def client(self, service: str, **options: Any) -> redis.Redis:
        """A redis-py client logged in as ``service``."""
        return redis_client(self.redis_settings(service), socket_timeout=10, **options)

    def env(self, service: str) -> dict[str, str]:
        """``LOOPLINE_REDIS__*`` variables for a child process running as ``service``."""
        env = {k: v for k, v in self.material.env(service).items() if "_REDIS__" in k}
        return {**env, "LOOPLINE_REDIS__PORT": str(self.port)}


@contextmanager
def secure_redis(tmp: Path, base: Settings, key_prefix: str = "ll") -> Iterator[SecureRedis]:
    """A secure Redis for keys under ``key_prefix``, material and state under ``tmp``."""
    material = SecureMaterial.create(tmp / "secure")
    settings = replace(
        base,
        redis=replace(base.redis, port=free_port()),
        streams=replace(base.streams, redis_key_prefix=key_prefix),
        stack=replace(base.stack, secure=True, state_dir=tmp / "state"),
    )
    server = RedisServer(
        settings, StackPaths.for_state_dir(settings.stack.state_dir), material=material
    )
    server.up()
    try:
        yield SecureRedis(server, material, settings)
    finally:
        server.down()
