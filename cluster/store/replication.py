"""Release changes acknowledged by Redis replicas: `WAIT` on the connection that ran the script.

Redis replicates asynchronously: a primary that dies right after an activation may take it along, and
the replica promoted in its place never saw it. So a script that changes a release record is followed,
on the same connection, by `WAIT <replicas> <timeout_ms>`; fewer acknowledgements than asked make the
change answer 503 `redis_unreplicated` instead of 200 (the record was written on the primary and may or
may not survive a failover: read it back before retrying).

`FLOWFLEET_REDIS_MIN_REPLICAS` says how many replicas must acknowledge: `auto` (the default) is 1 behind
Sentinel or Cluster and 0 on a single-node URL, where a `WAIT 1` would block for its whole timeout when the
server has no replica; 0 accepts unreplicated changes (no WAIT at all).

>>> ReplicaWait.from_settings(Settings(redis_url="redis+cluster://h1:7000/")).replicas
1
>>> ReplicaWait.from_settings(Settings(redis_url="redis://h1:6379/0")).replicas
0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from cluster.errors import Unavailable
from cluster.settings import Settings, SettingsError
from cluster.store.topology import parse

RedisClient = aioredis.Redis | aioredis.RedisCluster


class RedisUnreplicated(Unavailable):
    """Fewer Redis replicas than required acknowledged a release change within the WAIT timeout."""

    def __init__(self, wanted: int, acknowledged: int, timeout_ms: int, **details: Any) -> None:
        super().__init__(
            "redis_unreplicated",
            f"the change was written on the Redis primary but {acknowledged} of the {wanted} replica(s) "
            f"required (FLOWFLEET_REDIS_MIN_REPLICAS) acknowledged it within {timeout_ms} ms; it may be "
            "lost if the primary fails now: read the release back before retrying",
            wanted=wanted,
            acknowledged=acknowledged,
            **details,
        )


@dataclass(frozen=True)
class ReplicaWait:
    """How many replicas must acknowledge a release change, and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaWait:
        raw = settings.redis_min_replicas.strip().lower()
        if raw == "auto":
            replicas = 1 if parse(settings.redis_url).has_failover else 0
        elif raw.isdigit():
            replicas = int(raw)
        else:
            raise SettingsError(f"FLOWFLEET_REDIS_MIN_REPLICAS={raw!r}: give a number of replicas or 'auto'")
        if replicas and settings.redis_wait_ms < 1:
            raise SettingsError("FLOWFLEET_REDIS_WAIT_MS must be at least 1 when replicas must acknowledge")
        return cls(replicas, settings.redis_wait_ms)

    def check(self, acknowledged: int, **details: Any) -> None:
        """Raise RedisUnreplicated when fewer than `replicas` acknowledged."""
        if acknowledged < self.replicas:
            raise RedisUnreplicated(self.replicas, acknowledged, self.timeout_ms, **details)


NO_WAIT = ReplicaWait()


async def run_script(
    client: RedisClient, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], wait: ReplicaWait
) -> tuple[Any, int]:
    """The script's reply, and how many replicas acknowledged it (0 without a wait). WAIT counts the
    writes of its own connection, so the two commands travel in one pipeline: one connection, in order."""
    if wait.replicas <= 0:
        return await script(keys=list(keys), args=list(args)), 0
    if isinstance(client, aioredis.RedisCluster):
        return await _cluster(client, script, keys, args, wait)
    async with client.pipeline(transaction=False) as pipe:
        await script(keys=list(keys), args=list(args), client=pipe)  # queued; the pipeline loads it
        pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
        reply, acknowledged = await pipe.execute()
    return reply, int(acknowledged)


async def _cluster(
    client: aioredis.RedisCluster,
    script: AsyncScript,
    keys: Sequence[Any],
    args: Sequence[Any],
    wait: ReplicaWait,
) -> tuple[Any, int]:
    await client.initialize()  # the slot map, once (a no-op afterwards)
    for attempt in (1, 2):
        node = client.get_node_from_key(keys[0])
        async with client.pipeline(transaction=False) as pipe:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms, target_nodes=node)
            reply, acknowledged = await pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError) and attempt == 1:
            # A promoted replica, or a node that never ran it: scripts are not replicated as such.
            await client.script_load(script.script)
            continue
        if isinstance(reply, Exception):
            raise reply
        # A WAIT that failed (the node was demoted meanwhile) acknowledged nothing.
        return reply, acknowledged if isinstance(acknowledged, int) else 0
    raise AssertionError("unreachable")
