"""Free loopback ports for servers a run starts beside others (clusters, demo, tests).

Ports are picked below Linux's ephemeral range (32768-60999 by default), where
every outgoing connection takes its local port: a port picked there (as binding
port 0 does) can be taken by some client's ``connect`` before the server binds
it. Below the range only another server can take it.

>>> ports = free_ports(3)
>>> len(set(ports)) == 3 and all(LOW <= p <= HIGH for p in ports)
True
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20_000, 32_767
_rng = random.Random()  # its own stream: a test seeding `random` must not repeat our picks


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can a server bind ``host:port`` now?"""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now (another server may still take it before use)."""
    for _ in range(500):
        port = _rng.randint(LOW, HIGH)
        if is_free(port, host):
            return port
    with socket.socket() as s:  # the low range is full: let the OS choose
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports."""
    out: list[int] = []
    while len(out) < n:
        port = free_port(host)
        if port not in out:
            out.append(port)
    return out
