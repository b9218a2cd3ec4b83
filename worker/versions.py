"""Compiled versions a replica keeps besides what it serves now: a canary's, and those sessions are pinned to.

Every version the loader compiles goes into the `VersionCache` by (flow, hash), so a promote, an abort,
a re-activation or a session pinned to an older version reuses it instead of fetching and compiling it
again. A version the current snapshot does not serve is evicted once nothing has used it for `idle_s`
(the session TTL): a pinned session keeps its version loaded simply by running. An evicted version is
closed (its components' HTTP clients) once no run can still be using it: `close_after_s` later, the
longest a run may take.

>>> cache = VersionCache(idle_s=10.0, clock=lambda: 0.0)
>>> cache.put("qa", "ab" * 32, "compiled")
>>> cache.get("qa", "ab" * 32)
'compiled'
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from worker.ports import Runnable, Target

log = logging.getLogger(__name__)

# However long the TTL, a replica never keeps more than this many unserved versions (oldest use first).
MAX_IDLE_VERSIONS = 64


@dataclass(frozen=True)
class VersionRef:
    """One version of a flow to fetch and compile (a Target without a release around it)."""

    flow: str
    hash: str
    generation: int


@dataclass(frozen=True)
class ReleaseExtras:
    """What a target says besides flow, hash and generation; a bare change event carries only `stamp`.

    `stamp` is the release's `activated_at` (an event's `at`): with the generation it identifies one
    release, even when a restored store hands out a generation a second time (docs/protocol.md).
    """

    canary_hash: str | None = None
    canary_percent: float = 0.0
    canary_started_at: float = 0.0
    unpin_generation: int = 0
    stamp: float = 0.0
    revoked: frozenset[str] = frozenset()


def extras_of(target: Target) -> ReleaseExtras:
    """Read duck-typed: a `cluster.store.release.Release` has these fields, other targets may not."""
    unpin = getattr(target, "unpin_generation", 0)
    unpin = unpin if isinstance(unpin, int) and not isinstance(unpin, bool) else 0
    stamp = _float(getattr(target, "activated_at", getattr(target, "at", 0.0)))
    listed = getattr(target, "revoked", ())
    revoked = frozenset(h for h in listed if isinstance(h, str)) if isinstance(listed, tuple) else frozenset()
    canary = getattr(target, "canary_hash", None)
    if not isinstance(canary, str) or not canary:
        return ReleaseExtras(unpin_generation=unpin, stamp=stamp, revoked=revoked)
    percent = _float(getattr(target, "canary_percent", 0.0))
    started = _float(getattr(target, "canary_started_at", 0.0))
    return ReleaseExtras(canary, percent, started, unpin, stamp, revoked)


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


@dataclass
class _Entry:
    compiled: Any
    last_used: float


class VersionCache:
    """(flow, hash) -> compiled version, with idle eviction. Only touched from the event loop."""

    def __init__(
        self,
        *,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
        close_after_s: float | None = None,
    ) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        # None: evicted versions are left to the garbage collector (no event loop needed).
        self.close_after_s = close_after_s
        self._retiring: dict[int, tuple[asyncio.TimerHandle, Any]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, flow: str, digest: str) -> Runnable | None:
        """The compiled version, marked as used now; None if this replica does not hold it."""
        entry = self._entries.get((flow, digest))
        if entry is None:
            return None
        entry.last_used = self._clock()
        compiled: Runnable = entry.compiled
        return compiled

    def put(self, flow: str, digest: str, compiled: Any) -> None:
        self._entries[(flow, digest)] = _Entry(compiled, self._clock())

    def touch(self, flow: str, digest: str) -> None:
        entry = self._entries.get((flow, digest))
        if entry is not None:
            entry.last_used = self._clock()

    def sweep(self, serving: Collection[tuple[str, str]]) -> list[tuple[str, str]]:
        """Evict versions not in `serving` that have been idle longer than `idle_s`; returns them."""
        now = self._clock()
        idle = sorted(
            ((key, e.last_used) for key, e in self._entries.items() if key not in serving),
            key=lambda item: item[1],
        )
        over = max(0, len(idle) - MAX_IDLE_VERSIONS)
        evicted = [key for i, (key, used) in enumerate(idle) if i < over or now - used > self.idle_s]
        for key in evicted:
            entry = self._entries.pop(key)
            log.info("evicted unused version flow=%s hash=%s", key[0], key[1][:12])
            self._retire(entry.compiled)
        return evicted

    def _retire(self, compiled: Any) -> None:
        # A version with nothing to close is not kept alive for it: its memory goes with the eviction.
        if self.close_after_s is None or not getattr(
            compiled, "holds_resources", hasattr(compiled, "aclose")
        ):
            return
        handle = asyncio.get_running_loop().call_later(self.close_after_s, self._close_now, compiled)
        self._retiring[id(compiled)] = (handle, compiled)

    def _close_now(self, compiled: Any) -> None:
        self._retiring.pop(id(compiled), None)
        task = asyncio.get_running_loop().create_task(_close(compiled))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every version held or waiting to be closed (at shutdown, once runs have drained)."""
        pending = [compiled for _, compiled in self._retiring.values()]
        for handle, _ in self._retiring.values():
            handle.cancel()
        self._retiring.clear()
        pending += [entry.compiled for entry in self._entries.values()]
        self._entries.clear()
        await asyncio.gather(*self._closing, *(_close(c) for c in pending if hasattr(c, "aclose")))


async def _close(compiled: Any) -> None:
    try:
        await compiled.aclose()
    except Exception:  # a component's cleanup must never take the replica down
        log.exception("closing a retired version failed")
