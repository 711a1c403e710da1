"""Free loopback ports for servers a run starts beside others (demo, tests, benchmarks).

>>> 0 < free_port() < 65536
True
>>> base = free_port_run(3, offsets=(0, 10000))
>>> base + 2 + 10000 < 65536
True
"""

from __future__ import annotations

from loopline.config.ports import free_port, is_free
from loopline.contracts.errors import StackError

__all__ = ["free_port", "free_port_run"]


def free_port_run(
    count: int, *, offsets: tuple[int, ...] = (0,), host: str = "127.0.0.1", tries: int = 200
) -> int:
    """A base port with ``base + i + offset`` free for each i < ``count`` and each offset
    (a Redis Cluster's consecutive node ports and their bus ports at +10000)."""
    top = 65535 - count - max(offsets)
    for _ in range(tries):
        base = free_port(host)
        if base > top:
            continue
        if all(is_free(base + i + o, host) for i in range(count) for o in offsets):
            return base
    raise StackError(
        f"no run of {count} free ports (offsets {offsets}) found on {host}; "
        "free some ports or set redis.port to a free range"
    )
