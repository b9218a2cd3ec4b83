"""Replica heartbeats and audit streams: the read-mostly side of the store, kept out of store.py.

A replica's status is a JSON STRING with a TTL (it disappears when the replica stops heartbeating) plus a
member of the replicas ZSET scored by its last heartbeat, so the fleet can be listed without SCAN.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from cluster.keys import REPLICA_ID, InvalidName, Keys

log = logging.getLogger(__name__)

# Audit fields that hold numbers; everything else stays text.
_INT_FIELDS = frozenset({"generation", "count", "bytes"})
_FLOAT_FIELDS = frozenset({"at"})


async def write_status(
    redis: aioredis.Redis, keys: Keys, replica_id: str, status: dict[str, Any], ttl_s: float, now: float
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


async def read_statuses(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
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


async def read_audit(redis: aioredis.Redis, streams: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """The newest `limit` entries across `streams`, newest first, each with its stream `id`."""
    if limit < 1 or not streams:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xrevrange(stream, count=limit)
        replies = await pipe.execute()
    entries = [_entry(entry_id, fields) for reply in replies for entry_id, fields in reply]
    # Stream ids are "<server unix ms>-<seq>" and seq counts per stream, so entries of different streams
    # within one millisecond are ordered by the writer's higher-resolution `at`.
    entries.sort(key=_order, reverse=True)
    return entries[:limit]


def _entry(entry_id: bytes | str, fields: dict[Any, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": _text(entry_id)}
    for raw_name, raw_value in fields.items():
        name, value = _text(raw_name), _text(raw_value)
        try:
            if name in _INT_FIELDS:
                entry[name] = int(value)
                continue
            if name in _FLOAT_FIELDS:
                entry[name] = float(value)
                continue
        except ValueError:
            pass
        entry[name] = value
    return entry


def _order(entry: dict[str, Any]) -> tuple[int, float, int]:
    ms, _, seq = str(entry["id"]).partition("-")
    at = entry.get("at")
    return int(ms), at if isinstance(at, float) else 0.0, int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
