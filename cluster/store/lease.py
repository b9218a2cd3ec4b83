"""A lease in Redis: at most one holder at a time for a named task, across control-plane processes.

Several control planes may run against one Redis; each runs the guards, but only the lease holder acts.
The holder renews the lease on every pass; when it dies (or loses Redis) the lease lapses after its TTL
and the next control plane that asks takes it over (scripts/lease.lua, one atomic step each).

    lease = Lease(redis, keys, "rollback-guard", holder="control-a-4711", ttl_s=6.0)
    if await lease.hold():
        ...  # this process acts this pass
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import redis.asyncio as aioredis

from cluster.store.keys import Keys
from cluster.store.scripts import load

log = logging.getLogger(__name__)


def holder_id() -> str:
    """A name for this process as a lease holder: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(
        self,
        redis: aioredis.Redis | aioredis.RedisCluster,
        keys: Keys,
        name: str,
        *,
        holder: str,
        ttl_s: float,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("a lease needs a positive TTL")
        self.key = keys.lease(name)
        self.name = name
        self.holder = holder
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.held = False
        self._script: Any = redis.register_script(load("lease"))

    async def hold(self) -> bool:
        """Take or renew the lease; True while this holder has it."""
        held = int(await self._script(keys=[self.key], args=["hold", self.holder, self.ttl_ms])) == 1
        if held != self.held:
            what = "taken" if held else "held elsewhere; standing by"
            log.info("%s lease %s by %s", self.name, what, self.holder)
        self.held = held
        return held

    async def release(self) -> None:
        """Give the lease up (at shutdown), so another control plane takes over without waiting."""
        if self.held:
            await self._script(keys=[self.key], args=["release", self.holder, self.ttl_ms])
            self.held = False
