"""Garbage collection: delete versions that no release record or history entry references.

Candidates are read per flow, then a Lua script re-checks the references and deletes atomically (see
scripts/gc.lua), so a concurrent activation can never lose the blob it is about to announce.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from cluster.store.keys import Keys
from cluster.store.release import GcResult

log = logging.getLogger(__name__)

# Candidates per script call: bounds the time one script blocks Redis.
BATCH = 200


async def collect(
    redis: aioredis.Redis | aioredis.RedisCluster,
    keys: Keys,
    script: AsyncScript,
    flows: Sequence[str],
    *,
    by: str,
    now: float,
    min_age_s: float,
    audit_keep: int,
) -> GcResult:
    removed: dict[str, tuple[str, ...]] = {}
    kept = freed = 0
    for flow in flows:
        versions = keys.versions(flow)
        total = int(await redis.zcard(versions))
        candidates = [_text(d) for d in await redis.zrangebyscore(versions, "-inf", now - min_age_s)]
        gone: list[str] = []
        for start in range(0, len(candidates), BATCH):
            batch = candidates[start : start + BATCH]
            args: list[str | int] = [by, repr(now), audit_keep, flow, *batch]
            reply = await script(keys=_script_keys(keys, flow, batch), args=args)
            freed += int(reply[0])
            gone.extend(_text(d) for d in reply[1:])
        kept += max(0, total - len(gone))
        if gone:
            removed[flow] = tuple(gone)
            log.info("gc flow=%s removed=%d by=%s", flow, len(gone), by)
    result = GcResult(removed=removed, kept=kept, bytes_freed=freed)
    await redis.xadd(
        keys.audit(),
        {"action": "gc", "by": by, "at": repr(now), "count": result.removed_count, "bytes": freed},
        maxlen=audit_keep,
        approximate=True,
    )
    return result


def _script_keys(keys: Keys, flow: str, digests: Sequence[str]) -> list[str]:
    names = [keys.versions(flow), keys.release(flow), keys.history(flow), keys.flow_audit(flow)]
    for digest in digests:
        names += [keys.blob(flow, digest), keys.meta(flow, digest)]
    return names


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
