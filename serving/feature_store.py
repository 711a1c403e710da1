"""The one Redis round trip of a prediction: MGET of the entities' packed features.

A minimal RESP client (one ``MGET`` per call, parsed by hiredis) instead of
redis-py: on the request path it costs about half as much, and the socket
timeout can be set per call from the request's remaining deadline. Each
thread has its own connection; a connection that timed out or failed is
closed (its reply may still arrive) and the next call reconnects.

After a failure the store is skipped for ``retry_after_s``: requests meanwhile
degrade at once instead of each paying a timeout against a dead or stalled
server.

With an ACL user the connection AUTHs once when it opens; with TLS the socket
is wrapped once, so the per-call path (one MGET, per-call timeouts) is the
same for plain and TLS sockets.

>>> encode_mget([b"ll:f:card:c1", b"ll:f:merchant:m1"])
b'*3\\r\\n$4\\r\\nMGET\\r\\n$12\\r\\nll:f:card:c1\\r\\n$16\\r\\nll:f:merchant:m1\\r\\n'
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import hiredis

from loopline.config.redis import credentials, tls_context
from loopline.contracts.errors import FeatureError
from loopline.contracts.settings import RedisSettings


class StoreUnavailableError(FeatureError):
    """The online store did not answer in time (down, slow or broken)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        # Short label for metrics: "down", "timeout", "error", "backoff".
        self.reason = reason


class PartialStoreError(StoreUnavailableError):
    """Some shards of a Redis Cluster answered, others did not.

    ``values`` holds every key's value (``None`` at the ``failed`` positions):
    the answered keys are used, the failed ones fall back as for a dead store.
    """

    def __init__(
        self, message: str, reason: str, values: list[bytes | None], failed: frozenset[int]
    ) -> None:
        super().__init__(message, reason)
        self.values = values
        self.failed = failed


class FeatureStore(Protocol):
    """What the inference core needs from the online store."""

    def mget(self, keys: Sequence[bytes], timeout_s: float) -> list[bytes | None]:
        """Values of ``keys`` in order (``None`` when absent) within ``timeout_s``."""
        ...


def encode_command(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    parts += [b"$%d\r\n%s\r\n" % (len(a), a) for a in args]
    return b"".join(parts)


def encode_mget(keys: Sequence[bytes]) -> bytes:
    return encode_command(b"MGET", *keys)


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
        auth: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        retry_after_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        # The AUTH command, encoded once; never part of a message or repr.
        self._auth: bytes | None = None
        if auth is not None:
            username, password = auth
            args = (username.encode(), password.encode()) if username else (password.encode(),)
            self._auth = encode_command(b"AUTH", *args)
        self._tls = tls
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._local = threading.local()
        # Until this clock time the store is not tried (set after a failure).
        self._skip_until = 0.0
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, conf: RedisSettings, **options: Any) -> RedisFeatureStore:
        """A store for ``redis.*``: its address, ACL user and TLS."""
        return cls(
            conf.host, conf.port, conf.db, auth=credentials(conf), tls=tls_context(conf), **options
        )

    def mget(self, keys: Sequence[bytes], timeout_s: float) -> list[bytes | None]:
        now = self._clock()
        if now < self._skip_until:
            raise self._backoff(now)
        if timeout_s <= 0:
            raise StoreUnavailableError("no time left in the request deadline", "timeout")
        deadline = now + timeout_s
        conn: _Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._connect(deadline)
                # Connecting (TLS handshake, AUTH) used part of this call's time.
                conn.timeout = self._left(deadline)
                conn.sock.settimeout(conn.timeout)
            elif conn.timeout != timeout_s:
                conn.sock.settimeout(timeout_s)
                conn.timeout = timeout_s
            conn.sock.sendall(encode_mget(keys))
            reply = self._read_reply(conn, deadline)
        except (StoreUnavailableError, OSError, hiredis.ProtocolError) as e:
            raise self._error(e, conn, timeout_s) from e
        if isinstance(reply, hiredis.ReplyError) or not isinstance(reply, list):
            # The connection is still in sync (one reply per command); keep it.
            hint = ""
            if str(reply).startswith(("MOVED", "ASK", "CROSSSLOT")):
                hint = "; the server is a Redis Cluster node: set redis.cluster: true"
            raise StoreUnavailableError(f"redis MGET failed: {reply!r}{hint}", "error")
        return reply

    # -- one node of a cluster: send to every shard first, then read each ---------
    def send(self, payload: bytes, deadline: float) -> _Connection:
        """Send ``payload`` (encoded commands) on this thread's connection."""
        now = self._clock()
        if now < self._skip_until:
            raise self._backoff(now)
        conn: _Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._connect(deadline)
            left = self._left(deadline)
            conn.sock.settimeout(left)
            conn.timeout = left
            conn.sock.sendall(payload)
        except (StoreUnavailableError, OSError, hiredis.ProtocolError) as e:
            raise self._error(e, conn, deadline - now) from e
        return conn

    def receive(self, conn: _Connection, n: int, deadline: float) -> list[object]:
        """The ``n`` replies to what :meth:`send` sent (error replies included)."""
        replies: list[object] = []
        try:
            while len(replies) < n:
                reply = conn.reader.gets()
                if reply is False:
                    reply = self._read_reply(conn, deadline)
                replies.append(reply)
        except (OSError, hiredis.ProtocolError) as e:
            raise self._error(e, conn, deadline - self._clock()) from e
        return replies

    def _backoff(self, now: float) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"redis {self.host}:{self.port} failed recently; retrying in "
            f"{(self._skip_until - now) * 1000:.0f} ms",
            "backoff",
        )

    def _error(
        self, e: BaseException, conn: _Connection | None, timeout_s: float
    ) -> StoreUnavailableError:
        """``e`` as the store's error; the connection is dropped and the store backs off."""
        # Refused at connect (AUTH, SELECT) backs off as any other failure.
        self._fail(conn)
        if isinstance(e, StoreUnavailableError):
            return e
        if isinstance(e, TimeoutError):
            return StoreUnavailableError(
                f"redis {self.host}:{self.port} did not answer within "
                f"{max(timeout_s, 0.0) * 1000:.1f} ms",
                "timeout",
            )
        return StoreUnavailableError(f"redis {self.host}:{self.port}: {e}", "down")

    def close(self) -> None:
        with self._lock:
            conns, self._connections = self._connections, set()
        for conn in conns:
            conn.sock.close()

    def _connect(self, deadline: float) -> _Connection:
        """A new connection, TLS-wrapped and authenticated, all before ``deadline``."""
        sock = socket.create_connection((self.host, self.port), timeout=self._left(deadline))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock.settimeout(self._left(deadline))  # bounds the TLS handshake
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            conn = _Connection(sock)
            if self._auth is not None:
                self._handshake(conn, self._auth, "AUTH", deadline)
            if self.db:
                select = encode_command(b"SELECT", b"%d" % self.db)
                self._handshake(conn, select, "SELECT", deadline)
        except BaseException:
            sock.close()
            raise
        self._local.conn = conn
        with self._lock:
            self._connections.add(conn)
        return conn

    def _left(self, deadline: float) -> float:
        left = deadline - self._clock()
        if left <= 0:
            raise TimeoutError("deadline passed while connecting")
        return left

    def _handshake(self, conn: _Connection, command: bytes, name: str, deadline: float) -> None:
        conn.timeout = self._left(deadline)
        conn.sock.settimeout(conn.timeout)
        conn.sock.sendall(command)
        reply = self._read_reply(conn, deadline)
        if isinstance(reply, hiredis.ReplyError):
            # Redis's reply never repeats the password (e.g. "WRONGPASS invalid
            # username-password pair"), and neither does this message.
            raise StoreUnavailableError(
                f"redis {self.host}:{self.port}: {name} on connect failed: {reply}; "
                "check redis.username, redis.password_file and redis.db",
                "error",
            )

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
