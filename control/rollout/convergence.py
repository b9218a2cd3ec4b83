"""Pure: how far the live replicas are on a flow's current release, and whether it must be rolled back.

Used by `GET /v1/flows/{name}/rollout` (and `flowfleet status FLOW --wait`), by the control plane's
metrics, and by the automatic rollback (control/rollout/guard.py). Statuses are the replicas' heartbeat JSON
(docs/worker.md); unknown or missing fields are tolerated.

>>> statuses = [{"replica_id": "a", "flows": {"qa": {"hash": "h2", "generation": 2}}},
...             {"replica_id": "b", "flows": {"qa": {"hash": "h1", "generation": 1}}}]
>>> convergence("qa", "h2", 2, statuses).line()
'1/2 replicas on generation 2'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cluster.store.fleet import serves_release
from cluster.store.release import AUTO_ROLLBACK_ACTOR as AUTO_ROLLBACK_ACTOR
from control.rollout.acks import live_replicas, prepare_reply


@dataclass(frozen=True)
class ReplicaProgress:
    """One live replica on one flow. `state`: current, behind or failed (it cannot load the release)."""

    replica: str
    hash: str | None
    generation: int | None
    state: str
    reason: str | None = None
    error: str | None = None
    consecutive_failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Convergence:
    flow: str
    hash: str | None
    generation: int | None
    replicas: tuple[ReplicaProgress, ...]

    @property
    def current(self) -> int:
        return sum(1 for r in self.replicas if r.state == "current")

    @property
    def failed(self) -> list[ReplicaProgress]:
        return [r for r in self.replicas if r.state == "failed"]

    @property
    def done(self) -> bool:
        """Every live replica runs the current release (vacuously true with no live replica)."""
        return self.current == len(self.replicas)

    def line(self) -> str:
        return f"{self.current}/{len(self.replicas)} replicas on generation {self.generation}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "hash": self.hash,
            "generation": self.generation,
            "current": self.current,
            "total": len(self.replicas),
            "done": self.done,
            "failed": [r.replica for r in self.failed],
            "replicas": [r.as_dict() for r in self.replicas],
        }


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def progress(
    replica: str,
    status: Mapping[str, Any],
    flow: str,
    digest: str | None,
    generation: int | None,
    stamp: float | None = None,
) -> ReplicaProgress:
    """Current means the release itself (version and generation, and its stamp when given), not just
    its generation number, which a restored store may reuse for another version."""
    flows = status.get("flows")
    entry = flows.get(flow) if isinstance(flows, Mapping) else None
    entry = entry if isinstance(entry, Mapping) else {}
    served = entry.get("hash") if isinstance(entry.get("hash"), str) else None
    gen = _int(entry.get("generation"))
    if serves_release(entry, digest, generation, stamp):
        return ReplicaProgress(replica, served, gen, "current")
    error = entry.get("last_error")
    if digest is not None and isinstance(error, Mapping) and error.get("hash") == digest:
        count = _int(entry.get("consecutive_failures")) or 1
        return ReplicaProgress(
            replica, served, gen, "failed", str(error.get("reason")), str(error.get("message")), count
        )
    reply = prepare_reply(status, flow)
    if digest is not None and reply is not None and reply.get("hash") == digest and reply.get("ok") is False:
        return ReplicaProgress(
            replica, served, gen, "failed", str(reply.get("reason")), str(reply.get("message")), 0
        )
    return ReplicaProgress(replica, served, gen, "behind")


def convergence(
    flow: str,
    digest: str | None,
    generation: int | None,
    statuses: Iterable[Mapping[str, Any]],
    *,
    stamp: float | None = None,
) -> Convergence:
    """Progress of every live (not draining) replica towards release `generation` (hash `digest`;
    `stamp`, the record's activated_at, tells two releases of one generation apart after a restore)."""
    live = live_replicas(statuses)
    rows = tuple(progress(rid, live[rid], flow, digest, generation, stamp) for rid in sorted(live))
    return Convergence(flow, digest, generation, rows)


def replicas_per_generation(statuses: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], int]:
    """(flow, generation) -> how many live replicas serve it."""
    counts: Counter[tuple[str, int]] = Counter()
    for status in live_replicas(statuses).values():
        flows = status.get("flows")
        for flow, entry in flows.items() if isinstance(flows, Mapping) else []:
            gen = _int(entry.get("generation")) if isinstance(entry, Mapping) else None
            if gen is not None:
                counts[(str(flow), gen)] += 1
    return dict(counts)


def rollback_reason(
    state: Convergence, *, activated_by: str, max_failures: int, max_replicas: int
) -> str | None:
    """Why the current release must be rolled back automatically, or None.

    A release made by the automatic rollback itself is never rolled back again (no ping-pong between
    two versions that both fail somewhere); `max_failures` / `max_replicas` of 0 disable their rule.
    """
    if activated_by == AUTO_ROLLBACK_ACTOR or state.hash is None:
        return None
    failed = state.failed
    repeated = [r for r in failed if max_failures > 0 and r.consecutive_failures >= max_failures]
    if repeated:
        return (
            f"version {state.hash[:12]} (generation {state.generation}) failed to load "
            f"{max_failures}+ consecutive times on " + _listing(repeated)
        )
    if max_replicas > 0 and len(failed) >= max_replicas:
        return (
            f"version {state.hash[:12]} (generation {state.generation}) was refused by "
            f"{len(failed)} replica(s): " + _listing(failed)
        )
    return None


def _listing(rows: list[ReplicaProgress]) -> str:
    return "; ".join(f"{r.replica} ({r.reason}: {r.error})" for r in rows)
