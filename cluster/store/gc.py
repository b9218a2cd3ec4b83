"""Garbage collection: delete versions nothing may still need.

A version stays while the release record or a history entry references it (current, previous, canary),
while the flow's two-phase rollout in flight names it, while a live session pin names it, and while it is
younger than `min_age_s` (a publish whose activation is on its way). Candidates (old enough) are read per
flow, session pins once for the namespace, then a Lua script re-checks the references and deletes
atomically (see scripts/gc.lua), so a concurrent activation or rollout can never lose the blob it is about
to announce. A dry run reports what would go and deletes nothing.

A pin written after the scan names a version the release record named when it was written, so the
script's own reference check covers it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from cluster.store.keys import Keys
from cluster.store.release import GcResult

log = logging.getLogger(__name__)

# Candidates per script call: bounds the time one script blocks Redis.
BATCH = 200
# Session pins read per round trip.
PIN_BATCH = 500

RedisClient = aioredis.Redis | aioredis.RedisCluster


async def collect(
    redis: RedisClient,
    keys: Keys,
    script: AsyncScript,
    flows: Sequence[str],
    *,
    by: str,
    now: float,
    min_age_s: float,
    audit_keep: int,
    dry_run: bool = False,
) -> GcResult:
    removed: dict[str, tuple[str, ...]] = {}
    kept = freed = 0
    pins = await pinned_versions(redis, keys)
    for flow in flows:
        versions = keys.versions(flow)
        total = int(await redis.zcard(versions))
        candidates = [_text(d) for d in await redis.zrangebyscore(versions, "-inf", now - min_age_s)]
        keep = sorted(pins.get(flow, ()))
        gone: list[str] = []
        for start in range(0, len(candidates), BATCH):
            batch = candidates[start : start + BATCH]
            args: list[str | int] = [by, repr(now), audit_keep, flow, "1" if dry_run else "0", len(keep)]
            reply = await script(keys=_script_keys(keys, flow, batch), args=[*args, *keep, *batch])
            freed += int(reply[0])
            gone.extend(_text(d) for d in reply[1:])
        kept += max(0, total - len(gone))
        if gone:
            removed[flow] = tuple(gone)
            log.info("gc%s flow=%s removed=%d by=%s", " dry run" if dry_run else "", flow, len(gone), by)
    result = GcResult(removed=removed, kept=kept, bytes_freed=freed)
    if not dry_run:
        await redis.xadd(
            keys.audit(),
            {"action": "gc", "by": by, "at": repr(now), "count": result.removed_count, "bytes": freed},
            maxlen=audit_keep,
            approximate=True,
        )
    return result


async def pinned_versions(redis: RedisClient, keys: Keys) -> dict[str, set[str]]:
    """Flow -> the versions its live session pins name (`{"hash": ...}` JSON under each pin key)."""
    prefix = f"{keys.namespace}:{{"
    names = [_text(k) async for k in redis.scan_iter(match=keys.session_pattern(), count=PIN_BATCH)]
    pinned: dict[str, set[str]] = defaultdict(set)
    for start in range(0, len(names), PIN_BATCH):
        batch = names[start : start + PIN_BATCH]
        # One GET each: pins of different flows live in different Cluster slots.
        async with redis.pipeline(transaction=False) as pipe:
            for name in batch:
                pipe.get(name)
            values = await pipe.execute()
        for name, raw in zip(batch, values, strict=True):
            digest = _pin_hash(raw)
            if digest is not None and name.startswith(prefix) and "}:session:" in name:
                pinned[name[len(prefix) : name.index("}:session:")]].add(digest)
    return pinned


def _pin_hash(raw: Any) -> str | None:
    if raw is None:
        return None  # expired between the scan and the read
    try:
        pin = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    digest = pin.get("hash") if isinstance(pin, dict) else None
    return digest if isinstance(digest, str) else None


def _script_keys(keys: Keys, flow: str, digests: Sequence[str]) -> list[str]:
    names = [keys.versions(flow), keys.release(flow), keys.history(flow), keys.flow_audit(flow)]
    names.append(keys.rollout(flow))
    for digest in digests:
        names += [keys.blob(flow, digest), keys.meta(flow, digest)]
    return names


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
