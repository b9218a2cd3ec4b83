"""A control-plane background task that runs one `check()` pass every `interval_s` until stopped.

The automatic-rollback guard and the canary guard are both this loop around a different pass. One
failing pass (Redis away, a record that cannot be read) is logged and never stops the next.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class PeriodicCheck(abc.ABC):
    name = "periodic check"

    def __init__(self, *, interval_s: float) -> None:
        self.interval_s = interval_s
        self.passes = 0
        self._stop = asyncio.Event()

    @abc.abstractmethod
    async def check(self) -> Any:
        """One pass; what it returns is for tests and callers, the loop ignores it."""

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.check()
            except (RedisError, OSError) as e:
                log.warning("%s: redis unavailable (%s); next pass in %.1fs", self.name, e, self.interval_s)
            except Exception:  # the guard must outlive any single bad record
                log.exception("%s pass failed", self.name)
            self.passes += 1
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()
