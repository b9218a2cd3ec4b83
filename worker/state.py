"""The replica's loaded flows as one immutable snapshot, plus per-flow load-failure bookkeeping.

A hot swap is one reference assignment: `WorkerState.commit` builds a new `Snapshot` and replaces
`state.snapshot`; a run that already took `state.snapshot.get(flow)` keeps the version it started with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from worker.ports import Runnable, Target
from worker.served import Served, version_header_pairs
from worker.versions import extras_of

# Failures that come from the version itself: every replica would fail it the same way, so retrying
# soon is pointless and staying unready for it would take the whole fleet out of the load balancer.
CONTENT_REASONS = frozenset({"hash_mismatch", "invalid_document", "missing_blob", "compile_error"})

BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0


@dataclass(frozen=True)
class CanaryVersion:
    """A canary served next to the stable version for `percent` of the request keys."""

    hash: str
    compiled: Runnable
    percent: float
    started_at: float
    # What a response served by this version says about it, encoded once per version, not per run.
    headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", version_header_pairs(self.hash, "canary"))


@dataclass(frozen=True)
class LoadedFlow:
    """One release, ready to serve: the stable version, and optionally a canary (docs/canary.md).

    `loaded_at` is unix seconds of the swap; session pins made before `unpin_generation` are ignored,
    and so are pins to a `revoked` version. `stamp` is the release record's `activated_at`: with the
    generation it names the release (a restored store may hand out a generation twice, never a stamp).
    """

    flow: str
    compiled: Runnable
    hash: str
    generation: int
    loaded_at: float
    canary: CanaryVersion | None = None
    unpin_generation: int = 0
    stamp: float = 0.0
    revoked: frozenset[str] = frozenset()
    # The stable version's response headers, encoded once per version (see version_header_pairs), and
    # what routing hands a run of the stable version or of the canary (made once, not per run).
    headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)
    stable: Served = field(init=False, repr=False, compare=False)
    canary_served: Served | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c, headers = self.canary, version_header_pairs(self.hash, "stable")
        stable = Served(self.compiled, self.hash, self.generation, "stable", False, headers)
        canary = c and Served(c.compiled, c.hash, self.generation, "canary", False, c.headers)
        for name, value in (("headers", headers), ("stable", stable), ("canary_served", canary)):
            object.__setattr__(self, name, value)

    @property
    def epoch(self) -> float:
        """What run counters are grouped by: the canary's start, 0 without a canary."""
        return self.canary.started_at if self.canary else 0.0

    def serves(self, target: Target) -> bool:
        """True when this is exactly the release `target` names: its generation and stamp, and
        everything it decides (stable, canary, unpin mark, revoked versions). Equal generations alone
        prove nothing: after a restore, generation 2 may be another release than the one loaded."""
        x = extras_of(target)
        c = self.canary
        mine = (self.generation, self.hash, self.stamp, self.unpin_generation, self.revoked)
        theirs = (target.generation, target.hash, x.stamp, x.unpin_generation, x.revoked)
        canary = None if c is None else (c.hash, c.percent, c.started_at)
        wanted = None if x.canary_hash is None else (x.canary_hash, x.canary_percent, x.canary_started_at)
        return mine == theirs and canary == wanted

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flow": self.flow,
            "hash": self.hash,
            "generation": self.generation,
            "loaded_at": self.loaded_at,
        }
        if self.canary is not None:
            out["canary"] = {"hash": self.canary.hash, "percent": self.canary.percent}
        return out


@dataclass(frozen=True)
class Snapshot:
    """Every flow this replica serves; never mutated, only replaced."""

    flows: Mapping[str, LoadedFlow] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, flow: str) -> LoadedFlow | None:
        return self.flows.get(flow)

    def replace(self, loaded: LoadedFlow) -> Snapshot:
        flows = dict(self.flows)
        flows[loaded.flow] = loaded
        return Snapshot(MappingProxyType(flows))


@dataclass(frozen=True)
class LoadError:
    """Why one version of a flow could not be loaded. `reason` is the metric label."""

    flow: str
    hash: str
    generation: int
    reason: str
    message: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "generation": self.generation,
            "reason": self.reason,
            "message": self.message,
            "at": self.at,
        }


@dataclass(frozen=True)
class FlowHealth:
    """Load-failure bookkeeping of one flow; the backoff applies to the hash that failed."""

    last_error: LoadError | None = None
    consecutive_failures: int = 0
    retry_at: float = 0.0  # time.monotonic() before which the failed hash is not retried

    def may_attempt(self, target: Target, now: float, *, forced: bool = False) -> bool:
        """False while `target` is the version that failed and its backoff has not expired.

        `forced` (a change event newer than the failed attempt) retries at once: an operator who
        re-activates a repaired version should not wait out the backoff; reconcile passes never force.
        """
        err = self.last_error
        if err is None or err.hash != target.hash:
            return True
        if forced and target.generation > err.generation:
            return True
        return now >= self.retry_at

    def failed(self, error: LoadError, now: float) -> FlowHealth:
        count = self.consecutive_failures + 1
        return FlowHealth(error, count, now + backoff_delay(count))

    def succeeded(self) -> FlowHealth:
        return FlowHealth()


def backoff_delay(
    consecutive_failures: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S
) -> float:
    """Capped exponential delay before a failed version is tried again: 2, 4, 8 ... 300 s."""
    exponent = min(max(consecutive_failures - 1, 0), 16)
    return float(min(cap, base * 2**exponent))


@dataclass(frozen=True)
class FlowReadiness:
    flow: str
    state: str  # "loaded", "updating", "loaded_with_error", "refused", "pending"
    target_hash: str
    target_generation: int
    loaded_hash: str | None
    loaded_generation: int | None

    @property
    def blocks_readiness(self) -> bool:
        return self.state == "pending"


class WorkerState:
    """The replica's mutable holder: the current snapshot, the latest known targets, the failures.

    Only ever touched from the event loop thread, so plain attribute updates are atomic.
    """

    def __init__(self, replica_id: str, *, clock: Any = time.time) -> None:
        self.replica_id = replica_id
        self.snapshot = Snapshot()
        self.targets: dict[str, Target] = {}
        self.health: dict[str, FlowHealth] = {}
        self.synced = False  # one full reconcile has completed since start
        self.draining = False
        self._clock = clock

    def note_target(self, target: Target) -> None:
        """Remember the newest release seen for a flow (events may arrive reordered)."""
        known = self.targets.get(target.flow)
        if known is None or target.generation >= known.generation:
            self.targets[target.flow] = target

    def commit(self, loaded: LoadedFlow) -> LoadedFlow | None:
        """The swap: one reference assignment. Returns the version it replaced."""
        old = self.snapshot.get(loaded.flow)
        self.snapshot = self.snapshot.replace(loaded)
        return old

    def health_of(self, flow: str) -> FlowHealth:
        return self.health.get(flow, FlowHealth())

    def record_failure(self, error: LoadError, now: float) -> FlowHealth:
        health = self.health_of(error.flow).failed(error, now)
        self.health[error.flow] = health
        return health

    def record_success(self, flow: str) -> None:
        self.health.pop(flow, None)

    def readiness(self) -> list[FlowReadiness]:
        """Per flow with a known release record: is it served, and does it hold readiness back?"""
        out = []
        for flow, target in sorted(self.targets.items()):
            loaded = self.snapshot.get(flow)
            err = self.health_of(flow).last_error
            failed_current = err is not None and err.hash == target.hash
            if loaded is not None and loaded.hash == target.hash:
                state = "loaded"
            elif loaded is not None:
                # A newer version is being fetched or failed: the replica still serves this flow.
                state = "loaded_with_error" if failed_current else "updating"
            elif failed_current and err is not None and err.reason in CONTENT_REASONS:
                state = "refused"
            else:
                state = "pending"
            out.append(
                FlowReadiness(
                    flow,
                    state,
                    target.hash,
                    target.generation,
                    loaded.hash if loaded else None,
                    loaded.generation if loaded else None,
                )
            )
        return out

    def is_ready(self) -> bool:
        """Ready once a full reconcile has run and no flow is still waiting for its first load.

        A flow whose newest version failed while an older one serves counts as ready (it is serving),
        and so does a flow whose only version was refused for its content: every replica refuses it
        alike, and going unready would pull the whole fleet out of the load balancer for every flow.
        """
        if not self.synced or self.draining:
            return False
        return not any(r.blocks_readiness for r in self.readiness())

    def status(self) -> dict[str, Any]:
        """The per-flow part of the replica status written to Redis."""
        flows: dict[str, Any] = {}
        for flow in sorted(set(self.snapshot.flows) | set(self.targets) | set(self.health)):
            loaded = self.snapshot.get(flow)
            health = self.health_of(flow)
            flows[flow] = {
                "hash": loaded.hash if loaded else None,
                "generation": loaded.generation if loaded else None,
                "loaded_at": loaded.loaded_at if loaded else None,
                "last_error": health.last_error.as_dict() if health.last_error else None,
                "consecutive_failures": health.consecutive_failures,
            }
            if loaded is not None:
                flows[flow]["activated_at"] = loaded.stamp  # which release of that generation
            if loaded is not None and loaded.canary is not None:
                flows[flow]["canary"] = {"hash": loaded.canary.hash, "percent": loaded.canary.percent}
        return flows


def serving_versions(state: WorkerState) -> set[tuple[str, str]]:
    """(flow, hash) of every version the snapshot serves as stable or canary (never evicted)."""
    serving = set()
    for flow, loaded in state.snapshot.flows.items():
        serving.add((flow, loaded.hash))
        if loaded.canary is not None:
            serving.add((flow, loaded.canary.hash))
    return serving
