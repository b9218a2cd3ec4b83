"""Session pinning: a session runs the version its first run got, on every replica, until its pin expires.

The pin is `<ns>:{<flow>}:session:<session_id>` (JSON `{"hash", "generation", "at"}`, TTL = the session
TTL, refreshed by every run). The first run of a session routes as usual (canary bucketing included)
and writes the pin with SET NX; a replica that loses that race follows the winner's pin. A pin made
before the release's `unpin_generation` (an `--unpin` activation) is ignored and overwritten, and so is
a pin to a version the release record revoked (an aborted canary, a version rolled back automatically)
or whose version can no longer be loaded. Redis unreachable: the run is served unpinned (logged,
counted), never failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.store.keys import Keys
from cluster.traffic.canary import Pin
from worker.loader import Loader, LoadFailure
from worker.metrics import WorkerMetrics
from worker.ports import Runnable
from worker.routing import Served, route, variant_of
from worker.state import LoadedFlow, serving_versions

log = logging.getLogger(__name__)

T = TypeVar("T")
# A pin lookup waits at most this long on Redis before the run goes ahead unpinned.
REDIS_TIMEOUT_S = 0.5
# A pinned version that failed to load is not tried again (for any session) before this many seconds.
FAILED_RETRY_S = 30.0
SWEEP_EVERY_S = 60.0
WARN_EVERY_S = 10.0


def honoured(pin: Pin, loaded: LoadedFlow) -> bool:
    """A pin binds its session unless an `--unpin` release came after it or its version was revoked
    (an aborted canary, a version rolled back automatically): such sessions move at their next run."""
    return pin.honoured(loaded.unpin_generation) and pin.hash not in loaded.revoked


class SessionPins:
    """Resolves a session's version; every Redis error degrades to the unpinned choice."""

    def __init__(
        self,
        redis: aioredis.Redis | aioredis.RedisCluster,
        keys: Keys,
        loader: Loader,
        metrics: WorkerMetrics,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.loader = loader
        self.metrics = metrics
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self._clock = clock
        self._monotonic = monotonic
        self._loading: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._failed: dict[tuple[str, str], float] = {}
        self._last_sweep = monotonic()
        self._last_warning = -WARN_EVERY_S

    async def serve(self, loaded: LoadedFlow, session_id: str, key: str | None) -> Served:
        """The version for this run of `session_id`, pinning the routed choice on the first run."""
        self._maybe_sweep()
        choice = route(loaded, key)
        pin_key = self.keys.session(loaded.flow, session_id)
        try:
            raw = await self._redis(self.redis.getex(pin_key, px=self.ttl_ms))
        except (RedisError, OSError, TimeoutError) as e:
            return self._degraded(loaded, choice, e)
        pin = Pin.decode(raw)
        if pin is not None and honoured(pin, loaded):
            served = await self.load(loaded, pin)
            if served is not None:
                self._count(loaded.flow, "followed")
                return served
        overwrite = raw is not None
        if overwrite:
            if pin is None:
                why = "unreadable pin"
            elif pin.hash in loaded.revoked:
                why = f"version {pin.hash[:12]} was withdrawn (canary aborted or rolled back automatically)"
            elif pin.honoured(loaded.unpin_generation):
                why = "its version cannot be loaded"
            else:
                why = "unpinned by a release"
            log.info("re-pinning session flow=%s session=%s: %s", loaded.flow, session_id, why)
        fresh = Pin(choice.hash, loaded.generation, self._clock())
        try:
            written = await self._redis(
                self.redis.set(pin_key, fresh.encode(), px=self.ttl_ms, nx=not overwrite)
            )
            if not written:
                # Another replica pinned this session first: follow its choice.
                other = Pin.decode(await self._redis(self.redis.getex(pin_key, px=self.ttl_ms)))
                if other is not None and honoured(other, loaded):
                    served = await self.load(loaded, other)
                    if served is not None:
                        self._count(loaded.flow, "followed")
                        return served
                # The winner's pin is unusable here (made under an older release than this replica
                # knows, or unloadable): serve the routed choice; the next run re-pins the session.
                return choice
        except (RedisError, OSError, TimeoutError) as e:
            return self._degraded(loaded, choice, e)
        self._count(loaded.flow, "replaced" if overwrite else "created")
        return replace(choice, pinned=True)

    async def load(self, loaded: LoadedFlow, pin: Pin) -> Served | None:
        """The pinned version, loaded on demand if this replica does not hold it; None if unloadable."""
        if pin.hash == loaded.hash:
            return Served(loaded.compiled, loaded.hash, loaded.generation, "stable", True)
        if loaded.canary is not None and pin.hash == loaded.canary.hash:
            return Served(loaded.canary.compiled, pin.hash, loaded.generation, "canary", True)
        flow_key = (loaded.flow, pin.hash)
        compiled = self.loader.cache.get(*flow_key)
        if compiled is None:
            if self._monotonic() < self._failed.get(flow_key, 0.0):
                return None
            task = self._loading.get(flow_key)
            if task is None:
                # One load per version however many sessions ask; others' runs never wait for it.
                task = asyncio.create_task(self.loader.compiled(loaded.flow, pin.hash, pin.generation))
                self._loading[flow_key] = task
                task.add_done_callback(lambda t: self._load_done(flow_key, t))
            try:
                loaded_now: Runnable = await asyncio.shield(task)
            except LoadFailure as e:
                self._failed[flow_key] = self._monotonic() + FAILED_RETRY_S
                log.warning(
                    "pinned version flow=%s hash=%s cannot be loaded (%s: %s); sessions move to the "
                    "current release", loaded.flow, pin.hash[:12], e.reason, e.message,
                )  # fmt: skip
                return None
            log.info("loaded pinned version flow=%s hash=%s on demand", loaded.flow, pin.hash[:12])
            compiled = loaded_now
        return Served(compiled, pin.hash, pin.generation, variant_of(loaded, pin.hash), True)

    def _load_done(self, flow_key: tuple[str, str], task: asyncio.Task[Any]) -> None:
        self._loading.pop(flow_key, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone (clients disconnected)

    async def _redis(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, timeout=REDIS_TIMEOUT_S)

    def _degraded(self, loaded: LoadedFlow, choice: Served, error: BaseException) -> Served:
        self._count(loaded.flow, "degraded")
        now = self._monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(
                "session pins unavailable (%s: %s); serving flow=%s unpinned",
                type(error).__name__, error, loaded.flow,
            )  # fmt: skip
        return choice

    def _count(self, flow: str, result: str) -> None:
        self.metrics.session_pins.labels(flow, result).inc()

    def _maybe_sweep(self) -> None:
        now = self._monotonic()
        if now - self._last_sweep >= SWEEP_EVERY_S:
            self._last_sweep = now
            self.loader.cache.sweep(serving_versions(self.loader.state))
