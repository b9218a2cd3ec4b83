"""The rollout record of a flow (its latest two-phase cutover) and rollout audit entries, in Redis.

Written only by the control plane: `<ns>:{<flow>}:rollout` is a HASH replaced as a whole at each step of a
rollout (preparing -> committed / forced / aborted), so `redis-cli HGETALL` shows the last one and why it
ended the way it did. Replicas never read it: they follow events and the release record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis

from cluster.store.keys import Keys

RedisClient = aioredis.Redis | aioredis.RedisCluster
# Fields holding JSON (lists of replicas / failures); the others are text.
JSON_FIELDS = frozenset({"replicas", "failures"})
NUMBER_FIELDS = frozenset({"generation", "started_at", "finished_at", "timeout_s"})


def _encode(value: Any) -> str:
    if isinstance(value, list | dict | tuple):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


async def write_record(redis: RedisClient, keys: Keys, flow: str, record: Mapping[str, Any]) -> None:
    """Replace the flow's rollout record (one MULTI on one key, so no field of an older one lingers)."""
    key = keys.rollout(flow)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping={k: _encode(v) for k, v in record.items()})
        await pipe.execute()


async def read_record(redis: RedisClient, keys: Keys, flow: str) -> dict[str, Any] | None:
    raw = await redis.hgetall(keys.rollout(flow))
    if not raw:
        return None
    record: dict[str, Any] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        text = v.decode() if isinstance(v, bytes) else str(v)
        record[name] = _decode(name, text)
    return record


def _decode(name: str, text: str) -> Any:
    try:
        if name in JSON_FIELDS:
            return orjson.loads(text)
        if name in NUMBER_FIELDS:
            return float(text) if "." in text else int(text)
    except (orjson.JSONDecodeError, ValueError):
        return text
    if text in ("true", "false"):
        return text == "true"
    return text


async def add_audit(
    redis: RedisClient, keys: Keys, flow: str, fields: Mapping[str, Any], *, audit_keep: int
) -> None:
    """Append an entry (e.g. action=rollout_aborted) to the flow's capped audit stream."""
    entry: dict[Any, Any] = {k: _encode(v) for k, v in {"flow": flow, **fields}.items()}
    await redis.xadd(keys.flow_audit(flow), entry, maxlen=audit_keep, approximate=True)
