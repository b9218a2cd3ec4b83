"""Redis connections from a URL (redis://, rediss:// with TLS, unix://) with timeouts that fail fast.

>>> client = connect("rediss://cache.internal:6380/0")  # TLS; no I/O happens until the first command
>>> connect("http://cache.internal")
Traceback (most recent call last):
...
cluster.store.redis_conn.InvalidRedisUrl: unsupported Redis URL scheme 'http' in 'http://cache.internal': ...
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.settings import SettingsError

SCHEMES = ("redis", "rediss", "unix")


class InvalidRedisUrl(SettingsError):
    code = "invalid_redis_url"


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def connect(
    url: str,
    *,
    connect_timeout: float = 5.0,
    socket_timeout: float | None = 10.0,
    health_check_interval: int = 15,
    client_name: str | None = None,
) -> aioredis.Redis:
    """A client for `url` (no I/O until first use). Replies are bytes: blobs must stay exact.

    `socket_timeout` bounds every command; a pub/sub connection that waits for messages on its own
    schedule should pass None and use its own watchdog instead.
    """
    safe = redact(url)
    try:
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme in ("redis", "rediss"):
            parts.port  # noqa: B018 -- raises ValueError for a non-numeric port
    except ValueError as e:
        raise InvalidRedisUrl(f"invalid Redis URL {safe!r}: {e}") from e
    if scheme not in SCHEMES:
        raise InvalidRedisUrl(
            f"unsupported Redis URL scheme {scheme!r} in {safe!r}: use redis://, rediss:// (TLS) or unix://"
        )
    if scheme == "unix" and not parts.path:
        raise InvalidRedisUrl(f"Redis URL {safe!r} names no socket path (unix:///path/to/redis.sock)")
    if scheme != "unix" and not parts.hostname:
        raise InvalidRedisUrl(f"Redis URL {safe!r} names no host (redis://host:6379/0)")
    if scheme != "unix" and not _valid_db_path(parts.path):
        raise InvalidRedisUrl(f"Redis URL {safe!r}: the path must be a database number, as in /0")
    try:
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            health_check_interval=health_check_interval,
            client_name=client_name,
        )
    except ValueError as e:
        # redis-py rejects e.g. a non-numeric database number or a bad value for a known option.
        raise InvalidRedisUrl(f"invalid Redis URL {safe!r}: {e}") from e
    pool = client.connection_pool
    try:
        # Connections are built lazily; build one now (no I/O) so an unknown query option fails here,
        # at start-up, rather than as a TypeError on the first command.
        pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError, RedisError) as e:
        raise InvalidRedisUrl(f"invalid Redis URL {safe!r}: {e}") from e
    return client


def _valid_db_path(path: str) -> bool:
    db = path.strip("/")
    return db == "" or db.isdigit()
