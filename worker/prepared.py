"""Versions compiled ahead of a two-phase commit, and this replica's answer (ACK / NACK) to each prepare.

On a `prepare` event the replica fetches, verifies and compiles the announced version without serving
it, holds it here, and reports the outcome in its status key (`prepared.<flow>`), which the control plane
polls. When the release record then names that hash (the commit), the loader takes the held version and
swaps it in with one assignment: nothing is fetched or compiled on the commit path. A held version is
dropped on `abort`, when a newer prepare of the flow replaces it, when the release moves past it, or when
it has waited longer than its rollout's timeout (plus a grace period).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster.store.events import Abort, Prepare
from worker.carried import carried_blob
from worker.loader import Loader, LoadFailure
from worker.state import LoadedFlow, WorkerState

log = logging.getLogger(__name__)

# How long past its rollout's timeout a prepared version is kept (the commit may be a little late).
EXPIRY_GRACE_S = 30.0


@dataclass(frozen=True)
class PrepareReply:
    """What this replica answered to one prepare; `ok` False is a NACK with `reason` and `message`."""

    rollout: str
    hash: str
    generation: int
    ok: bool
    reason: str | None
    message: str | None
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout,
            "hash": self.hash,
            "generation": self.generation,
            "ok": self.ok,
            "reason": self.reason,
            "message": self.message,
            "at": self.at,
        }


@dataclass(frozen=True)
class Held:
    rollout: str
    loaded: LoadedFlow
    expires_at: float  # time.monotonic()


class PreparedVersions:
    """Per flow: at most one held version and the latest prepare reply."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._held: dict[str, Held] = {}
        self.replies: dict[str, PrepareReply] = {}
        self._monotonic = monotonic

    def hold(self, rollout: str, loaded: LoadedFlow, timeout_s: float) -> None:
        expires = self._monotonic() + timeout_s + EXPIRY_GRACE_S
        self._held[loaded.flow] = Held(rollout, loaded, expires)

    def take(self, flow: str, digest: str) -> LoadedFlow | None:
        """The held compiled version of `digest` (removed from the holder), if any and not expired."""
        held = self._held.get(flow)
        if held is None or held.loaded.hash != digest:
            return None
        del self._held[flow]
        if self._monotonic() > held.expires_at:
            return None
        return held.loaded

    def drop(self, flow: str, rollout: str | None = None) -> bool:
        """Forget the held version of `flow` (only if it belongs to `rollout`, when given)."""
        held = self._held.get(flow)
        if held is None or (rollout is not None and held.rollout != rollout):
            return False
        del self._held[flow]
        return True

    def held_hash(self, flow: str) -> str | None:
        held = self._held.get(flow)
        return held.loaded.hash if held else None

    def expire(self) -> None:
        now = self._monotonic()
        for flow in [f for f, h in self._held.items() if now > h.expires_at]:
            log.info("dropping prepared version flow=%s: its rollout was never committed", flow)
            del self._held[flow]

    def status(self) -> dict[str, Any]:
        """The `prepared` part of the replica status: the latest reply per flow."""
        self.expire()
        return {flow: reply.as_dict() for flow, reply in sorted(self.replies.items())}


class Preparer:
    """Handles `prepare` and `abort` events for one replica."""

    def __init__(
        self,
        loader: Loader,
        state: WorkerState,
        prepared: PreparedVersions,
        *,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.loader = loader
        self.state = state
        self.prepared = prepared
        self.on_change = on_change or (lambda: None)
        self._clock = clock

    async def prepare(self, event: Prepare) -> PrepareReply:
        """Compile the announced version and hold it; the reply goes into the status at once."""
        current = self.state.snapshot.get(event.flow)
        if current is not None and current.hash == event.hash:
            return self._reply(event, None)  # already serving it: ready without compiling
        held = self.prepared.take(event.flow, event.hash)
        if held is not None:
            # Prepared by an earlier rollout of the same version: hold it for this one instead.
            self.prepared.hold(event.rollout, held, event.timeout_s)
            return self._reply(event, None)
        compiled = self.loader.held(event.flow, event.hash, current)
        if compiled is not None:
            # Compiled here before (a canary, a version swapped out, a pinned session's): nothing to
            # fetch or compile; it was verified when it was first loaded.
            loaded = LoadedFlow(event.flow, compiled, event.hash, event.generation, self._clock())
            self.prepared.hold(event.rollout, loaded, event.timeout_s)
            return self._reply(event, None)
        offered = carried_blob(event)  # a small version rides on the event: no fetch
        if offered is not None:
            self.loader.offered.put(event.flow, *offered)
        try:
            loaded = await self.loader.prepare(event)
        except LoadFailure as e:
            self.prepared.drop(event.flow)
            return self._reply(event, e)
        finally:
            if offered is not None:
                self.loader.offered.drop(event.flow, offered[0])
        self.prepared.hold(event.rollout, loaded, event.timeout_s)
        return self._reply(event, None)

    def abort(self, event: Abort) -> None:
        if self.prepared.drop(event.flow, event.rollout):
            log.info(
                "rollout aborted flow=%s rollout=%s replica=%s: dropped the prepared version (%s)",
                event.flow,
                event.rollout,
                self.state.replica_id,
                event.reason or "no reason given",
            )

    def _reply(self, event: Prepare, failure: LoadFailure | None) -> PrepareReply:
        reply = PrepareReply(
            event.rollout,
            event.hash,
            event.generation,
            failure is None,
            failure.reason if failure else None,
            failure.message if failure else None,
            self._clock(),
        )
        self.prepared.replies[event.flow] = reply
        log.log(
            logging.INFO if reply.ok else logging.WARNING,
            "prepare flow=%s hash=%s rollout=%s replica=%s result=%s%s",
            event.flow,
            event.hash[:12],
            event.rollout,
            self.state.replica_id,
            "ready" if reply.ok else "nack",
            f" reason={reply.reason} error={reply.message!r}" if failure else "",
        )
        self.on_change()
        return reply
