"""Following the replicas' answers to one prepare without re-reading every full status at every poll.

Replicas answer a prepare in their status key (worker/prepared.py), and every status write also moves the
replica's score in the small `<ns>:replicas` ZSET (its heartbeat time, cluster/store/fleet.py). So a poll
reads that ZSET (ids and scores only) and fetches the status of a waited replica only when its score
moved; a cheap EXISTS on the waited keys every `recheck_s` notices a status that expired (the replica
died). A replica whose status shows another process (`started_at` changed: it was restarted with the same
id) and no answer to this rollout missed the prepare; like an expired one it is no longer waited for, and
it converges on the committed release record as any restarted replica does.

    watch = ReplyWatch(redis, keys, ["web-1", "web-2"], initial_statuses, "support_qa", rollout_id)
    statuses = await watch.poll()   # the statuses of the waited replicas still there, for acks.assess
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis

from cluster.store.keys import Keys
from control.rollout.acks import prepare_reply, replica_id

RECHECK_S = 0.25


class ReplyWatch:
    def __init__(
        self,
        redis: aioredis.Redis | aioredis.RedisCluster,
        keys: Keys,
        waiting: Iterable[str],
        initial: Iterable[Mapping[str, Any]],
        flow: str,
        rollout: str,
        *,
        recheck_s: float = RECHECK_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        initial = list(initial)
        self.redis = redis
        self.keys = keys
        self.waiting = sorted(set(waiting))
        self.flow = flow
        self.rollout = rollout
        self.recheck_s = recheck_s
        self._monotonic = monotonic
        # The process each replica was when the prepare started: a restart shows as another started_at.
        self._process = {replica_id(s): s.get("started_at") for s in initial}
        # Each status carries the time it was written, which is also its score in the ZSET: a replica
        # whose score has not moved since the initial read is not read again.
        self._scores: dict[str, float | None] = {
            replica_id(s): float(s["reported_at"]) for s in initial if _is_number(s.get("reported_at"))
        }
        self._statuses: dict[str, dict[str, Any]] = {
            replica_id(s): dict(s) for s in initial if replica_id(s) in self.waiting
        }
        self._gone: set[str] = set()
        self._next_recheck = monotonic() + recheck_s

    @property
    def gone(self) -> frozenset[str]:
        return frozenset(self._gone)

    async def poll(self) -> list[dict[str, Any]]:
        """The current statuses of the waited replicas still live (expired or restarted ones left out)."""
        scored: Any = await self.redis.zrange(self.keys.replicas(), 0, -1, withscores=True)
        members = {_text(member): float(score) for member, score in scored}
        watched = [rid for rid in self.waiting if rid not in self._gone]
        if self._monotonic() >= self._next_recheck:
            self._next_recheck = self._monotonic() + self.recheck_s
            await self._drop_expired(watched)
            watched = [rid for rid in watched if rid not in self._gone]
        changed = [rid for rid in watched if rid not in self._scores or members.get(rid) != self._scores[rid]]
        if changed:
            # One GET per replica rather than MGET: the keys are in different Cluster slots.
            async with self.redis.pipeline(transaction=False) as pipe:
                for rid in changed:
                    pipe.get(self.keys.replica(rid))
                replies = await pipe.execute()
            for rid, raw in zip(changed, replies, strict=True):
                self._scores[rid] = members.get(rid)
                self._update(rid, raw)
        return list(self._statuses.values())

    async def _drop_expired(self, watched: list[str]) -> None:
        if not watched:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in watched:
                pipe.exists(self.keys.replica(rid))
            found = await pipe.execute()
        for rid, exists in zip(watched, found, strict=True):
            if not exists:
                self._forget(rid)

    def _update(self, rid: str, raw: Any) -> None:
        status = _parse(raw)
        if status is None:
            self._forget(rid)
            return
        status["replica_id"] = rid
        started = self._process.get(rid)
        restarted = started is not None and status.get("started_at") not in (None, started)
        if restarted and not self._answered(status):
            self._forget(rid)  # restarted since the prepare: it never heard it
            return
        self._statuses[rid] = status

    def _answered(self, status: Mapping[str, Any]) -> bool:
        reply = prepare_reply(status, self.flow)
        return reply is not None and reply.get("rollout") == self.rollout

    def _forget(self, rid: str) -> None:
        self._gone.add(rid)
        self._statuses.pop(rid, None)


def _parse(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return status if isinstance(status, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
