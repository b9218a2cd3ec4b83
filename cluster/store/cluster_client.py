"""redis-py's RedisCluster, reporting an unreachable cluster the way every other client reports an
unreachable Redis: as a `redis.exceptions.ConnectionError`.

When no node answers a topology refresh, or the slot map has no node for a key's slot (every node of a
shard down), redis-py raises `RedisClusterUnreachableError` / `SlotNotCoveredError`, which derive from
`RedisClusterException`, not from `RedisError`. Code that survives Redis being away by catching
`RedisError` (a replica's heartbeat, session pins, chat memory, the loader) would let those through and
stop; with this client an outage of a Cluster is the same `ConnectionError` as the outage of a node.
Nothing else changes: routing, redirections, retries and refreshes are redis-py's own.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterUnreachableError, SlotNotCoveredError

UNREACHABLE = (RedisClusterUnreachableError, SlotNotCoveredError)


class Cluster(aioredis.RedisCluster):
    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except UNREACHABLE as e:
            raise RedisConnectionError(f"Redis Cluster unreachable: {e}") from e

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py refuses it with its own error
        # redis-py's stubs declare an attribute its own __init__ sets as abstract; it builds the same way.
        return Pipeline(self, transaction)  # type: ignore[abstract]


class Pipeline(ClusterPipeline):
    async def initialize(self) -> ClusterPipeline:  # `async with` and `await pipeline` start here
        try:
            return await super().initialize()
        except UNREACHABLE as e:
            raise RedisConnectionError(f"Redis Cluster unreachable: {e}") from e

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except UNREACHABLE as e:
            raise RedisConnectionError(f"Redis Cluster unreachable: {e}") from e
