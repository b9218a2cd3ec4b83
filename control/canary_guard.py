"""Automatic canary abort: a pure verdict on per-version run numbers, and the loop that acts on it.

Every `canary_guard_s` the guard reads each release record with a canary, adds up the live replicas'
run counters of that canary's epoch, and aborts the canary (actor `auto-rollback`, the verdict as the
reason) when its error rate exceeds the stable's by more than the margin once both versions have at
least `canary_min_runs` runs. The abort is compare-and-set on the generation it judged, so several
control planes running the guard abort a canary once, and never a canary changed meanwhile.

>>> from cluster.traffic.runstats import VersionSummary
>>> stable = VersionSummary("a" * 64, 200, 2, 0.01, 3.0, 9.0)
>>> judge(stable, VersionSummary("b" * 64, 150, 30, 0.2, 3.0, 9.0), margin=0.05, min_runs=100).abort
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cluster.errors import GenerationConflict
from cluster.store.canary_store import CanaryConflict
from cluster.traffic.runstats import VersionSummary, aggregate, summarize
from control.periodic import PeriodicCheck

if TYPE_CHECKING:
    from control.canary import CanaryService

log = logging.getLogger(__name__)

AUTO_ACTOR = "auto-rollback"


@dataclass(frozen=True)
class Verdict:
    abort: bool
    reason: str


def judge(stable: VersionSummary, canary: VersionSummary, *, margin: float, min_runs: int) -> Verdict:
    """Abort when both versions have `min_runs` runs and the canary's error rate exceeds the stable's
    by more than `margin` (a fraction: 0.05 is five percentage points)."""
    if canary.runs < min_runs or stable.runs < min_runs:
        return Verdict(
            False,
            f"waiting for {min_runs} runs of each version (stable {stable.runs}, canary {canary.runs})",
        )
    limit = stable.error_rate + margin
    if canary.error_rate > limit:
        return Verdict(
            True,
            f"canary error rate {canary.error_rate:.1%} exceeds stable {stable.error_rate:.1%} by more "
            f"than {margin * 100:g} points ({canary.errors}/{canary.runs} canary, "
            f"{stable.errors}/{stable.runs} stable runs)",
        )
    return Verdict(
        False,
        f"canary error rate {canary.error_rate:.1%} within {limit:.1%} (stable + {margin * 100:g} points)",
    )


class CanaryGuard(PeriodicCheck):
    name = "canary guard"

    def __init__(self, canaries: CanaryService, *, interval_s: float) -> None:
        super().__init__(interval_s=interval_s)
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
            except (GenerationConflict, CanaryConflict) as e:
                # Someone (a person, or another control plane's guard) changed the release first.
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
