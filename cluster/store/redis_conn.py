"""The one factory of Redis clients: a single node, a Sentinel-managed primary or a Redis Cluster, by URL.

Every flowfleet process gets its clients here, with redis-py's own failover machinery: `Sentinel.
master_for` (asks the sentinels for the primary on every new connection, drops connections to a demoted
one) and `RedisCluster` (slot map, MOVED / ASK, refresh after a failover; cluster.store.cluster_client
reports an unreachable cluster as a ConnectionError). See cluster.store.topology for the URL forms.

>>> client = connect("rediss://cache.internal:6380/0")  # TLS; no I/O happens until the first command
>>> connect("http://cache.internal")
Traceback (most recent call last):
...
cluster.store.topology.InvalidRedisUrl: unsupported Redis URL scheme 'http' in 'http://cache.internal': ...
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from cluster.settings import Settings, SettingsError
from cluster.store.cluster_client import Cluster
from cluster.store.topology import SINGLE_SCHEMES, InvalidRedisUrl, Target, parse, redact

__all__ = [
    "InvalidRedisUrl", "RedisClient", "connect", "from_settings", "open_pubsub", "redact", "request_timeout",
]  # fmt: skip

RedisClient = aioredis.Redis | aioredis.RedisCluster
# A request-path connect must fail before the ~2 s the API promises (docs/operations.md, "Redis away").
REQUEST_CONNECT_TIMEOUT_S = 0.5
# Sentinels answer one small command each: a dead or frozen one must not hold a connect for long.
SENTINEL_TIMEOUT_S = 0.5


def connect(
    url: str,
    *,
    connect_timeout: float = 5.0,
    socket_timeout: float | None = 10.0,
    health_check_interval: int = 15,
    client_name: str | None = None,
    retries: int | None = None,
    sentinel_username: str | None = None,
    sentinel_password: str | None = None,
) -> RedisClient:
    """A client for `url` (no I/O until first use). Replies are bytes: blobs must stay exact.

    `socket_timeout` bounds every command; a pub/sub connection that waits for messages on its own
    schedule should pass None and use its own watchdog instead. `retries` immediate retries of a
    command that lost its connection (a Redis restart, a failover); a command that timed out is never
    retried, so a frozen Redis costs one timeout, not several. None keeps redis-py's default policy.
    """
    target = parse(url)
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "health_check_interval": health_check_interval,
        "client_name": client_name,
    }
    if retries is not None:
        kwargs["retry"] = Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,))
    if target.kind == "single":
        return _single(target, kwargs)
    kwargs.update(_tls(target), username=target.username, password=target.password)
    if target.kind == "sentinel":
        return _sentinel(target, kwargs, sentinel_username, sentinel_password)
    if retries is not None:
        # No retry: redis-py's cluster client would retry a timeout too (a frozen node: twice the wait),
        # and without one it still refreshes its slot map after the error, so the next command finds the
        # promoted replica (measured: commands succeed again at the promotion).
        kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs.pop("health_check_interval")  # per-node pools health-check on their own schedule
    nodes = [ClusterNode(host, port) for host, port in target.nodes]
    try:
        return Cluster(startup_nodes=nodes, **kwargs)
    except (TypeError, ValueError, RedisError) as e:
        raise InvalidRedisUrl(f"invalid Redis URL {redact(url)!r}: {e}") from e


def from_settings(
    settings: Settings,
    *,
    client_name: str,
    socket_timeout: float | None = None,
    connect_timeout: float = REQUEST_CONNECT_TIMEOUT_S,
    retries: int = 1,
    health_check_interval: int = 15,
) -> RedisClient:
    """The client of a flowfleet process, from its settings (`FLOWFLEET_REDIS_*`): request-path timeouts
    unless told otherwise (`request_timeout`)."""
    return connect(
        settings.redis_url,
        connect_timeout=connect_timeout,
        socket_timeout=request_timeout(settings) if socket_timeout is None else socket_timeout,
        health_check_interval=health_check_interval,
        client_name=client_name,
        retries=retries,
        sentinel_username=settings.redis_sentinel_username,
        sentinel_password=settings.redis_sentinel_password,
    )


def request_timeout(settings: Settings) -> float:
    """The command timeout on the request path: FLOWFLEET_REDIS_TIMEOUT_S, and long enough for the
    activation's WAIT (FLOWFLEET_REDIS_WAIT_MS) to answer on its own."""
    if settings.redis_timeout_s <= 0:
        raise SettingsError("FLOWFLEET_REDIS_TIMEOUT_S must be above 0 (seconds)")
    return max(settings.redis_timeout_s, settings.redis_wait_ms / 1000 + 0.25)


async def open_pubsub(client: RedisClient, session: int = 0) -> Any:
    """A pub/sub object for the change-event channel (redis-py's PubSub is untyped, hence Any).

    One node or Sentinel: the client's own, on the current primary. Cluster: PUBLISH reaches every node,
    primaries and replicas alike, so any live node will do; session number `session` subscribes at the
    `session`-th node of a freshly read node list, so after losing a node the next session goes to
    another one instead of waiting for the failover.
    """
    if not isinstance(client, aioredis.RedisCluster):
        return client.pubsub()
    await client.initialize()
    if session:
        await client.nodes_manager.initialize()
    nodes = sorted(client.get_nodes(), key=lambda node: node.name)
    return client.pubsub(node=nodes[session % len(nodes)])


async def read_pubsub_reply(pubsub: Any, timeout: float) -> Any:
    """The next reply on a subscribed connection (a message, a subscribe confirmation, a PONG) as the
    server sent it, e.g. `[b"message", channel, data]`; None when nothing came within `timeout` seconds.

    Read straight off the connection: `PubSub.get_message` wraps every read in a health check, a retry
    layer and a dict, which costs a replica more than the change event it delivers. Errors are raised as
    they come; the subscriber ends the session and closes the connection on any of them.
    """
    conn = pubsub.connection
    if conn is None:
        raise ConnectionError("the pub/sub connection is not open")
    return await conn.read_response(timeout=timeout, disconnect_on_error=False, push_request=True)


def _single(target: Target, kwargs: dict[str, Any]) -> aioredis.Redis:
    url, safe = target.url, redact(target.url)
    try:
        parts = urlsplit(url)
        if parts.scheme in ("redis", "rediss"):
            parts.port  # noqa: B018 -- raises ValueError for a non-numeric port
    except ValueError as e:
        raise InvalidRedisUrl(f"invalid Redis URL {safe!r}: {e}") from e
    assert parts.scheme in SINGLE_SCHEMES
    if parts.scheme == "unix" and not parts.path:
        raise InvalidRedisUrl(f"Redis URL {safe!r} names no socket path (unix:///path/to/redis.sock)")
    if parts.scheme != "unix" and not parts.hostname:
        raise InvalidRedisUrl(f"Redis URL {safe!r} names no host (redis://host:6379/0)")
    if parts.scheme != "unix" and not _valid_db_path(parts.path):
        raise InvalidRedisUrl(f"Redis URL {safe!r}: the path must be a database number, as in /0")
    try:
        client = aioredis.Redis.from_url(url, **kwargs)
    except ValueError as e:
        # redis-py rejects e.g. a non-numeric database number or a bad value for a known option.
        raise InvalidRedisUrl(f"invalid Redis URL {safe!r}: {e}") from e
    _check_connection_options(client.connection_pool, safe)
    return client


def _sentinel(
    target: Target, kwargs: dict[str, Any], username: str | None, password: str | None
) -> aioredis.Redis:
    sentinel_kwargs = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "username": username,
        "password": password,
        **_tls(target),
    }
    assert target.service is not None
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_kwargs)
    client: aioredis.Redis = sentinel.master_for(target.service, db=target.db, **kwargs)
    _check_connection_options(client.connection_pool, redact(target.url))
    return client


def _tls(target: Target) -> dict[str, Any]:
    if not target.tls:
        return {}
    options: dict[str, Any] = {"ssl": True, **target.options}
    if "ssl_check_hostname" in options:
        options["ssl_check_hostname"] = options["ssl_check_hostname"].lower() in ("1", "true", "yes")
    return options


def _check_connection_options(pool: Any, safe: str) -> None:
    try:
        # Connections are built lazily; build one now (no I/O) so an unknown query option fails here,
        # at start-up, rather than as a TypeError on the first command.
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
        if "connection_pool" in pool.connection_kwargs:
            kwargs["connection_pool"] = pool
        pool.connection_class(**kwargs)
    except (TypeError, ValueError, RedisError) as e:
        raise InvalidRedisUrl(f"invalid Redis URL {safe!r}: {e}") from e


def _valid_db_path(path: str) -> bool:
    db = path.strip("/")
    return db == "" or db.isdigit()
