"""Change events from Redis pub/sub, treated as hints; the release records are the truth.

The subscriber owns its reconnect loop (redis-py's retries are off on its connection): subscribe → on
every subscribe confirmation re-read every release record → apply events as they come. Liveness: PING
every `ping_s` on the subscribed connection itself, so a half-open one shows up as silence and is
dropped after `watchdog_s`. A reconcile pass also runs every `reconcile_s` (jittered; a failed pass is
retried sooner). Errors back off with full jitter, so a fleet never reconnects in lockstep. Serving
never depends on any of this."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from cluster.names import FLOW_NAME
from cluster.store import redis_conn
from cluster.store.events import Abort, Ping, Prepare, ReleaseChanged, decode
from cluster.store.release import Release
from worker.carried import carried_blob, carried_release, read_release
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.ports import ReleaseReader
from worker.prepared import Preparer
from worker.state import WorkerState
from worker.timing import Timing, backoff_with_jitter

log = logging.getLogger(__name__)

__all__ = ["Subscriber", "Timing", "backoff_with_jitter"]

PING_TOKEN = b"flowfleet-watchdog"
# Upper bound for one wait on the socket, so stop() and the ping timer are honoured promptly.
POLL_S = 0.5


# A failed reconcile pass (say, a Redis timeout) is tried again this soon, doubling up to the period.
RECONCILE_RETRY_S = 0.5


class ChannelSilent(Exception):
    """Nothing at all (event, ping or pong) arrived for longer than the watchdog allows."""


# Failures that are part of life (restarts, failovers, network cuts); anything else gets a traceback.
EXPECTED = (RedisError, RedisClusterException, OSError, ChannelSilent)


class Subscriber:
    """Keeps one replica converged on the release records; `run()` until `stop()`."""

    def __init__(
        self,
        redis: redis_conn.RedisClient,
        channel: str,
        store: ReleaseReader,
        loader: Loader,
        state: WorkerState,
        metrics: WorkerMetrics,
        timing: Timing,
        *,
        rng: random.Random | None = None,
        preparer: Preparer | None = None,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.store = store
        self.loader = loader
        self.state = state
        self.metrics = metrics
        self.timing = timing
        self.rng = rng or random.Random()
        self.preparer = preparer
        self.connected = asyncio.Event()
        self.reconciles = 0  # completed reconcile passes (tests wait on it)
        self._stop = asyncio.Event()
        self._reconcile_wanted = asyncio.Event()
        self._pending_reason = "subscribe"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failures = 0  # consecutive lost sessions; reset once one stays healthy for `healthy_s`
        self._subscribed_at: float | None = None
        self._last_rx = 0.0  # monotonic time anything (event, pong) last arrived on the subscription
        # Sessions so far, from a random start: on a Cluster each one subscribes at the next node.
        self._sessions = self.rng.randrange(1 << 16)

    # -- lifecycle ----------------------------------------------------------------------------------
    async def run(self) -> None:
        reconciler = asyncio.create_task(self._reconcile_loop(), name="flowfleet-reconcile")
        try:
            while not self._stop.is_set():
                try:
                    await self._session()
                except Exception as e:  # whatever breaks a session, the next one must still come
                    self._disconnected()
                    self._failures += 1
                    delay = backoff_with_jitter(self._failures, self.timing, self.rng)
                    log.log(
                        logging.WARNING if isinstance(e, EXPECTED) else logging.ERROR,
                        "subscriber replica=%s lost %s (%s: %s); reconnecting in %.2fs (attempt %d)",
                        self.state.replica_id,
                        self.channel,
                        type(e).__name__,
                        e,
                        delay,
                        self._failures,
                        exc_info=not isinstance(e, EXPECTED),
                    )
                    await self._sleep(delay)
                finally:
                    self._disconnected()
        finally:
            reconciler.cancel()
            for task in [reconciler, *self._tasks]:
                task.cancel()
            await asyncio.gather(reconciler, *self._tasks, return_exceptions=True)

    def _disconnected(self) -> None:
        self.connected.clear()
        self.metrics.subscriber_connected.set(0)

    def stop(self) -> None:
        self._stop.set()

    def request_reconcile(self, reason: str) -> None:
        self._pending_reason = reason
        self._reconcile_wanted.set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # -- one connection -----------------------------------------------------------------------------
    async def _session(self) -> None:
        # redis-py's PubSub is untyped; Any keeps mypy --strict honest about that.
        self._sessions += 1
        pubsub: Any = await redis_conn.open_pubsub(self.redis, self._sessions)
        self._subscribed_at = None
        try:
            await pubsub.subscribe(self.channel)
            last_rx = time.monotonic()
            next_ping = last_rx + self.timing.ping_s
            while not self._stop.is_set():
                now = time.monotonic()
                self._maybe_healthy(now)
                wait = min(POLL_S, next_ping - now, last_rx + self.timing.watchdog_s - now)
                reply = await redis_conn.read_pubsub_reply(pubsub, max(wait, 0.0))
                now = time.monotonic()
                if reply is not None:
                    last_rx = self._last_rx = now
                    self._handle(reply)
                    self.metrics.mark_event()
                if now - last_rx > self.timing.watchdog_s:
                    raise ChannelSilent(f"nothing received for {now - last_rx:.1f}s")
                if now >= next_ping:
                    await pubsub.ping(PING_TOKEN)
                    next_ping = now + self.timing.ping_s
            await self._unsubscribe(pubsub)
        finally:
            await pubsub.aclose()

    async def _unsubscribe(self, pubsub: Any) -> None:
        try:
            await asyncio.wait_for(pubsub.unsubscribe(self.channel), timeout=1.0)
        except (RedisError, OSError, TimeoutError) as e:
            log.info("unsubscribe on shutdown failed (%s); closing the connection anyway", e)

    def redis_reachable(self) -> bool:
        """Subscribed, and something (an event, the answer to our last PING) arrived within a ping
        interval and a margin: a dead or frozen Redis reads False within about `ping_s` + 1.5 s."""
        quiet = time.monotonic() - self._last_rx
        return self.connected.is_set() and quiet <= self.timing.ping_s + POLL_S + 1.0

    def _maybe_healthy(self, now: float) -> None:
        since = self._subscribed_at
        if self._failures and since is not None and now - since >= self.timing.healthy_s:
            log.info(
                "subscriber replica=%s: subscription healthy for %.1fs after %d lost connection(s)",
                self.state.replica_id, now - since, self._failures,
            )  # fmt: skip
            self._failures = 0

    def _handle(self, reply: Any) -> None:
        """One reply off the subscribed connection: `[kind, channel, data]` for a message (bytes, or
        str on a client that decodes responses); anything else (a PONG) is liveness only."""
        kind = reply[0] if isinstance(reply, list) and reply else None
        if kind in (b"message", "message") and len(reply) == 3:
            data = reply[2]
            if isinstance(data, bytes | str):
                self._on_event(data if isinstance(data, bytes) else data.encode())
        elif kind in (b"subscribe", "subscribe"):
            self._subscribed_at = self._last_rx = time.monotonic()
            self.connected.set()
            self.metrics.subscriber_connected.set(1)
            log.info("subscriber replica=%s subscribed to %s", self.state.replica_id, self.channel)
            # Anything published while we were not subscribed is lost: re-read the truth.
            self.request_reconcile("subscribe")

    def _on_event(self, data: bytes) -> None:
        event = decode(data)
        match event:
            case ReleaseChanged() if not FLOW_NAME.match(event.flow):
                log.warning("dropping release event for an invalid flow name %.100r", event.flow)
            case ReleaseChanged():
                carried = carried_release(event)  # read once, for both paths
                if carried is None or not self._swap_now(event, carried):
                    self._spawn(self._apply_release(event, carried), f"flowfleet-load-{event.flow}")
            case Prepare() | Abort() if not FLOW_NAME.match(event.flow):
                log.warning("dropping %s event for an invalid flow name %.100r", event.TYPE, event.flow)
            case Prepare() if self.preparer is not None:
                self._spawn(self.preparer.prepare(event), f"flowfleet-prepare-{event.flow}")
            case Abort() if self.preparer is not None:
                self.preparer.abort(event)
            case Ping():
                pass  # liveness only; already counted as traffic
            case _:
                pass  # unknown or malformed: decode() logged it

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _swap_now(self, event: ReleaseChanged, record: Release) -> bool:
        """The carried release, swapped in at once if this replica holds every version it names compiled
        (a two-phase commit, say): no task, no wait (worker/settle.py). False: `_apply_release` runs."""
        try:
            done = self.loader.apply_held(record, triggered_by=f"event:{event.action}", settle=True)
        except Exception:  # a bug here must not end the subscription: the usual path retries it
            log.exception("swapping flow=%s at once failed; applying the release the usual way", event.flow)
            return False
        return done is not None

    async def _apply_release(self, event: ReleaseChanged, carried: Release | None) -> None:
        """Apply the release record the event points at: it also names the canary, the unpin mark and
        the revoked versions (docs/protocol.md, rule 7). The event carries the record, and a small
        version's bytes (worker/carried.py); without them the record is read, and the version fetched."""
        offered = carried_blob(event)
        if offered is not None:
            self.loader.offered.put(event.flow, *offered)
        try:
            record = carried or await read_release(self.store, event)
        except EXPECTED as e:
            # Fetching the version would fail the same way; the next reconcile reads the record.
            log.warning("reading the release of flow=%s after an event failed (%s)", event.flow, e)
            self.request_reconcile("event")
            return
        try:
            if record is not None:
                await self.loader.apply(
                    record, triggered_by=f"event:{event.action}", forced=True, authoritative=True,
                    settle=True,
                )  # fmt: skip
        finally:
            if offered is not None:  # not needed after all (held already, or superseded): dropped
                self.loader.offered.drop(event.flow, offered[0])

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("applying a change event failed", exc_info=task.exception())

    # -- reconcile ----------------------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        # No pass before the first subscribe confirmation: subscribing first, then reading, means nothing
        # activated in between can be missed. If subscribing keeps failing, the timer still reads.
        failed = 0  # passes failed in a row: the next one comes sooner than the period, with backoff
        while True:
            interval = self.timing.reconcile_s * self.rng.uniform(0.75, 1.0)
            if failed:
                interval = min(interval, RECONCILE_RETRY_S * 2 ** (failed - 1) * self.rng.uniform(0.5, 1.0))
            try:
                await asyncio.wait_for(self._reconcile_wanted.wait(), timeout=interval)
                reason = self._pending_reason
            except TimeoutError:
                reason = "reconcile"
            self._reconcile_wanted.clear()
            try:
                await self.reconcile(reason)
                failed = 0
            except Exception as e:  # the periodic pass must survive anything, or convergence stops
                failed += 1
                expected = isinstance(e, EXPECTED)
                log.log(logging.WARNING if expected else logging.ERROR,
                        "reconcile replica=%s failed (%s: %s); serving what is loaded",
                        self.state.replica_id, type(e).__name__, e, exc_info=not expected)  # fmt: skip

    async def reconcile(self, triggered_by: str) -> None:
        """Read every release record and bring each flow to it."""
        releases = await self.store.list_releases()
        for release in releases.values():
            await self.loader.apply(release, triggered_by=triggered_by, authoritative=True)
        self.state.synced = True
        self.reconciles += 1
