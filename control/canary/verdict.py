"""The canary guard's verdict: a pure judgement on per-version run numbers.

>>> from cluster.traffic.runstats import VersionSummary
>>> stable = VersionSummary("a" * 64, 200, 2, 0.01, 3.0, 9.0)
>>> judge(stable, VersionSummary("b" * 64, 150, 30, 0.2, 3.0, 9.0), margin=0.05, min_runs=100).abort
True
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.traffic.runstats import VersionSummary

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
