"""Automatic canary abort: a pure verdict on per-version run numbers, and the loop that acts on it.

Every `canary_guard_s` the guard reads each release record with a canary, adds up the live replicas'
run counters of that canary's epoch, and aborts the canary (actor `auto-rollback`, the verdict as the
reason) when its error rate exceeds the stable's by more than the margin once both versions have at
least `canary_min_runs` runs. The abort is compare-and-set on the generation it judged, so several
control planes running the guard abort a canary once, and never a canary changed meanwhile; and only the
control plane holding the guard's lease acts (another takes over when it dies).

The verdict itself is `control.canary.verdict.judge`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cluster.errors import GenerationConflict
from cluster.store.canary_store import CanaryConflict
from cluster.store.lease import Lease, holder_id
from cluster.store.rollouts import RolloutInProgress
from cluster.traffic.runstats import aggregate, summarize
from control.canary.verdict import AUTO_ACTOR, judge
from control.rollout.periodic import PeriodicCheck, lease_ttl

if TYPE_CHECKING:
    from control.canary.service import CanaryService

log = logging.getLogger(__name__)

LEASE = "canary-guard"


class CanaryGuard(PeriodicCheck):
    name = "canary guard"

    def __init__(self, canaries: CanaryService, *, interval_s: float, holder: str | None = None) -> None:
        store = canaries.service.store
        lease = Lease(
            store.redis, store.keys, LEASE, holder=holder or holder_id(), ttl_s=lease_ttl(interval_s)
        )
        super().__init__(interval_s=interval_s, lease=lease)
        self.canaries = canaries

    async def check(self) -> list[str]:
        """One pass over every running canary; returns the flows whose canary it aborted."""
        store = self.canaries.service.store
        releases = [r for r in (await store.list_releases()).values() if r.canary_hash]
        if not releases:
            return []
        statuses = await store.read_fleet()
        aborted = []
        for release in releases:
            assert release.canary_hash is not None
            counts = aggregate(statuses, release.flow, release.canary_epoch)
            verdict = judge(
                summarize(release.hash, counts.get(release.hash)),
                summarize(release.canary_hash, counts.get(release.canary_hash)),
                margin=self.canaries.margin,
                min_runs=self.canaries.min_runs,
            )
            if not verdict.abort:
                continue
            try:
                await self.canaries.abort(
                    release.flow,
                    actor=AUTO_ACTOR,
                    message=verdict.reason,
                    expected_generation=release.generation,
                )
            except (GenerationConflict, CanaryConflict, RolloutInProgress) as e:
                # Someone (a person, or another control plane's guard) changed the release first, or a
                # two-phase rollout of the flow is in flight.
                log.info(
                    "canary guard: flow=%s changed meanwhile (%s); judging again next pass", release.flow, e
                )
                continue
            log.warning(
                "canary guard aborted flow=%s canary=%s generation=%d: %s",
                release.flow, release.canary_hash[:12], release.generation + 1, verdict.reason,
            )  # fmt: skip
            aborted.append(release.flow)
        return aborted
