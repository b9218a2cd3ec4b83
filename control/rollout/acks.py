"""Pure decisions of a two-phase cutover: which replicas are live, who is ready, who refused, who is late.

Replicas answer a prepare in their status key (worker/prepared.py):

    {"replica_id": "web-1", "state": "serving",
     "prepared": {"support_qa": {"rollout": "9f2c", "hash": "ab12...", "ok": false,
                                 "reason": "invalid_document", "message": "unknown component ..."}}}

>>> statuses = [{"replica_id": "a", "prepared": {"qa": {"rollout": "r1", "hash": "h", "ok": True}}},
...             {"replica_id": "b", "prepared": {}}]
>>> tally = assess("qa", "r1", "h", {"a", "b"}, statuses)
>>> (sorted(tally.ready), sorted(tally.pending), tally.done)
(['a'], ['b'], False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReplicaFailure:
    """Why one replica is not ready: a NACK's reason and message, or `timeout` / `gone`."""

    replica: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"replica": self.replica, "reason": self.reason, "message": self.message}

    def __str__(self) -> str:
        return f"{self.replica}: {self.reason}: {self.message}"


@dataclass(frozen=True)
class Tally:
    """Where the replicas waited for stand. `gone` replicas (status expired, or draining) are no longer
    waited for; `done` once nobody is pending."""

    ready: frozenset[str] = frozenset()
    nacked: Mapping[str, ReplicaFailure] = field(default_factory=dict)
    pending: frozenset[str] = frozenset()
    gone: frozenset[str] = frozenset()

    @property
    def done(self) -> bool:
        return not self.pending

    @property
    def all_ready(self) -> bool:
        return self.done and not self.nacked

    def failures(self, *, timed_out: bool = False) -> list[ReplicaFailure]:
        """Every NACK, plus (after the deadline) every replica that never answered."""
        failures = list(self.nacked.values())
        if timed_out:
            failures += [
                ReplicaFailure(r, "timeout", "did not report ready before the prepare timeout")
                for r in self.pending
            ]
        return sorted(failures, key=lambda f: f.replica)


def replica_id(status: Mapping[str, Any]) -> str:
    return str(status.get("replica_id") or status.get("id") or "?")


def live_replicas(statuses: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Replicas whose status has not expired (the store only returns those) and that are not draining."""
    return {replica_id(s): s for s in statuses if s.get("state") != "draining"}


def prepare_targets(statuses: Iterable[Mapping[str, Any]]) -> list[str]:
    """The live replicas a prepare waits for: those also subscribed to the event channel. One that is not
    (starting, or reconnecting) cannot hear the prepare; it reads the release record once subscribed."""
    return sorted(rid for rid, s in live_replicas(statuses).items() if s.get("subscribed") is not False)


def prepare_reply(status: Mapping[str, Any], flow: str) -> Mapping[str, Any] | None:
    prepared = status.get("prepared")
    if not isinstance(prepared, Mapping):
        return None
    reply = prepared.get(flow)
    return reply if isinstance(reply, Mapping) else None


def assess(
    flow: str, rollout: str, digest: str, waiting: Iterable[str], statuses: Iterable[Mapping[str, Any]]
) -> Tally:
    """The replicas in `waiting` sorted into ready / NACKed / pending / gone for one rollout."""
    live = live_replicas(statuses)
    ready: set[str] = set()
    nacked: dict[str, ReplicaFailure] = {}
    pending: set[str] = set()
    gone: set[str] = set()
    for rid in waiting:
        status = live.get(rid)
        if status is None:
            gone.add(rid)
            continue
        reply = prepare_reply(status, flow)
        if reply is None or reply.get("rollout") != rollout or reply.get("hash") != digest:
            pending.add(rid)
        elif reply.get("ok") is True:
            ready.add(rid)
        else:
            nacked[rid] = ReplicaFailure(
                rid, str(reply.get("reason") or "nack"), str(reply.get("message") or "refused")
            )
    return Tally(frozenset(ready), nacked, frozenset(pending), frozenset(gone))
