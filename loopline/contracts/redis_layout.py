"""How features sit in Redis: one packed value per entity and feature-set version.

Key: ``{prefix}:f:{set}:v{version}:{fingerprint[:12]}:{entity}:{id}``.
Value: little-endian float64s, ``[valid_at, v1, ..., vn]``: the event time
(seconds) the values are valid at, then the entity's stored features in the
view's order. One GET (or one MGET for several entities) serves a prediction.

On a Redis Cluster (``redis.cluster``) the entity id is the key's *hash tag*:
``{prefix}:f:{set}:v{version}:{fingerprint[:12]}:{entity}:{{id}}``. Redis hashes
only what is between the braces, so every key of one entity id (each view,
feature set and version) sits in one slot, on one shard: a batch of them is one
command, and a multi-version read of one entity is one shard's work. Without a
cluster the key keeps its old form (no braces), so a single Redis's stored
values stay valid; the layout needs no version bump because a cluster
key differs from the single-node key by its braces alone. Switching a deployment
between the two means writing the store afresh (a replay of the features flow
from a fresh recovery directory).

Writes carry absolute values and go through :data:`WRITE_IF_NEWER`, a Lua
script that replaces the value only when ``valid_at`` is not older than the
stored one, so a replay after recovery can never move a value back in time.

>>> from types import SimpleNamespace
>>> fs = SimpleNamespace(name="fraud", version=1, fingerprint="0123456789abcdef")
>>> layout = RedisLayout(prefix="ll")
>>> layout.feature_key(fs, "card", "c42")
'll:f:fraud:v1:0123456789ab:card:c42'
>>> RedisLayout(prefix="ll", cluster=True).feature_key(fs, "card", "c42")
'll:f:fraud:v1:0123456789ab:card:{c42}'
>>> raw = pack(1700000000.5, (1.0, 2.5))
>>> unpack(raw)
(1700000000.5, (1.0, 2.5))
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from loopline.contracts.errors import ConfigError, FeatureError

_F64 = struct.Struct("<d")


class FeatureSet(Protocol):
    """What a key names of a feature set (``featurecore.FeatureSet`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class RedisLayout:
    """Key names for the online store; ``prefix`` isolates tenants and tests."""

    prefix: str = "ll"
    # Hash-tagged keys for a Redis Cluster (``redis.cluster``).
    cluster: bool = False

    def __post_init__(self) -> None:
        if self.cluster and ("{" in self.prefix or "}" in self.prefix):
            # Redis would take the tag from the prefix: every key in one slot.
            raise ConfigError(
                f"streams.redis_key_prefix {self.prefix!r} must not contain braces "
                "with redis.cluster (they would make one hash tag of every key)"
            )

    @property
    def key_suffix(self) -> str:
        """What follows the entity id: the hash tag's closing brace on a cluster."""
        return "}" if self.cluster else ""

    def feature_key(self, fs: FeatureSet, entity: str, entity_id: str) -> str:
        return f"{self.key_prefix(fs, entity)}{entity_id}{self.key_suffix}"

    def key_prefix(self, fs: FeatureSet, entity: str) -> str:
        """Everything before the entity id (precompute it on hot paths)."""
        base = f"{self.prefix}:f:{fs.name}:v{fs.version}:{fs.fingerprint[:12]}:{entity}:"
        return base + "{" if self.cluster else base

    def feature_set_key(self, fs: FeatureSet) -> str:
        """Where the feature set's description (JSON) is published."""
        return f"{self.prefix}:fs:{fs.name}:v{fs.version}:{fs.fingerprint[:12]}"


@lru_cache(maxsize=64)
def _packer(n: int) -> struct.Struct:
    return struct.Struct(f"<{n + 1}d")


def pack(valid_at: float, values: tuple[float, ...] | list[float]) -> bytes:
    """Pack ``valid_at`` and the values into one Redis value."""
    return _packer(len(values)).pack(valid_at, *values)


def unpack(raw: bytes, expected: int | None = None) -> tuple[float, tuple[float, ...]]:
    """Inverse of :func:`pack`; checks the count when ``expected`` is given."""
    if len(raw) % 8 or len(raw) < 8:
        raise FeatureError(f"packed feature value has {len(raw)} bytes, not a float64 array")
    n = len(raw) // 8 - 1
    if expected is not None and n != expected:
        raise FeatureError(f"packed feature value holds {n} features, expected {expected}")
    vals = _packer(n).unpack(raw)
    return vals[0], vals[1:]


# KEYS[1]: feature key. ARGV[1]: packed value. ARGV[2]: TTL seconds.
# Returns 1 when written, 0 when the stored value is newer.
WRITE_IF_NEWER = """
local old = redis.call('GET', KEYS[1])
if old then
  local old_t = struct.unpack('<d', string.sub(old, 1, 8))
  local new_t = struct.unpack('<d', string.sub(ARGV[1], 1, 8))
  if new_t < old_t then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""
