"""Feature values into Redis: absolute, write-if-newer, with a TTL, batched.

:class:`FeatureWriter` sends a whole batch as one ``EVALSHA`` of
:data:`WRITE_IF_NEWER_MANY`, which applies to every key exactly the rule of
``contracts.redis_layout.WRITE_IF_NEWER`` (replace only when the new value's
``valid_at`` is not older). One command per batch instead of one per key: a
pipeline of per-key EVALSHA cost ~17 us per key from Python, the batch ~4 us.
On a Redis Cluster (a ``redis.RedisCluster`` client) a script may only touch
keys of one slot, so a batch becomes one ``EVALSHA`` per hash slot (the entity
id is the key's hash tag, ``contracts.redis_layout``), all of a master's in one
write; a master that redirects or fails gets its share again through redis-py's
cluster pipeline, which follows ``MOVED``/``ASK`` and re-reads the slot map
after a failover. Every reply is checked, and a master that lost the script (a
promoted replica) gets it again.

No dataflow engine here: the Bytewax sink and the benchmark's baseline both
use this class.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.crc import key_slot

from loopline.contracts.errors import ConfigError, StackError
from loopline.streams.features.aggregation import FeatureWrite

# KEYS: feature keys. ARGV[1]: TTL seconds; ARGV[i + 1]: packed value of KEYS[i].
# Returns how many keys were written (the others held a newer value).
WRITE_IF_NEWER_MANY = """
local ttl = tonumber(ARGV[1])
local written = 0
for i, key in ipairs(KEYS) do
  local new = ARGV[i + 1]
  local old = redis.call('GET', key)
  if (not old) or struct.unpack('<d', new) >= struct.unpack('<d', old) then
    redis.call('SET', key, new, 'EX', ttl)
    written = written + 1
  end
end
return written
"""


@dataclass(frozen=True)
class WriteResult:
    written: int
    stale: int
    seconds: float


class FeatureWriter:
    """Writes :class:`FeatureWrite` batches; retries transient Redis failures.

    Every write is idempotent (absolute values, applied only when not older),
    so retrying a batch, or replaying it after recovery, is always safe.
    """

    def __init__(
        self,
        client: redis.Redis,
        ttl_s: int,
        *,
        chunk: int = 1000,
        attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> None:
        if ttl_s <= 0:
            raise ConfigError("redis.feature_ttl_s must be > 0")
        self._client = client
        self._ttl = ttl_s
        self._chunk = chunk
        self._cluster = isinstance(client, redis.RedisCluster)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sha: str = self._call(lambda: client.script_load(WRITE_IF_NEWER_MANY))
        ttl = str(ttl_s).encode()
        self._ttl_arg = b"$%d\r\n%s\r\n" % (len(ttl), ttl)

    def write(self, writes: Sequence[FeatureWrite]) -> WriteResult:
        started = time.perf_counter()
        written = 0
        for i in range(0, len(writes), self._chunk):
            part = writes[i : i + self._chunk]
            written += self._call(functools.partial(self._evalsha, part))
        return WriteResult(written, len(writes) - written, time.perf_counter() - started)

    def _evalsha(self, part: Sequence[FeatureWrite]) -> int:
        send = self._send_by_slot if self._cluster else self._send
        try:
            return send(part)
        except redis.exceptions.NoScriptError:
            # The server restarted or flushed its scripts (or a replica took over).
            self._sha = self._client.script_load(WRITE_IF_NEWER_MANY)
            return send(part)

    def _send_by_slot(self, part: Sequence[FeatureWrite]) -> int:
        """One EVALSHA per hash slot, one pipelined write per master; every reply checked.

        A master that answers anything but counts (MOVED, ASK, a failure) has
        its whole share sent again through redis-py's cluster pipeline, which
        follows redirections and re-reads the slot map; sending a write twice
        is harmless (absolute values, applied only when not older).
        """
        by_slot: dict[int, list[FeatureWrite]] = {}
        for w in part:
            by_slot.setdefault(key_slot(w.key.encode()), []).append(w)
        by_node: dict[Any, list[list[FeatureWrite]]] = {}
        nodes = self._client.nodes_manager
        for slot, group in by_slot.items():
            by_node.setdefault(nodes.get_node_from_slot(slot), []).append(group)
        written = 0
        again: list[list[FeatureWrite]] = []
        for node, groups in by_node.items():
            if node.redis_connection is None:
                again += groups
                continue
            try:
                written += self._exchange(node.redis_connection, groups)
            except (redis.exceptions.ResponseError, redis.exceptions.ConnectionError):
                again += groups
        return written + (self._pipelined(again) if again else 0)

    def _pipelined(self, groups: list[list[FeatureWrite]]) -> int:
        pipe = self._client.pipeline(transaction=False)
        for group in groups:
            keys = [w.key for w in group]
            pipe.execute_command(
                "EVALSHA", self._sha, len(keys), *keys, self._ttl, *(w.value for w in group)
            )
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return sum(int(r) for r in replies)

    def _send(self, part: Sequence[FeatureWrite]) -> int:
        return self._exchange(self._client, [part])

    def _encode(self, part: Sequence[FeatureWrite]) -> bytes:
        # The command encoded here, not by redis-py: its generic argument
        # packing costs about as much per key as the Lua script in Redis.
        n = str(len(part)).encode()
        chunks = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (2 * len(part) + 4, self._sha_b)]
        chunks.append(b"$%d\r\n%s\r\n" % (len(n), n))
        for w in part:
            key = w.key.encode()
            chunks.append(b"$%d\r\n%s\r\n" % (len(key), key))
        chunks.append(self._ttl_arg)
        for w in part:
            chunks.append(b"$%d\r\n%s\r\n" % (len(w.value), w.value))
        return b"".join(chunks)

    def _exchange(self, client: redis.Redis, parts: Sequence[Sequence[FeatureWrite]]) -> int:
        """Send one EVALSHA per part in one write, read every reply: keys written."""
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(self._encode(p) for p in parts)])
            return sum(int(client.parse_response(conn, "EVALSHA")) for _ in parts)
        except (redis.exceptions.RedisError, OSError):
            # Replies may be left unread or still in flight: never reuse it.
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    @property
    def _sha_b(self) -> bytes:
        return self._sha.encode()

    def _call(self, fn):  # type: ignore[no-untyped-def]
        delay = self._backoff_s
        attempt = 1
        while True:
            try:
                return fn()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                if attempt >= self._attempts:
                    raise StackError(
                        f"Redis write failed {attempt} times, last: {e}; "
                        "the flow stops and resumes from its last snapshot"
                    ) from e
            time.sleep(delay)
            delay *= 2
            attempt += 1

    def close(self) -> None:
        self._client.close()
