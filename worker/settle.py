"""Bookkeeping a swap owes, run a moment after the swap (docs/worker.md, *After the swap*).

A release event reaches every replica at once, and on shared CPUs the replicas take turns: whatever one
replica does after reading the event delays the next one's swap. So a replica applying an event swaps
first and leaves the rest (its reload log line, the reload and version metrics, the version cache sweep)
for `delay_s` later, when the fleet has swapped; the heartbeat's status write waits as long for the same
reason. The deferred work runs in the order it was queued, and anything run at once first runs what is
queued, so nothing is ever reported out of order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# As long as the heartbeat waits before reporting a swap (worker/heartbeat.py): one wake-up for both.
SETTLE_S = 0.02


class Settler:
    """Runs callbacks in order: at once (`now`) or `delay_s` after the first one queued (`later`)."""

    def __init__(self, delay_s: float = SETTLE_S) -> None:
        self.delay_s = delay_s
        self._queue: deque[Callable[[], None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def later(self, work: Callable[[], None]) -> None:
        """Run `work` within `delay_s`, after everything queued before it; at once without a loop."""
        self._queue.append(work)
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self.delay_s <= 0:
            self.flush()
        else:
            self._timer = loop.call_later(self.delay_s, self.flush)

    def now(self, work: Callable[[], None]) -> None:
        """Run what is queued, then `work`."""
        self.flush()
        self._run(work)

    def flush(self) -> None:
        """Run everything queued now (also on shutdown, so no log line is lost)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            self._run(self._queue.popleft())

    @staticmethod
    def _run(work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:  # bookkeeping must never break the swap path or the work queued after it
            log.exception("bookkeeping after a swap failed")
