"""A control-plane background task that runs one `check()` pass every `interval_s` until stopped.

The automatic-rollback guard and the canary guard are both this loop around a different pass. One
failing pass (Redis away, a record that cannot be read) is logged and never stops the next.

Several control planes may run against one Redis. With a `lease`, only the holder runs its passes; the
others stand by and take over once the holder stops renewing it (it died), within the lease's TTL
(`lease_ttl`: a few intervals). A graceful stop gives the lease up at once.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from cluster.store.lease import Lease

log = logging.getLogger(__name__)

# A lease outlives this many passes of its holder, and never less than MIN_LEASE_S.
LEASE_PASSES = 3
MIN_LEASE_S = 1.0


def lease_ttl(interval_s: float) -> float:
    return max(interval_s * LEASE_PASSES, MIN_LEASE_S)


class PeriodicCheck(abc.ABC):
    name = "periodic check"

    def __init__(self, *, interval_s: float, lease: Lease | None = None) -> None:
        self.interval_s = interval_s
        self.lease = lease
        self.passes = 0
        self._stop = asyncio.Event()

    @abc.abstractmethod
    async def check(self) -> Any:
        """One pass; what it returns is for tests and callers, the loop ignores it."""

    async def step(self) -> bool:
        """One pass if this process may act (it holds the lease, or there is none); True if it ran."""
        if self.lease is not None and not await self.lease.hold():
            return False
        await self.check()
        return True

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.step()
            except (RedisError, OSError) as e:
                log.warning("%s: redis unavailable (%s); next pass in %.1fs", self.name, e, self.interval_s)
            except Exception:  # the guard must outlive any single bad record
                log.exception("%s pass failed", self.name)
            self.passes += 1
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass
        if self.lease is not None:
            try:
                await self.lease.release()
            except (RedisError, OSError) as e:
                log.info("%s: could not give up the lease (%s); it lapses by itself", self.name, e)

    def stop(self) -> None:
        self._stop.set()
