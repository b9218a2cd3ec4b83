"""`flowfleet up --redis-url URL`: the local fleet on a Redis that already runs — one node, a Sentinel-managed
primary or a Redis Cluster (cluster.store.topology) — instead of a redis-server of its own.

`up` then starts no Redis and renders no ACL file: the control plane and every replica log in as the user
the URL names (give that user the `control` rights of compose/redis/users.acl). The URL is kept in the
state directory (mode 0600, like the passwords `up` makes) so `flowfleet redis-cli` opens the same Redis.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redis.exceptions import RedisClusterException, RedisError, ResponseError

from cluster.errors import FlowfleetError
from cluster.settings import Settings
from cluster.store.redis_conn import from_settings
from cluster.store.topology import describe, parse
from control.localcluster.bootstrap import StartupFailed

URL_FILE = "redis-url"


def probe(url: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """(what the URL names, its server version) once it answers PING; StartupFailed otherwise."""
    try:
        settings = Settings.from_env(environ, redis_url=url)
        where = describe(parse(url))
    except FlowfleetError as e:
        raise StartupFailed(f"--redis-url: {e}") from e
    try:
        version = asyncio.run(_version(settings))
    except (RedisError, RedisClusterException, OSError, TimeoutError) as e:
        raise StartupFailed(f"--redis-url: cannot reach {where}: {type(e).__name__}: {e}") from e
    return where, version


async def _version(settings: Settings) -> str:
    # The request-path timeouts: a dead or frozen Redis is reported within ~2 s (FLOWFLEET_REDIS_TIMEOUT_S).
    client = from_settings(settings, client_name="flowfleet-up")
    try:
        await client.ping()
        try:
            info: Any = await client.info("server")
        except ResponseError:  # INFO is @dangerous: the control user of users.acl may not run it
            info = {}
    finally:
        await client.aclose()
    # A Cluster answers from one node: {"redis_version": ...}; be lenient about other shapes.
    found = info.get("redis_version") if isinstance(info, dict) else None
    return str(found) if found else "version unknown"


def remember(state_dir: Path, url: str | None) -> None:
    """Keep `url` for `flowfleet redis-cli` (mode 0600), or forget an earlier one (`up` on its own Redis)."""
    path = state_dir / URL_FILE
    path.unlink(missing_ok=True)
    if url is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(url + "\n")


def remembered(state_dir: Path) -> str | None:
    """The URL a `flowfleet up --redis-url` on `state_dir` runs against, if it does."""
    try:
        return (state_dir / URL_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
