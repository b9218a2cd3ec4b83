"""The rollout record of a flow (its latest two-phase cutover), the per-flow rollout lock, and rollout
audit entries, in Redis.

Written only by the control plane: `<ns>:{<flow>}:rollout` is a HASH replaced as a whole at each step of a
rollout (preparing -> committing -> committed / forced, or aborted), so `redis-cli HGETALL` shows the last
one and why it ended the way it did. Replicas never read it: they follow events and the release record.

The record is also the flow's rollout lock: `begin` (scripts/rollout.lua) writes a `preparing` record only
if no rollout of the flow is in flight, atomically with checking that the version's blob still exists, so
two rollouts of one flow never prepare at once and gc (which keeps a version an in-flight record names)
cannot remove the version between the check and the prepare. A record in flight for longer than its
timeout plus `STALE_GRACE_S` was left by a control plane that died: it no longer holds the lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis

from cluster.errors import FlowfleetError
from cluster.store.keys import Keys
from cluster.store.scripts import load

RedisClient = aioredis.Redis | aioredis.RedisCluster
# Fields holding JSON (lists of replicas / failures); the others are text.
JSON_FIELDS = frozenset({"replicas", "failures"})
NUMBER_FIELDS = frozenset({"generation", "started_at", "finished_at", "timeout_s"})
# States of a rollout whose control plane is still working on it.
IN_FLIGHT = frozenset({"preparing", "committing"})
# A live control plane ends its rollout within milliseconds of the timeout; past this margin (which also
# absorbs clock differences between control planes) the record is stale.
STALE_GRACE_S = 2.0


class RolloutInProgress(FlowfleetError):
    """Another two-phase rollout of the flow is preparing or committing: retry once it has ended."""

    code = "rollout_in_progress"
    http_status = 409
    exit_code = 3

    def __init__(self, flow: str, rollout: str, digest: str, by: str, started_at: float | None) -> None:
        super().__init__(
            f"flow {flow!r} has a two-phase rollout in progress ({rollout}, to {digest[:12]} by {by}); "
            "retry once it has committed or aborted",
            flow=flow,
            rollout=rollout,
            hash=digest,
            by=by,
            started_at=started_at,
        )


class VersionRemoved(FlowfleetError):
    """The version was deleted (gc) after the activation checked it: nothing was prepared or switched."""

    code = "version_removed"
    http_status = 409
    exit_code = 3

    def __init__(self, flow: str, digest: str) -> None:
        super().__init__(
            f"version {digest[:12]} of flow {flow!r} was removed before its rollout began; nothing was "
            "prepared or switched (publish it again)",
            flow=flow,
            hash=digest,
        )


def in_flight(record: Mapping[str, Any] | None, now: float) -> bool:
    """Pure: is `record` a rollout its control plane is still working on (not one it left behind)?

    >>> in_flight({"state": "preparing", "started_at": 100.0, "timeout_s": 10}, 105.0)
    True
    >>> in_flight({"state": "preparing", "started_at": 100.0, "timeout_s": 10}, 113.0)
    False
    """
    return record is not None and record.get("state") in IN_FLIGHT and not stale(record, now)


def stale(record: Mapping[str, Any], now: float) -> bool:
    """Pure: a record still in flight after its timeout plus the grace: its control plane went away."""
    if record.get("state") not in IN_FLIGHT:
        return False
    started, timeout = _number(record.get("started_at")), _number(record.get("timeout_s"))
    return now >= started + timeout + STALE_GRACE_S


async def begin(
    redis: RedisClient, keys: Keys, flow: str, digest: str, record: Mapping[str, Any], *, now: float
) -> int:
    """Write `record` (state `preparing`) as the flow's rollout and return the current release generation
    (the record's generation is that plus one). Raises RolloutInProgress or VersionRemoved."""
    pairs = [item for k, v in record.items() if k != "generation" for item in (k, _encode(v))]
    reply = await _script(redis)(
        keys=[keys.rollout(flow), keys.release(flow), keys.blob(flow, digest)],
        args=["begin", repr(now), STALE_GRACE_S, *pairs],
    )
    status = _text(reply[0])
    if status == "busy":
        rollout, busy_hash, by, started = (_text(v) for v in reply[1:5])
        raise RolloutInProgress(flow, rollout, busy_hash, by, float(started) if started else None)
    if status == "missing":
        raise VersionRemoved(flow, digest)
    return int(reply[1])


async def advance(
    redis: RedisClient, keys: Keys, flow: str, rollout: str, state: str, record: Mapping[str, Any]
) -> bool:
    """Replace the record with `record` only while it is still `rollout` in `state`; False otherwise
    (another control plane expired it meanwhile)."""
    pairs = [item for k, v in record.items() for item in (k, _encode(v))]
    reply = await _script(redis)(keys=[keys.rollout(flow)], args=["advance", rollout, state, *pairs])
    return int(reply) == 1


async def check_idle(redis: RedisClient, keys: Keys, flow: str, *, now: float) -> None:
    """Raise RolloutInProgress while a two-phase rollout of `flow` is in flight (for the changes that do
    not prepare: a direct activation or rollback, a canary change)."""
    record = await read_record(redis, keys, flow)
    if record is not None and in_flight(record, now):
        started = record.get("started_at")
        raise RolloutInProgress(
            flow,
            str(record.get("id") or "?"),
            str(record.get("hash") or ""),
            str(record.get("by") or "?"),
            float(started) if isinstance(started, int | float) else None,
        )


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


def _script(redis: RedisClient) -> Any:
    return redis.register_script(load("rollout"))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def add_audit(
    redis: RedisClient, keys: Keys, flow: str, fields: Mapping[str, Any], *, audit_keep: int
) -> None:
    """Append an entry (e.g. action=rollout_aborted) to the flow's capped audit stream."""
    entry: dict[Any, Any] = {k: _encode(v) for k, v in {"flow": flow, **fields}.items()}
    await redis.xadd(keys.flow_audit(flow), entry, maxlen=audit_keep, approximate=True)
