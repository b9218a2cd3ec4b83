"""Reading the audit streams: entries as plain dicts, several streams merged newest first.

Entries are written by the store's Lua scripts (publish, activate, rollback, repair, gc) into each flow's
capped stream, and by gc into the namespace-wide one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

# Audit fields that hold numbers; everything else stays text.
_INT_FIELDS = frozenset({"generation", "count", "bytes"})
_FLOAT_FIELDS = frozenset({"at"})


async def read_audit(
    redis: aioredis.Redis | aioredis.RedisCluster, streams: Sequence[str], limit: int
) -> list[dict[str, Any]]:
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
        # Redis fields cannot hold null; "" stands for "none" in hash references.
        is_reference = name.endswith("hash") or name == "parent"
        entry[name] = None if is_reference and value == "" else value
    return entry


def _order(entry: dict[str, Any]) -> tuple[int, float, int]:
    ms, _, seq = str(entry["id"]).partition("-")
    at = entry.get("at")
    return int(ms), at if isinstance(at, float) else 0.0, int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
