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
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from cluster.errors import FlowValidationError, MissingSearchProvider, MissingSecret
from cluster.flow.hashing import sha256_hex
from cluster.logfmt import logfmt_value
from worker.carried import OfferedBlobs
from worker.metrics import WorkerMetrics
from worker.ports import Compiler, ReleaseReader, Runnable, Target
from worker.state import CanaryVersion, LoadedFlow, LoadError, WorkerState, serving_versions
from worker.versions import VersionCache, VersionRef, extras_of

log = logging.getLogger(__name__)

# Documents above this size are compiled in a thread so a big compile never stalls running requests.
THREAD_COMPILE_BYTES = 64 * 1024


class LoadFailure(Exception):
    """A version could not be prepared; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ReloadOutcome:
    """What one `Loader.apply` did. `result`: loaded, ignored, skipped or failed."""

    flow: str
    result: str
    old_hash: str | None
    new_hash: str
    generation: int
    duration_ms: float
    error: LoadError | None = None


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

    def _lock(self, flow: str) -> asyncio.Lock:
        return self._locks.setdefault(flow, asyncio.Lock())

    async def apply(
        self, target: Target, *, triggered_by: str, forced: bool = False, authoritative: bool = False
    ) -> ReloadOutcome:
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
                fresh = await self._recheck(target, current) if authoritative else None
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
            swapped = self.commit(prepared, allow_regression=replacing)
            # Until the swap: the bookkeeping after it (cache, metrics, status) is not the reload.
            duration = (self.swapped_at if swapped else self._monotonic()) - started
            self.metrics.reload_total.labels(target.flow, "loaded").inc()
            self.metrics.reload_duration.labels(target.flow).observe(duration)
            outcome = ReloadOutcome(
                target.flow, "loaded", old_hash, target.hash, target.generation, duration * 1000
            )
            self._log(outcome, triggered_by)
            return outcome

    async def prepare_release(self, target: Target, current: LoadedFlow | None) -> LoadedFlow:
        """Everything `target` serves, compiled: its version and its canary's, reusing what is loaded
        (a canary start, a percent change or an abort compiles nothing). Raises LoadFailure."""
        extras = extras_of(target)
        compiled = await self.compiled(target.flow, target.hash, target.generation, current)
        canary = None
        if extras.canary_hash:
            canary_compiled = await self.compiled(target.flow, extras.canary_hash, target.generation, current)
            canary = CanaryVersion(
                extras.canary_hash, canary_compiled, extras.canary_percent, extras.canary_started_at
            )
        return LoadedFlow(
            target.flow, compiled, target.hash, target.generation, self._clock(), canary,
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
        try:
            if len(data) > self._thread_compile_bytes:
                compiled = await asyncio.to_thread(self.compiler, data)
            else:
                compiled = self.compiler(data)
        except MissingSecret as e:  # this replica's configuration, not the version, is at fault
            raise LoadFailure("missing_secret", str(e)) from e
        except MissingSearchProvider as e:  # the same: a WebSearch node and no provider configured here
            raise LoadFailure("missing_search_provider", str(e)) from e
        except FlowValidationError as e:
            raise LoadFailure("invalid_document", f"invalid document: {e}") from e
        except Exception as e:  # a component's build may raise anything; it must not kill the loader
            log.exception("compiling %s %s failed", target.flow, target.hash[:12])
            raise LoadFailure("compile_error", f"compile failed: {type(e).__name__}: {e}") from e
        return LoadedFlow(target.flow, compiled, target.hash, target.generation, self._clock())

    async def _recheck(self, target: Target, current: LoadedFlow | None) -> Target | None:
        """The flow's release record read afresh, if this replica must move to it; None otherwise."""
        try:
            fresh = await self.store.get_release(target.flow)
        except (RedisError, OSError):
            return None  # the next reconcile reads it again
        if fresh is None:
            return None
        self.state.targets[target.flow] = fresh  # the record, not the newest number seen, is the truth
        if current is not None and current.serves(fresh):
            return None  # a stale read raced a newer event; nothing to do
        if current is not None and fresh.generation <= current.generation:
            log.warning(
                "flow=%s replica=%s release record generation %d (%s) replaces loaded generation %d (%s), "
                "which is not older: store reset or restored? following the release record",
                target.flow, self.state.replica_id, fresh.generation, fresh.hash[:12],
                current.generation, current.hash[:12],
            )  # fmt: skip
        return fresh

    def commit(self, prepared: LoadedFlow, *, allow_regression: bool = False) -> bool:
        """Swap in a prepared version unless something newer is already serving. True if swapped."""
        current = self.state.snapshot.get(prepared.flow)
        if current is not None and prepared.generation <= current.generation and not allow_regression:
            return False
        loaded = replace(prepared, loaded_at=self._clock())
        self.state.commit(loaded)
        self.swapped_at = self._monotonic()
        self._keep_versions(current, loaded)
        self.state.record_success(prepared.flow)
        self.metrics.set_version(
            prepared.flow,
            (current.hash, current.generation) if current else None,
            (loaded.hash, loaded.generation),
        )
        self.on_change()
        return True

    def _keep_versions(self, old: LoadedFlow | None, new: LoadedFlow) -> None:
        """Versions just swapped out stay cached for pinned sessions (until idle for the session TTL)."""
        for version in (new, new.canary, old, old.canary if old else None):
            if version is not None:
                self.cache.put(new.flow, version.hash, version.compiled)
        self.cache.sweep(serving_versions(self.state))

    def _failed(
        self, target: Target, old_hash: str | None, e: LoadFailure, started: float, triggered_by: str
    ) -> ReloadOutcome:
        error = LoadError(target.flow, target.hash, target.generation, e.reason, e.message, self._clock())
        now = self._monotonic()
        health = self.state.record_failure(error, now)
        self.metrics.reload_total.labels(target.flow, "failed").inc()
        self.metrics.reload_errors.labels(target.flow, e.reason).inc()
        self.on_change()
        outcome = ReloadOutcome(
            target.flow, "failed", old_hash, target.hash, target.generation, (now - started) * 1000, error
        )
        self._log(
            outcome,
            triggered_by,
            reason=e.reason,
            error=e.message,
            consecutive_failures=health.consecutive_failures,
            retry_in_s=round(max(0.0, health.retry_at - now), 1),
        )
        return outcome

    def _log(self, outcome: ReloadOutcome, triggered_by: str, **failure: Any) -> None:
        # One structured line per reload attempt (logfmt); `extra` carries the fields for JSON formatters.
        fields: dict[str, Any] = {
            "flow": outcome.flow,
            "old_hash": outcome.old_hash or "-",
            "new_hash": outcome.new_hash,
            "generation": outcome.generation,
            "triggered_by": triggered_by,
            "duration_ms": round(outcome.duration_ms, 3),
            "result": outcome.result,
            "replica": self.state.replica_id,
            **failure,
        }
        line = " ".join(f"{key}={logfmt_value(value)}" for key, value in fields.items())
        level = logging.INFO if outcome.result == "loaded" else logging.WARNING
        log.log(level, "reload %s", line, extra={"reload": fields})
