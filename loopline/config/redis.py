"""How every Redis client of Loopline connects: address, ACL user, TLS.

The one place connection options come from :class:`RedisSettings`, so an ACL
user or TLS set in ``redis.*`` reaches every client at once: redis-py clients
take :func:`client_options` (or :func:`redis_client`, :func:`cluster_client`
with ``redis.cluster``), serving's own RESP client takes :func:`credentials`
and :func:`tls_context`.

>>> from loopline.contracts.settings import RedisSettings
>>> client_options(RedisSettings())
{'host': '127.0.0.1', 'port': 16379, 'db': 0}
>>> credentials(RedisSettings()) is None, tls_context(RedisSettings()) is None
(True, True)
"""

from __future__ import annotations

import ssl
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import RedisSettings
from loopline.security.secrets import read_secret

# redis.* TLS file settings -> redis-py's keyword arguments.
_TLS_FILE_OPTIONS = {
    "ca_file": "ssl_ca_certs",
    "cert_file": "ssl_certfile",
    "key_file": "ssl_keyfile",
}


def credentials(conf: RedisSettings) -> tuple[str, str] | None:
    """``(username, password)`` to AUTH with; None when no password is configured.

    An empty username authenticates as Redis's ``default`` user.
    """
    if conf.password_file is None:
        return None
    return conf.username, read_secret(conf.password_file, "redis.password_file")


def tls_context(conf: RedisSettings) -> ssl.SSLContext | None:
    """A client TLS context checking the server against ``redis.ca_file``
    (the system CAs when unset), with a client certificate when configured;
    None without ``redis.tls``."""
    if not conf.tls:
        return None
    context = ssl.create_default_context(cafile=str(conf.ca_file) if conf.ca_file else None)
    if conf.cert_file is not None:
        key = str(conf.key_file) if conf.key_file is not None else None
        context.load_cert_chain(str(conf.cert_file), key)
    return context


def client_options(conf: RedisSettings) -> dict[str, Any]:
    """redis-py ``Redis(...)`` keyword arguments for ``conf`` (address, user, TLS)."""
    options: dict[str, Any] = {"host": conf.host, "port": conf.port, "db": conf.db}
    auth = credentials(conf)
    if auth is not None:
        username, options["password"] = auth
        if username:
            options["username"] = username
    if conf.tls:
        options["ssl"] = True
        for setting, option in _TLS_FILE_OPTIONS.items():
            path = getattr(conf, setting)
            if path is not None:
                options[option] = str(path)
    return options


def redis_client(conf: RedisSettings, **overrides: Any) -> redis.Redis:
    """A redis-py client for ``conf``; ``overrides`` set timeouts, retries and the like."""
    return redis.Redis(**{**client_options(conf), **overrides})


def cluster_client(conf: RedisSettings, **overrides: Any) -> RedisCluster:
    """A redis-py cluster client seeded with ``redis.host:port`` and ``redis.cluster_nodes``.

    It reads the slot map now, so a wrong address or a server that is not a
    cluster node fails here, with the settings to change named, not at the
    first write.
    """
    options = {k: v for k, v in client_options(conf).items() if k not in ("host", "port", "db")}
    options.setdefault("socket_connect_timeout", 2.0)
    seeds = [ClusterNode(host, port) for host, port in conf.seeds]
    try:
        return RedisCluster(startup_nodes=seeds, **{**options, **overrides})
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as e:
        where = ", ".join(f"{n.host}:{n.port}" for n in seeds)
        raise ConfigError(
            f"redis.cluster is on but no Redis Cluster answered at {where}: {e}; "
            "check redis.host, redis.port and redis.cluster_nodes (or set redis.cluster: false)"
        ) from e
