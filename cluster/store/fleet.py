"""Replica heartbeats: each replica's status in Redis, and the list of live replicas.

A replica's status is a JSON STRING with a TTL (it disappears when the replica stops heartbeating) plus a
member of the replicas ZSET scored by its last heartbeat, so the fleet can be listed without SCAN.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis

from cluster.names import REPLICA_ID, InvalidName
from cluster.store.keys import Keys

log = logging.getLogger(__name__)


async def write_status(
    redis: aioredis.Redis | aioredis.RedisCluster,
    keys: Keys,
    replica_id: str,
    status: dict[str, Any],
    ttl_s: float,
    now: float,
) -> None:
    if not REPLICA_ID.match(replica_id):
        raise InvalidName(f"invalid replica id {replica_id!r}", replica_id=replica_id)
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    body = orjson.dumps({**status, "replica_id": replica_id, "reported_at": now}, default=str)
    # Not a transaction: the two keys live in different Cluster slots. The next heartbeat repairs a
    # half-written pair either way.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.replica(replica_id), body, px=max(1, int(ttl_s * 1000)))
        pipe.zadd(keys.replicas(), {replica_id: now})
        await pipe.execute()


async def read_statuses(redis: aioredis.Redis | aioredis.RedisCluster, keys: Keys) -> list[dict[str, Any]]:
    members = sorted(_text(m) for m in await redis.zrange(keys.replicas(), 0, -1))
    if not members:
        return []
    # One GET per replica rather than MGET: the keys are in different Cluster slots.
    async with redis.pipeline(transaction=False) as pipe:
        for replica_id in members:
            pipe.get(keys.replica(replica_id))
        replies = await pipe.execute()
    live: list[dict[str, Any]] = []
    expired: list[str] = []
    for replica_id, raw in zip(members, replies, strict=True):
        if raw is None:
            expired.append(replica_id)
            continue
        try:
            status = orjson.loads(raw)
        except orjson.JSONDecodeError:
            status = None
        if not isinstance(status, dict):
            log.warning("ignoring unreadable status of replica %s: %.200r", replica_id, raw)
            continue
        status["replica_id"] = replica_id
        live.append(status)
    if expired:
        await redis.zrem(keys.replicas(), *expired)
        log.info("forgot replicas whose status expired: %s", ", ".join(expired))
    return live


def serves_release(
    entry: Mapping[str, Any], digest: str | None, generation: int | None, stamp: float | None = None
) -> bool:
    """Pure: does one flow entry of a replica status (`flows.<flow>`) run the release `generation`
    of version `digest` (and, when given and reported, stamped `stamp`, the record's activated_at)?

    The generation alone is not enough: a store restored from a backup hands out a generation again,
    for another version, and a replica still running the old one at that number is not current.

    >>> serves_release({"hash": "h3", "generation": 2}, "h2", 2)
    False
    """
    if digest is None or generation is None:
        return False
    served = entry.get("generation")
    if entry.get("hash") != digest or isinstance(served, bool) or served != generation:
        return False
    reported = entry.get("activated_at")
    return stamp is None or not isinstance(reported, int | float) or float(reported) == stamp


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
