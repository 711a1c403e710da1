"""Free loopback ports for servers a run starts beside others (demo, tests, benchmarks).

>>> 0 < free_port() < 65536
True
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free now (another process may still take it before use)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
