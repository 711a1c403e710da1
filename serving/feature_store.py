"""The one Redis round trip of a prediction: MGET of the entities' packed features.

A minimal RESP client (one ``MGET`` per call, parsed by hiredis) instead of
redis-py: on the request path it costs about half as much, and the socket
timeout can be set per call from the request's remaining deadline. Each
thread has its own connection; a connection that timed out or failed is
closed (its reply may still arrive) and the next call reconnects.

After a failure the store is skipped for ``retry_after_s``: requests meanwhile
degrade at once instead of each paying a timeout against a dead or stalled
server.

>>> encode_mget([b"ll:f:card:c1", b"ll:f:merchant:m1"])
b'*3\\r\\n$4\\r\\nMGET\\r\\n$12\\r\\nll:f:card:c1\\r\\n$16\\r\\nll:f:merchant:m1\\r\\n'
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import hiredis

from loopline.contracts.errors import FeatureError


class StoreUnavailableError(FeatureError):
    """The online store did not answer in time (down, slow or broken)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        # Short label for metrics: "down", "timeout", "error", "backoff".
        self.reason = reason


class FeatureStore(Protocol):
    """What the inference core needs from the online store."""

    def mget(self, keys: Sequence[bytes], timeout_s: float) -> list[bytes | None]:
        """Values of ``keys`` in order (``None`` when absent) within ``timeout_s``."""
        ...


def encode_mget(keys: Sequence[bytes]) -> bytes:
    parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
    parts += [b"$%d\r\n%s\r\n" % (len(k), k) for k in keys]
    return b"".join(parts)


class _Connection:
    __slots__ = ("reader", "sock", "timeout")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = hiredis.Reader()
        self.timeout = -1.0


class RedisFeatureStore:
    """MGET against one Redis server, each call bounded by its own timeout."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        *,
        retry_after_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._local = threading.local()
        # Until this clock time the store is not tried (set after a failure).
        self._skip_until = 0.0
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()

    def mget(self, keys: Sequence[bytes], timeout_s: float) -> list[bytes | None]:
        now = self._clock()
        if now < self._skip_until:
            raise StoreUnavailableError(
                f"redis {self.host}:{self.port} failed recently; retrying in "
                f"{(self._skip_until - now) * 1000:.0f} ms",
                "backoff",
            )
        if timeout_s <= 0:
            raise StoreUnavailableError("no time left in the request deadline", "timeout")
        deadline = now + timeout_s
        conn: _Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._connect(timeout_s)
            if conn.timeout != timeout_s:
                conn.sock.settimeout(timeout_s)
                conn.timeout = timeout_s
            conn.sock.sendall(encode_mget(keys))
            reply = self._read_reply(conn, deadline)
        except TimeoutError as e:
            self._fail(conn)
            raise StoreUnavailableError(
                f"redis {self.host}:{self.port} did not answer within {timeout_s * 1000:.1f} ms",
                "timeout",
            ) from e
        except (OSError, hiredis.ProtocolError) as e:
            self._fail(conn)
            raise StoreUnavailableError(f"redis {self.host}:{self.port}: {e}", "down") from e
        if isinstance(reply, hiredis.ReplyError) or not isinstance(reply, list):
            # The connection is still in sync (one reply per command); keep it.
            raise StoreUnavailableError(f"redis MGET failed: {reply!r}", "error")
        return reply

    def close(self) -> None:
        with self._lock:
            conns, self._connections = self._connections, set()
        for conn in conns:
            conn.sock.close()

    def _connect(self, timeout_s: float) -> _Connection:
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock)
            if self.db:
                db = str(self.db).encode()
                sock.sendall(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n" % (len(db), db))
                reply = self._read_reply(conn, self._clock() + timeout_s)
                if isinstance(reply, hiredis.ReplyError):
                    raise OSError(f"SELECT {self.db} failed: {reply}")
        except BaseException:
            sock.close()
            raise
        self._local.conn = conn
        with self._lock:
            self._connections.add(conn)
        return conn

    def _read_reply(self, conn: _Connection, deadline: float) -> object:
        reader, sock = conn.reader, conn.sock
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("redis closed the connection")
            reader.feed(data)
            reply = reader.gets()
            if reply is not False:
                return reply
            # A reply split over several reads: the whole call stays within the deadline.
            left = deadline - self._clock()
            if left <= 0:
                raise TimeoutError("deadline passed while reading the reply")
            sock.settimeout(left)
            conn.timeout = left

    def _fail(self, conn: _Connection | None) -> None:
        self._skip_until = self._clock() + self.retry_after_s
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._connections.discard(conn)
            conn.sock.close()
