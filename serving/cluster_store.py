"""The online store on a Redis Cluster: per shard one pipelined round trip.

A request's keys are grouped by the master that owns their hash slot (CRC16
of the hash tag, ``redis.crc.key_slot``); each master gets one pipelined write
of ``GET``s (the keys of one request lie in different slots, and a cluster
refuses a multi-key command across slots), all masters are sent to before any
reply is read, so the request pays about one round trip, not one per shard.

Moved slots: a ``MOVED`` reply is followed once to the node it names and the
slot map is refreshed; an ``ASK`` reply (a slot being migrated) is followed
once with ``ASKING``. A shard that is down or slow fails only its own keys:
:class:`PartialStoreError` carries the other shards' values, the failed keys
degrade to last-known or default values, and the slot map is refreshed (at
most every ``retry_after_s``) so a promoted replica is found. Every wait is
bounded by the request's own deadline; nothing here can hang a request.

>>> table = slot_table([[0, 9999, [b"10.0.0.1", 7000, b"id1"]], [10000, 16383, [b"", 7001]]],
...                    asked=("10.0.0.9", 7005))
>>> table[0], table[16383]
(('10.0.0.1', 7000), ('10.0.0.9', 7001))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import hiredis
from redis.crc import key_slot

from loopline.config.redis import credentials, tls_context
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import RedisSettings
from loopline.serving.feature_store import (
    PartialStoreError,
    RedisFeatureStore,
    StoreUnavailableError,
    encode_command,
)

SLOTS = 16384
Address = tuple[str, int]
SlotTable = tuple[Address | None, ...]

_CLUSTER_SLOTS = encode_command(b"CLUSTER", b"SLOTS")
_ASKING = encode_command(b"ASKING")


def slot_table(reply: Any, asked: Address) -> SlotTable:
    """Each slot's master from a ``CLUSTER SLOTS`` reply (None: no master).

    A master announced without a host is at the host that was asked.
    """
    table: list[Address | None] = [None] * SLOTS
    for row in reply:
        start, end, master = int(row[0]), int(row[1]), row[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        address = (host or asked[0], int(master[1]))
        table[start : end + 1] = [address] * (end - start + 1)
    return tuple(table)


def group_by_owner(keys: Sequence[bytes], table: SlotTable) -> dict[Address | None, list[int]]:
    """The positions of ``keys`` per master that owns their slot (None: unowned).

    >>> t = tuple([("a", 1)] * 8192 + [("b", 2)] * 8192)
    >>> group_by_owner([b"x:{c1}", b"y:{c1}", b"x:{c2}"], t)
    {('b', 2): [0, 1], ('a', 1): [2]}
    """
    groups: dict[Address | None, list[int]] = {}
    for i, key in enumerate(keys):
        owner = table[key_slot(key)]
        group = groups.get(owner)
        if group is None:
            groups[owner] = [i]
        else:
            group.append(i)
    return groups


def parse_redirect(message: str) -> tuple[str, Address] | None:
    """``("MOVED" | "ASK", address)`` of a redirection error, else None.

    >>> parse_redirect("MOVED 3999 127.0.0.1:6381"), parse_redirect("ERR nope")
    (('MOVED', ('127.0.0.1', 6381)), None)
    """
    kind, _, rest = message.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    host, _, port = rest.partition(" ")[2].rpartition(":")
    return kind, (host, int(port))


class ClusterFeatureStore:
    """GETs against a Redis Cluster's masters, each call bounded by its own timeout."""

    def __init__(
        self,
        seeds: Sequence[Address],
        *,
        auth: tuple[str, str] | None = None,
        tls: Any = None,
        retry_after_s: float = 0.2,
        connect_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seeds = tuple(seeds)
        self.retry_after_s = retry_after_s
        self._options: dict[str, Any] = {
            "auth": auth,
            "tls": tls,
            "retry_after_s": retry_after_s,
            "clock": clock,
        }
        self._clock = clock
        self._nodes: dict[Address, RedisFeatureStore] = {}
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._refresh_after = float("inf")  # a clock time; inf: the map is current
        self._refreshed_at = -float("inf")
        self._table = self._first_table(connect_timeout_s)

    @classmethod
    def from_settings(cls, conf: RedisSettings, **options: Any) -> ClusterFeatureStore:
        """A store for ``redis.*`` with ``redis.cluster``: seeds, ACL user and TLS."""
        return cls(conf.seeds, auth=credentials(conf), tls=tls_context(conf), **options)

    @property
    def masters(self) -> set[Address]:
        """The masters of the current slot map."""
        return {a for a in self._table if a is not None}

    def mget(self, keys: Sequence[bytes], timeout_s: float) -> list[bytes | None]:
        now = self._clock()
        if timeout_s <= 0:
            raise StoreUnavailableError("no time left in the request deadline", "timeout")
        deadline = now + timeout_s
        if now >= self._refresh_after:
            self._refresh(deadline)
        values: list[bytes | None] = [None] * len(keys)
        failed: dict[int, StoreUnavailableError] = {}
        redirects: list[tuple[int, str, Address]] = []
        groups = group_by_owner(keys, self._table)
        self._exchange(
            (
                (owner, [(i, encode_command(b"GET", keys[i])) for i in idx])
                for owner, idx in groups.items()
            ),
            deadline,
            values,
            failed,
            redirects,
        )
        if redirects:
            self._follow(keys, redirects, deadline, values, failed)
        if failed:
            # A shard failed: look for its new master (a promoted replica) soon.
            self._stale()
            first = next(iter(failed.values()))
            raise PartialStoreError(
                f"{len(failed)} of {len(keys)} keys unanswered: {first}",
                first.reason,
                values,
                frozenset(failed),
            )
        return values

    def close(self) -> None:
        with self._lock:
            nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            node.close()

    # -- the exchange ------------------------------------------------------------
    def _exchange(
        self,
        batches: Iterable[tuple[Address | None, list[tuple[int, bytes]]]],
        deadline: float,
        values: list[bytes | None],
        failed: dict[int, StoreUnavailableError],
        redirects: list[tuple[int, str, Address]] | None,
    ) -> None:
        """Send every node its commands (one reply each, ``ASKING``'s dropped), then read.

        Values land in ``values``; ``MOVED``/``ASK`` replies in ``redirects`` (when
        given, else they fail the key) and failures in ``failed``.
        """
        sent = []
        for owner, commands in batches:
            if owner is None:
                error = StoreUnavailableError("no master serves the slot", "down")
                failed.update((i, error) for i, _ in commands)
                continue
            node = self._node(owner)
            try:
                conn = node.send(b"".join(c for _, c in commands), deadline)
            except StoreUnavailableError as e:
                failed.update((i, e) for i, _ in commands)
                continue
            sent.append((node, conn, commands))
        for node, conn, commands in sent:
            expected = sum(1 + c.startswith(_ASKING) for _, c in commands)
            try:
                replies = node.receive(conn, expected, deadline)
            except StoreUnavailableError as e:
                failed.update((i, e) for i, _ in commands)
                continue
            answers = iter(replies)
            for i, command in commands:
                if command.startswith(_ASKING):
                    next(answers)  # ASKING's +OK
                reply = next(answers)
                if not isinstance(reply, hiredis.ReplyError):
                    values[i] = reply  # type: ignore[assignment]
                    continue
                redirect = parse_redirect(str(reply))
                if redirect is not None and redirects is not None:
                    redirects.append((i, *redirect))
                else:
                    failed[i] = StoreUnavailableError(
                        f"redis {node.host}:{node.port}: {reply}", "error"
                    )

    def _follow(
        self,
        keys: Sequence[bytes],
        redirects: list[tuple[int, str, Address]],
        deadline: float,
        values: list[bytes | None],
        failed: dict[int, StoreUnavailableError],
    ) -> None:
        """Retry each redirected key once where its redirection points."""
        batches: dict[Address, list[tuple[int, bytes]]] = {}
        for i, kind, address in redirects:
            get = encode_command(b"GET", keys[i])
            batches.setdefault(address, []).append((i, _ASKING + get if kind == "ASK" else get))
            if kind == "MOVED":
                self._stale()
        self._exchange(batches.items(), deadline, values, failed, None)

    def _node(self, address: Address) -> RedisFeatureStore:
        node = self._nodes.get(address)
        if node is None:
            with self._lock:
                node = self._nodes.get(address)
                if node is None:
                    node = RedisFeatureStore(address[0], address[1], **self._options)
                    self._nodes[address] = node
        return node

    # -- the slot map ------------------------------------------------------------
    def _read_table(self, address: Address, deadline: float) -> SlotTable:
        node = self._node(address)
        conn = node.send(_CLUSTER_SLOTS, deadline)
        (reply,) = node.receive(conn, 1, deadline)
        if isinstance(reply, hiredis.ReplyError):
            raise ConfigError(
                f"redis {address[0]}:{address[1]} is not a Redis Cluster node ({reply}); "
                "check redis.cluster, redis.host, redis.port and redis.cluster_nodes"
            )
        return slot_table(reply, address)

    def _first_table(self, timeout_s: float) -> SlotTable:
        """The slot map from the first seed that answers, or a ConfigError naming them."""
        deadline = self._clock() + timeout_s
        errors = []
        for seed in self.seeds:
            try:
                return self._read_table(seed, deadline)
            except StoreUnavailableError as e:
                errors.append(str(e))
        raise ConfigError(
            f"no Redis Cluster node answered within {timeout_s:.1f} s at "
            f"{', '.join(f'{h}:{p}' for h, p in self.seeds)} (redis.host, redis.port, "
            f"redis.cluster_nodes): {'; '.join(errors)}"
        )

    def _stale(self) -> None:
        """Refresh the slot map at the next call, but at most every ``retry_after_s``."""
        self._refresh_after = min(self._refresh_after, self._refreshed_at + self.retry_after_s)

    def _refresh(self, deadline: float) -> None:
        """Re-read the slot map from a known node; one thread at a time, the others go on."""
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            self._refreshed_at = self._clock()
            self._refresh_after = self._refreshed_at + self.retry_after_s
            for address in dict.fromkeys([*self.masters, *self.seeds, *self._nodes]):
                try:
                    table = self._read_table(address, deadline)
                except (StoreUnavailableError, ConfigError):
                    continue
                if None not in table:
                    self._refresh_after = float("inf")
                self._table = table
                return
        finally:
            self._refreshing.release()
