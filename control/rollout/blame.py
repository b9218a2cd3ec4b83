"""Pure: which replica load failures the automatic rollback acts on, and which version they belong to.

Only failures the version itself causes count: an invalid document (a component missing included), a
corrupt blob (`hash_mismatch`), a compile error. Transient ones (`redis_error`, `missing_blob` while Redis
fails over, a prepare `timeout`) and the replica's own configuration (`missing_secret`,
`missing_search_provider`) never roll a release back; and a failure counts only once the replica retried
it (`consecutive_failures` >= MIN_ATTEMPTS).

While a canary runs, a replica that cannot load the release is taken to fail the canary: the stable
version is what it served before the canary started, so the canary is aborted and the stable keeps
serving. Should the stable version be at fault after all, the replica fails it again once the canary is
gone, and it is judged then.

>>> from cluster.store.release import Release
>>> release = Release("qa", "a" * 64, 3, None, "ci", 1.0, "", canary_hash="c" * 64)
>>> error = {"hash": "a" * 64, "generation": 3, "reason": "invalid_document", "message": "no Foo"}
>>> status = {"replica_id": "r2", "flows": {"qa": {"last_error": error, "consecutive_failures": 2}}}
>>> verdict = judge(release, [status], max_failures=2, max_replicas=0)
>>> (verdict.target, verdict.digest == "c" * 64)
('canary', True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cluster.store.release import Release
from control.rollout.acks import live_replicas
from control.rollout.convergence import Convergence, ReplicaProgress, rollback_reason

CONTENT_REASONS = frozenset({"invalid_document", "hash_mismatch", "compile_error"})
# A first failure may be a fluke of that moment; the replica retries (2 s, 4 s, ... later) before it counts.
MIN_ATTEMPTS = 2


@dataclass(frozen=True)
class Verdict:
    """`target` is "stable" (roll the release back) or "canary" (abort the canary `digest`)."""

    target: str
    digest: str
    reason: str


def counted(status: Mapping[str, Any], release: Release) -> ReplicaProgress | None:
    """The replica's failure on `release` if it is one the guard acts on, else None."""
    flows = status.get("flows")
    entry = flows.get(release.flow) if isinstance(flows, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    served, generation = entry.get("hash"), _int(entry.get("generation"))
    if served == release.hash and generation == release.generation:
        return None  # it runs the release
    error = entry.get("last_error")
    if not isinstance(error, Mapping) or error.get("hash") != release.hash:
        return None
    count = _int(entry.get("consecutive_failures")) or 1
    if error.get("reason") not in CONTENT_REASONS or count < MIN_ATTEMPTS:
        return None
    return ReplicaProgress(
        str(status.get("replica_id") or "?"),
        served if isinstance(served, str) else None,
        generation,
        "failed",
        str(error.get("reason")),
        str(error.get("message")),
        count,
    )


def judge(
    release: Release, statuses: Iterable[Mapping[str, Any]], *, max_failures: int, max_replicas: int
) -> Verdict | None:
    """What the guard must do about `release`, or None. The thresholds are those of
    `convergence.rollback_reason` (0 disables a rule)."""
    live = live_replicas(statuses)
    rows = tuple(row for rid in sorted(live) if (row := counted(live[rid], release)) is not None)
    if not rows:
        return None
    rules = {"max_failures": max_failures, "max_replicas": max_replicas}
    if release.canary_hash:
        state = Convergence(release.flow, release.canary_hash, release.generation, rows)
        reason = rollback_reason(state, activated_by="", **rules)
        return None if reason is None else Verdict("canary", release.canary_hash, f"canary {reason}")
    # No ping-pong: a release the automatic rollback made is never rolled back automatically. (An
    # automatic canary abort is no such release: it leaves the stable version to be judged on its own.)
    made_by = release.activated_by if release.action == "rollback" else ""
    state = Convergence(release.flow, release.hash, release.generation, rows)
    reason = rollback_reason(state, activated_by=made_by, **rules)
    return None if reason is None else Verdict("stable", release.hash, reason)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
