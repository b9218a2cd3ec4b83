"""Fetch → verify → compile → swap, one flow at a time; every failure keeps the current version serving.

Order matters: the sha256 of the fetched bytes is checked against the announced hash before the bytes
are parsed at all, and a version counts as loaded only after the swap. `prepare` and `commit` are the
two halves so a rollout can hold a compiled version and switch it later with one assignment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from redis.exceptions import RedisError

from cluster.flow.hashing import sha256_hex
from worker.carried import OfferedBlobs
from worker.metrics import WorkerMetrics
from worker.ports import Compiler, ReleaseReader, Runnable, Target
from worker.reloads import (
    THREAD_COMPILE_BYTES,
    LoadFailure,
    ReloadOutcome,
    compile_version,
    log_reload,
    recheck,
)
from worker.settle import SETTLE_S, Settler
from worker.state import CanaryVersion, LoadedFlow, LoadError, WorkerState, serving_versions
from worker.versions import ReleaseExtras, VersionCache, VersionRef, extras_of

log = logging.getLogger(__name__)

__all__ = ["THREAD_COMPILE_BYTES", "LoadFailure", "Loader", "ReloadOutcome"]


class Loader:
    """Brings one flow to a target release; per-flow locks serialise reloads of the same flow."""

    def __init__(
        self,
        store: ReleaseReader,
        state: WorkerState,
        compiler: Compiler,
        metrics: WorkerMetrics,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        thread_compile_bytes: int = THREAD_COMPILE_BYTES,
        on_change: Callable[[], None] | None = None,
        take_prepared: Callable[[str, str], LoadedFlow | None] | None = None,
        cache: VersionCache | None = None,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.store = store
        # Verified bytes carried by release events (worker/carried.py): taken instead of a fetch.
        self.offered = OfferedBlobs()
        # Compiled versions by hash, so canaries, promotions and pinned sessions reuse them.
        self.cache = cache if cache is not None else VersionCache(idle_s=1800.0, clock=monotonic)
        self.state = state
        self.compiler = compiler
        self.metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._thread_compile_bytes = thread_compile_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        self.swapped_at = 0.0  # monotonic time of the last swap
        # Called after every swap and every failed load (the heartbeat reports it at once).
        self.on_change = on_change or (lambda: None)
        # A version compiled ahead by a two-phase prepare (worker/prepared.py), taken on its commit.
        self.take_prepared = take_prepared or (lambda flow, digest: None)
        # What a swap applied with `settle` owes (metrics, log line, cache sweep), run `settle_s` later.
        self.after_swap = Settler(settle_s)

    def _lock(self, flow: str) -> asyncio.Lock:
        return self._locks.setdefault(flow, asyncio.Lock())

    async def apply(
        self, target: Target, *, triggered_by: str, forced: bool = False, authoritative: bool = False,
        settle: bool = False,
    ) -> ReloadOutcome:  # fmt: skip
        """Bring the flow to `target` unless this replica already serves exactly that release.

        `forced` (set for change events) retries a version that failed before its backoff expired.
        `authoritative` (set for release records, read by reconcile or after an event): a record not newer
        than what this replica runs or knows, yet different, is re-read and the fresh one wins, even at a
        lower or the same generation (a store reset or restored). A bare event only moves forward.
        """
        self.state.note_target(target)
        async with self._lock(target.flow):
            current = self.state.snapshot.get(target.flow)
            old_hash = current.hash if current else None
            ignored = ReloadOutcome(target.flow, "ignored", old_hash, target.hash, target.generation, 0.0)
            if current is not None and current.serves(target):
                return ignored
            latest = self.state.targets.get(target.flow)
            superseded = latest is not None and latest.generation > target.generation
            behind = current is not None and target.generation <= current.generation
            replacing = False
            if superseded or behind:
                # Not news by generation: a bare event is dropped; a record is checked against a fresh
                # read, which also skips the compile of a release superseded while this one waited.
                fresh = await recheck(self.store, self.state, target, current) if authoritative else None
                if fresh is None:
                    return ignored
                target = fresh
                replacing = current is not None and target.generation <= current.generation
            started = self._monotonic()
            if not self.state.health_of(target.flow).may_attempt(target, started, forced=forced):
                return ReloadOutcome(target.flow, "skipped", old_hash, target.hash, target.generation, 0.0)
            try:
                prepared = await self.prepare_release(target, current)
            except LoadFailure as e:
                return self._failed(target, old_hash, e, started, triggered_by)
            return self._swap(prepared, old_hash, started, triggered_by, replacing=replacing, settle=settle)

    def apply_held(self, target: Target, *, triggered_by: str, settle: bool = True) -> ReloadOutcome | None:
        """`apply` done at once, without waiting for anything, when it can be: no reload of the flow is
        under way, `target` is news by generation, and this replica holds every version it serves
        compiled (a two-phase commit, a canary's promotion or abort, a rollback to a cached version).
        None: it cannot, and `apply` must run (nothing was changed)."""
        lock = self._locks.get(target.flow)
        if lock is not None and lock.locked():
            return None
        current = self.state.snapshot.get(target.flow)
        latest = self.state.targets.get(target.flow)
        if (latest is not None and latest.generation > target.generation) or (
            current is not None and target.generation <= current.generation
        ):
            return None
        started = self._monotonic()
        if not self.state.health_of(target.flow).may_attempt(target, started, forced=True):
            return None
        prepared = self._from_held(target, current)
        if prepared is None:
            return None
        self.state.note_target(target)
        old_hash = current.hash if current else None
        return self._swap(prepared, old_hash, started, triggered_by, replacing=False, settle=settle)

    def _swap(
        self, prepared: LoadedFlow, old_hash: str | None, started: float, triggered_by: str, *,
        replacing: bool, settle: bool,
    ) -> ReloadOutcome:  # fmt: skip
        # Stamped as it was built, just now: nothing awaited between there and here.
        swapped = self.commit(prepared, allow_regression=replacing, settle=settle, stamped=True)
        # Until the swap: the bookkeeping after it (cache, metrics, status) is not the reload.
        duration = (self.swapped_at if swapped else self._monotonic()) - started
        outcome = ReloadOutcome(
            prepared.flow, "loaded", old_hash, prepared.hash, prepared.generation, duration * 1000
        )

        def report() -> None:
            self.metrics.reload_total.labels(outcome.flow, "loaded").inc()
            self.metrics.reload_duration.labels(outcome.flow).observe(duration)
            log_reload(outcome, triggered_by, self.state.replica_id)

        (self.after_swap.later if settle else self.after_swap.now)(report)
        return outcome

    async def prepare_release(self, target: Target, current: LoadedFlow | None) -> LoadedFlow:
        """Everything `target` serves, compiled: its version and its canary's, reusing what is loaded
        (a canary start, a percent change or an abort compiles nothing). Raises LoadFailure."""
        extras = extras_of(target)
        compiled = await self.compiled(target.flow, target.hash, target.generation, current)
        canary = None
        if extras.canary_hash:
            canary = await self.compiled(target.flow, extras.canary_hash, target.generation, current)
        return self._loaded_flow(target, extras, compiled, canary)

    def _from_held(self, target: Target, current: LoadedFlow | None) -> LoadedFlow | None:
        """`prepare_release` from versions held compiled only; None (nothing taken) if one is not."""
        extras = extras_of(target)
        canary = None
        if extras.canary_hash:
            canary = self.held(target.flow, extras.canary_hash, current)
            if canary is None:
                return None
        compiled = self.held(target.flow, target.hash, current)
        if compiled is None:
            held = self.take_prepared(target.flow, target.hash)
            if held is None:
                return None
            compiled = held.compiled
            self.cache.put(target.flow, target.hash, compiled)
        return self._loaded_flow(target, extras, compiled, canary)

    def _loaded_flow(
        self, target: Target, extras: ReleaseExtras, compiled: Runnable, canary: Runnable | None
    ) -> LoadedFlow:
        version = None
        if extras.canary_hash and canary is not None:
            version = CanaryVersion(
                extras.canary_hash, canary, extras.canary_percent, extras.canary_started_at
            )
        return LoadedFlow(
            target.flow, compiled, target.hash, target.generation, self._clock(), version,
            extras.unpin_generation, extras.stamp, extras.revoked,
        )  # fmt: skip

    async def compiled(
        self, flow: str, digest: str, generation: int, current: LoadedFlow | None = None
    ) -> Runnable:
        """One version, compiled: from what serves now, from the cache, or fetched, verified and
        compiled (then cached). Raises LoadFailure."""
        cached = self.held(flow, digest, current)
        if cached is not None:
            return cached
        # A two-phase rollout compiled it already (worker/prepared.py): the commit only swaps.
        held = self.take_prepared(flow, digest)
        if held is not None:
            self.cache.put(flow, digest, held.compiled)
            return held.compiled
        prepared = await self.prepare(VersionRef(flow, digest, generation))
        self.cache.put(flow, digest, prepared.compiled)
        return prepared.compiled

    def held(self, flow: str, digest: str, current: LoadedFlow | None = None) -> Runnable | None:
        """`digest` compiled, if this replica holds it already: served now, or in the version cache."""
        if current is not None:
            if current.hash == digest:
                return current.compiled
            if current.canary is not None and current.canary.hash == digest:
                return current.canary.compiled
        return self.cache.get(flow, digest)

    async def prepare(self, target: Target) -> LoadedFlow:
        """Fetch, verify and compile `target` without serving it. Raises LoadFailure."""
        data = self.offered.take(target.flow, target.hash)
        try:
            data = data if data is not None else await self.store.get_blob(target.flow, target.hash)
        except (RedisError, OSError) as e:
            raise LoadFailure("redis_error", f"fetching the blob failed: {e}") from e
        if data is None:
            raise LoadFailure("missing_blob", f"no stored blob for version {target.hash[:12]}")
        actual = sha256_hex(data)
        if actual != target.hash:
            raise LoadFailure(
                "hash_mismatch",
                f"stored bytes of {target.hash[:12]} hash to {actual[:12]}; refusing to load them",
            )
        compiled = await compile_version(self.compiler, target, data, self._thread_compile_bytes)
        return LoadedFlow(target.flow, compiled, target.hash, target.generation, self._clock())

    def commit(
        self, prepared: LoadedFlow, *, allow_regression: bool = False, settle: bool = False,
        stamped: bool = False,
    ) -> bool:  # fmt: skip
        """Swap in a prepared version unless something newer is already serving. True if swapped.

        `settle`: the version metrics and the cache sweep run a moment later (worker/settle.py).
        `stamped`: `prepared.loaded_at` is the time of the swap already (else it is stamped now)."""
        current = self.state.snapshot.get(prepared.flow)
        if current is not None and prepared.generation <= current.generation and not allow_regression:
            return False
        loaded = prepared if stamped else replace(prepared, loaded_at=self._clock())
        self.state.commit(loaded)
        self.swapped_at = self._monotonic()
        # Versions just swapped out stay cached for pinned sessions (until idle for the session TTL).
        for version in (loaded, loaded.canary, current, current.canary if current else None):
            if version is not None:
                self.cache.put(loaded.flow, version.hash, version.compiled)
        self.state.record_success(prepared.flow)
        self.on_change()
        old = (current.hash, current.generation) if current else None

        def account() -> None:
            self.metrics.set_version(loaded.flow, old, (loaded.hash, loaded.generation))
            self.cache.sweep(serving_versions(self.state))

        (self.after_swap.later if settle else self.after_swap.now)(account)
        return True

    def _failed(
        self, target: Target, old_hash: str | None, e: LoadFailure, started: float, triggered_by: str
    ) -> ReloadOutcome:
        self.after_swap.flush()  # what an earlier swap owes is reported first
        error = LoadError(target.flow, target.hash, target.generation, e.reason, e.message, self._clock())
        now = self._monotonic()
        health = self.state.record_failure(error, now)
        self.metrics.reload_total.labels(target.flow, "failed").inc()
        self.metrics.reload_errors.labels(target.flow, e.reason).inc()
        self.on_change()
        outcome = ReloadOutcome(
            target.flow, "failed", old_hash, target.hash, target.generation, (now - started) * 1000, error
        )
        log_reload(
            outcome,
            triggered_by,
            self.state.replica_id,
            reason=e.reason,
            error=e.message,
            consecutive_failures=health.consecutive_failures,
            retry_in_s=round(max(0.0, health.retry_at - now), 1),
        )
        return outcome
