"""The replica's status, written to Redis every `heartbeat_s` with a TTL so dead replicas disappear.

Status JSON (documented in docs/worker.md):
    {"id", "host", "pid", "started_at", "heartbeat_at", "heartbeat_s", "ttl_s", "ready", "subscribed",
     "state",
     "flows": {flow: {"hash", "generation", "activated_at", "loaded_at", "last_error",
                      "consecutive_failures"}},   (activated_at: the served release's stamp)
     "last_error", "consecutive_failures",
     "prepared": {flow: {"rollout", "hash", "generation", "ok", "reason", "message", "at"}},
     "runs": {flow: {"epoch", "versions": {hash: {"runs", "errors", "buckets"}}}}}  (cluster.traffic.runstats)
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from worker.ports import ReleaseReader
from worker.state import WorkerState

log = logging.getLogger(__name__)

# A swap is reported this much later (`poke_soon`): when a whole fleet swaps together on shared CPUs, the
# swaps come first, and one status write covers every change made meanwhile.
REPORT_DELAY_S = 0.02


def build_status(
    state: WorkerState,
    *,
    started_at: float,
    subscribed: bool,
    now: float,
    host: str | None = None,
    pid: int | None = None,
    runs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pure: the status document of this replica at `now`."""
    flows = state.status()
    errors = [
        (f["last_error"], f["consecutive_failures"]) for f in flows.values() if f["last_error"] is not None
    ]
    latest = max(errors, key=lambda e: e[0]["at"], default=None)
    last_error = None
    if latest is not None:
        flow = next(name for name, f in flows.items() if f["last_error"] is latest[0])
        last_error = {"flow": flow, **latest[0]}
    return {
        "id": state.replica_id,
        "host": host if host is not None else socket.gethostname(),
        "pid": pid if pid is not None else os.getpid(),
        "started_at": started_at,
        "heartbeat_at": now,
        "ready": state.is_ready(),
        "subscribed": subscribed,
        "state": "draining" if state.draining else "serving",
        "flows": flows,
        "last_error": last_error,
        "consecutive_failures": max((e[1] for e in errors), default=0),
        "runs": runs or {},
    }


class Heartbeat:
    """Writes the status every `interval_s`; a Redis outage is logged once and retried next beat."""

    def __init__(
        self,
        store: ReleaseReader,
        state: WorkerState,
        *,
        interval_s: float,
        ttl_s: float,
        subscribed: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        extra: Callable[[], dict[str, Any]] | None = None,
        runs: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        # More status fields (the two-phase `prepared` replies), merged into every status written.
        self.extra = extra or dict
        self.runs = runs or dict
        self.state = state
        self.interval_s = interval_s
        # A TTL shorter than two beats would make a healthy replica flicker out of the fleet table.
        self.ttl_s = max(ttl_s, interval_s * 2)
        self.subscribed = subscribed
        self.clock = clock
        self.started_at = clock()
        self.beats = 0
        self._failing = False
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._soon: asyncio.TimerHandle | None = None

    def status(self) -> dict[str, Any]:
        status = build_status(
            self.state,
            started_at=self.started_at,
            subscribed=self.subscribed(),
            now=self.clock(),
            runs=self.runs(),
        )
        # Readers judge from these whether the heartbeat is late (control/fleetview.py).
        status.update(heartbeat_s=self.interval_s, ttl_s=self.ttl_s)
        status.update(self.extra())
        return status

    async def beat(self) -> bool:
        try:
            await self.store.write_replica_status(self.state.replica_id, self.status(), self.ttl_s)
        except (RedisError, OSError) as e:
            if not self._failing:
                log.warning("heartbeat replica=%s failed (%s); will keep trying", self.state.replica_id, e)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat replica=%s restored", self.state.replica_id)
        self._failing = False
        self.beats += 1
        return True

    async def run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            await self.beat()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    def poke(self) -> None:
        """Write the status now rather than at the next beat (after a swap or a failed load), so the
        fleet view shows a change within milliseconds instead of up to `interval_s` later."""
        self._wake.set()

    def poke_soon(self, delay_s: float = REPORT_DELAY_S) -> None:
        """`poke` within `delay_s`; pokes meanwhile are one write. Without a running loop: `poke`."""
        if self._soon is not None:
            return
        try:
            self._soon = asyncio.get_running_loop().call_later(delay_s, self._poke_now)
        except RuntimeError:
            self.poke()

    def _poke_now(self) -> None:
        self._soon = None
        self.poke()

    def stop(self) -> None:
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        self._stop.set()
        self._wake.set()
