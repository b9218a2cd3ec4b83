"""Shared fixtures: a real redis-server per session (restartable ones on demand) and per-test namespaces."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One shared redis-server for the session; tests isolate themselves by namespace, never by FLUSHALL."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def make_redis_server() -> Iterator[Callable[..., RedisServer]]:
    """Factory for a private redis-server that a test may kill, pause or restart."""
    servers: list[RedisServer] = []

    def make(*extra_args: str) -> RedisServer:
        server = RedisServer(*extra_args).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def namespace() -> str:
    return f"fftest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
