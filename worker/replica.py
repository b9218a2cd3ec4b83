"""One replica's moving parts and their lifecycle: Redis clients, loader, subscriber, heartbeat, run gate.

`Replica.start()` runs inside the server's lifespan; `Replica.stop()` drains: not ready, in-flight runs
finish (bounded by `shutdown_grace_s`), then the subscriber unsubscribes, the replica deregisters from
the fleet and Redis is closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from redis.exceptions import RedisError

from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime
from cluster.names import REPLICA_ID, InvalidName
from cluster.settings import Settings
from cluster.store import fleet
from cluster.store.conversations import ConversationStore
from cluster.store.keys import Keys
from cluster.store.redis_conn import RedisClient, connect
from cluster.store.release import Release
from cluster.store.topology import describe, parse
from cluster.traffic.runstats import RunStats
from worker.api.auth import RunAuth
from worker.heartbeat import Heartbeat
from worker.loader import Loader
from worker.memory import Conversations
from worker.metrics import WorkerMetrics
from worker.pick import VersionPicker
from worker.ports import Compiler, ReleaseReader, Runnable
from worker.prepared import PreparedVersions, Preparer
from worker.sessions import SessionPins
from worker.state import WorkerState, serving_versions
from worker.subscriber import Subscriber, Timing
from worker.versions import VersionCache

log = logging.getLogger(__name__)

# Redis calls from a replica must fail fast when Redis is gone or frozen: serving never waits on them.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0

StoreFactory = Callable[[RedisClient, Keys, Settings], ReleaseReader]


def engine_compiler(runtime: Runtime) -> Compiler:
    """The real compiler: parse with the engine's limits, validate against the runtime's policy, check
    the secrets the version needs are here (MissingSecret otherwise), build components."""
    from cluster.components.registry import default_registry
    from cluster.engine import compile_flow, warm_up
    from cluster.flow.validation import parse_document

    # Built now, not on the first load: plugin problems show in the start-up log, and the first swap
    # pays neither for scanning entry points nor for building the components' params validators.
    registry = default_registry()
    warm_up(registry)

    def compile_bytes(data: bytes) -> Runnable:
        return compile_flow(parse_document(data), registry=registry, runtime=runtime)

    return compile_bytes


def store_from_redis(redis: RedisClient, keys: Keys, settings: Settings) -> ReleaseReader:
    from cluster.store.store import Store

    return Store(redis, keys, history_keep=settings.history_keep, audit_keep=settings.audit_keep)


class RunGate:
    """Counts in-flight runs, refuses past the limit, and lets shutdown wait for the last one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def try_enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        self._idle.clear()
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout)
        except TimeoutError:
            return False
        return True


def redis_client(
    url: str,
    *,
    retries: int,
    name: str | None = None,
    health_check_s: int = 15,
    settings: Settings | None = None,
) -> RedisClient:
    """A client that fails fast (short timeouts, `retries` immediate retries of a lost connection) so
    callers own backoff; a single node, Sentinel or Cluster as the URL says (cluster.store.redis_conn)."""
    return connect(
        url,
        connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=health_check_s,
        client_name=name,
        retries=retries,
        sentinel_username=settings.redis_sentinel_username if settings else None,
        sentinel_password=settings.redis_sentinel_password if settings else None,
    )


class Replica:
    """Everything is built here (no I/O yet), so a bad URL or replica id fails at start-up, before
    the server listens; `start()` only launches the background tasks."""

    def __init__(
        self,
        settings: Settings,
        *,
        compiler: Compiler | None = None,
        store_factory: StoreFactory | None = None,
        environ: Mapping[str, str] | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        s = self.settings = settings
        # The only part of the environment flows reach: the secrets the operator lists, nothing else.
        self.metrics = WorkerMetrics()
        runtime = runtime or Runtime.from_environ(OutboundPolicy.from_settings(s), environ or {})
        # Components report tool calls, model rounds and tokens into this replica's metrics.
        self.runtime = dataclasses.replace(runtime, meter=self.metrics.agents)
        if not REPLICA_ID.match(s.replica_id):
            raise InvalidName(
                f"invalid replica id {s.replica_id!r}: use letters, digits, '_', '.', ':' or '-'",
                replica_id=s.replica_id,
            )
        self.keys = Keys(s.namespace)
        self.state = WorkerState(s.replica_id)
        self.gate = RunGate(max(1, s.max_concurrent_runs))
        self.run_stats = RunStats()
        self.started_at = time.time()
        redis = redis_client(s.redis_url, retries=1, name=f"flowfleet-worker:{s.replica_id}", settings=s)
        # The subscriber's connection never retries or health-checks on its own: the subscriber owns
        # reconnecting and its PING watchdog is the health check.
        sub_redis = redis_client(
            s.redis_url, retries=0, name=f"flowfleet-worker-sub:{s.replica_id}", health_check_s=0, settings=s
        )
        self._clients = [redis, sub_redis]
        self.store = (store_factory or store_from_redis)(redis, self.keys, s)
        self.prepared = PreparedVersions()
        self.heartbeat = Heartbeat(
            self.store,
            self.state,
            interval_s=s.heartbeat_s,
            ttl_s=s.status_ttl_s,
            subscribed=lambda: self.subscriber.connected.is_set(),
            extra=lambda: {"prepared": self.prepared.status()},
            runs=lambda: self.run_stats.report(serving_versions(self.state)),
        )
        self.heartbeat.started_at = self.started_at
        self.loader = Loader(
            self.store,
            self.state,
            compiler or engine_compiler(self.runtime),
            self.metrics,
            on_change=self.heartbeat.poke_soon,  # a swap; a prepare's reply is awaited: poked at once
            take_prepared=self.prepared.take,
            cache=VersionCache(idle_s=s.session_ttl_s, close_after_s=s.run_timeout_s + 5.0),
        )
        preparer = Preparer(self.loader, self.state, self.prepared, on_change=self.heartbeat.poke)
        self.sessions = SessionPins(redis, self.keys, self.loader, self.metrics, ttl_s=s.session_ttl_s)
        self.picker = VersionPicker(self._history, self.sessions)
        self.run_auth = RunAuth.from_file(s.run_tokens_file)
        history = ConversationStore(
            redis, self.keys, max_messages=s.history_max_messages, ttl_s=s.history_ttl_s
        )
        self.conversations = Conversations(history, self.metrics)
        timing = Timing(reconcile_s=s.reconcile_s, watchdog_s=s.watchdog_s, ping_s=s.ping_s)
        self.subscriber = Subscriber(
            sub_redis,
            self.keys.channel(),
            self.store,
            self.loader,
            self.state,
            self.metrics,
            timing,
            preparer=preparer,
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Runs whose request was answered before they finish (LangFlow's webhook); see in_background.
        self.background: set[asyncio.Task[Any]] = set()

    def in_background(self, run: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `run` after its request was answered. Such a run still holds a place in the gate, so
        stop() waits for it like any run; the ones still running when the grace is over are cancelled."""
        task = asyncio.create_task(run, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def _history(self, flow: str) -> list[Release]:
        history = getattr(self.store, "history", None)
        return [] if history is None else list(await history(flow))

    async def start(self) -> None:
        s = self.settings
        # What is loaded by now (modules, settings, the app) lives as long as the process: it leaves the
        # collector's view, so a full collection walks only what came since, not some 50,000 objects
        # (about 50 ms, long enough to hold up a swap or a run).
        gc.collect()
        gc.freeze()
        self._tasks = [
            asyncio.create_task(self.subscriber.run(), name="flowfleet-subscriber"),
            asyncio.create_task(self.heartbeat.run(), name="flowfleet-heartbeat"),
        ]
        # Not one of the tasks stop() waits for: it only sleeps between flushes, so it is cancelled.
        self._flusher = asyncio.create_task(self._flush_conversations(), name="flowfleet-conversations")
        log.info(
            "replica=%s starting: redis=%s namespace=%s channel=%s",
            s.replica_id,
            describe(parse(s.redis_url)),
            s.namespace,
            self.keys.channel(),
        )

    async def _flush_conversations(self) -> None:
        """Turns buffered while Redis was away are written once it answers again."""
        while True:
            await asyncio.sleep(self.settings.reconcile_s)
            if self.conversations.buffer:
                await self.conversations.flush()

    async def stop(self) -> None:
        s = self.settings
        self.state.draining = True
        log.info("replica=%s draining: %d run(s) in flight", s.replica_id, self.gate.in_flight)
        if not await self.gate.wait_idle(s.shutdown_grace_s):
            log.warning(
                "replica=%s shutdown grace %.1fs over with %d run(s) still in flight",
                s.replica_id,
                s.shutdown_grace_s,
                self.gate.in_flight,
            )
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.subscriber.stop()
        self.heartbeat.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self.conversations.buffer:
            await self.conversations.flush()
            if self.conversations.buffer:
                log.error(
                    "replica=%s stops with %d conversation turn(s) unwritten",
                    s.replica_id,
                    len(self.conversations.buffer),
                )
        done, pending = await asyncio.wait(self._tasks, timeout=5.0) if self._tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            # Leave the fleet now rather than linger as "draining" until the status TTL runs out; the
            # heartbeat task is over, so no later beat writes the status again. Never worth delaying the
            # exit for: if Redis is away the status simply expires.
            await asyncio.wait_for(fleet.deregister(self._clients[0], self.keys, s.replica_id), 2.0)
        except (TimeoutError, RedisError, OSError) as e:
            log.warning(
                "replica=%s could not deregister (%s); its status expires on its own", s.replica_id, e
            )
        self.loader.after_swap.flush()  # the last swaps' log lines and metrics
        await self.loader.cache.aclose()
        for client in self._clients:
            await client.aclose()
        log.info("replica=%s stopped", s.replica_id)
