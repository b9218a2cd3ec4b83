"""Replica heartbeats: each replica's status in Redis, and the list of replicas.

A replica's status is a JSON STRING with a TTL (the replica counts as live while it exists) plus a member
of the replicas ZSET scored by its last heartbeat, so the fleet can be listed without SCAN. A replica
that stops cleanly deregisters: both go at once. One that dies leaves its member behind when its status
expires; readers list it as gone, with the time of its last heartbeat, for `GONE_KEPT_S`, then prune it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from cluster.names import REPLICA_ID, InvalidName
from cluster.store.keys import Keys

log = logging.getLogger(__name__)

# How long a replica that died (status expired, never deregistered) stays listed as gone.
GONE_KEPT_S = 300.0

RedisClient = aioredis.Redis | aioredis.RedisCluster


@dataclass(frozen=True)
class Roster:
    """Every listed replica: `statuses` of those whose status key exists (sorted by id), and `gone`,
    those whose status expired, mapped to their last heartbeat (unix seconds, their ZSET score)."""

    statuses: list[dict[str, Any]] = field(default_factory=list)
    gone: dict[str, float] = field(default_factory=dict)


async def write_status(
    redis: RedisClient,
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


async def deregister(redis: RedisClient, keys: Keys, replica_id: str) -> None:
    """A replica that stops: it leaves the list and its status goes now, not when its TTL runs out."""
    # The member first: a reader in between sees an unlisted status (ignored), never a "gone" replica.
    # PEXPIRE 0 deletes the key at once, within the worker's ACL grant (PEXPIRE, never DEL).
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.replicas(), replica_id)
        pipe.pexpire(keys.replica(replica_id), 0)
        await pipe.execute()


async def read_roster(redis: RedisClient, keys: Keys, *, now: float | None = None) -> Roster:
    """The listed replicas, with the status of each one still live. Members whose status expired more
    than `GONE_KEPT_S` after their last heartbeat (by `now`, default the local clock) are pruned."""
    now = time.time() if now is None else now
    scored: Any = await redis.zrange(keys.replicas(), 0, -1, withscores=True)
    members = sorted((_text(m), float(score)) for m, score in scored)
    if not members:
        return Roster()
    # One GET per replica rather than MGET: the keys are in different Cluster slots.
    async with redis.pipeline(transaction=False) as pipe:
        for replica_id, _ in members:
            pipe.get(keys.replica(replica_id))
        replies = await pipe.execute()
    roster = Roster()
    pruned: list[str] = []
    for (replica_id, last), raw in zip(members, replies, strict=True):
        if raw is None:
            if now - last > GONE_KEPT_S:
                pruned.append(replica_id)
            else:
                roster.gone[replica_id] = last
            continue
        try:
            status = orjson.loads(raw)
        except orjson.JSONDecodeError:
            status = None
        if not isinstance(status, dict):
            log.warning("ignoring unreadable status of replica %s: %.200r", replica_id, raw)
            continue
        status["replica_id"] = replica_id
        roster.statuses.append(status)
    if pruned:
        await redis.zrem(keys.replicas(), *pruned)
        log.info("forgot replicas gone for more than %.0fs: %s", GONE_KEPT_S, ", ".join(pruned))
    return roster


async def read_statuses(redis: RedisClient, keys: Keys) -> list[dict[str, Any]]:
    """The status of every live replica (its status key exists), sorted by id."""
    return (await read_roster(redis, keys)).statuses


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
