"""Run counters per flow version, small enough to travel in every replica heartbeat, and their summaries.

A replica counts runs, errors and a latency histogram per (flow, version) within an *epoch*: the
`canary_started_at` of the release it served them under (0 without a canary), so a canary is judged
only on runs made while it ran. The control plane adds up the live replicas' counters of the current
epoch and reads error rates and percentiles off the merged histogram.

>>> stats = RunStats()
>>> for ms in (3, 4, 40):
...     stats.record("qa", 0.0, "ab" * 32, ok=ms < 40, seconds=ms / 1000)
>>> s = summarize("ab" * 32, VersionCounts.from_dict(stats.report()["qa"]["versions"]["ab" * 32]))
>>> s.runs, s.errors, round(s.error_rate, 3)
(3, 1, 0.333)
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Upper bounds (milliseconds) of the latency buckets; one more bucket counts everything slower.
BOUNDS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
             30000.0, 60000.0)  # fmt: skip


@dataclass
class VersionCounts:
    """Runs, failed runs and latency bucket counts of one version (cumulative within an epoch)."""

    runs: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))

    def observe(self, *, ok: bool, seconds: float) -> None:
        self.runs += 1
        if not ok:
            self.errors += 1
        # The first bucket whose bound is >= ms (len(BOUNDS_MS) when slower than every bound).
        self.buckets[bisect_left(BOUNDS_MS, seconds * 1000)] += 1

    def add(self, other: VersionCounts) -> None:
        self.runs += other.runs
        self.errors += other.errors
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "errors": self.errors, "buckets": list(self.buckets)}

    @classmethod
    def from_dict(cls, raw: Any) -> VersionCounts | None:
        """Counters from a status document; None when they are not usable (an older or foreign replica)."""
        if not isinstance(raw, Mapping):
            return None
        runs, errors, buckets = raw.get("runs"), raw.get("errors"), raw.get("buckets")
        if not (isinstance(runs, int) and isinstance(errors, int) and isinstance(buckets, list)):
            return None
        if not (_count(runs) and _count(errors)):
            return None
        if len(buckets) != len(BOUNDS_MS) + 1 or not all(_count(b) for b in buckets):
            return None
        return cls(runs, errors, list(buckets))


class RunStats:
    """A replica's counters: per flow the current epoch and its versions. Touched only by the event loop."""

    def __init__(self) -> None:
        self._flows: dict[str, tuple[float, dict[str, VersionCounts]]] = {}

    def record(self, flow: str, epoch: float, digest: str, *, ok: bool, seconds: float) -> None:
        current = self._flows.get(flow)
        if current is None or current[0] != epoch:
            # A new canary (or its end) starts the counts afresh; runs of an earlier epoch are history.
            current = (epoch, {})
            self._flows[flow] = current
        counts = current[1].get(digest)
        if counts is None:
            counts = current[1][digest] = VersionCounts()
        counts.observe(ok=ok, seconds=seconds)

    def report(self, serving: Collection[tuple[str, str]] | None = None) -> dict[str, Any]:
        """`{flow: {"epoch": float, "versions": {hash: {"runs", "errors", "buckets"}}}}`.

        With `serving` ((flow, hash) pairs), counters of any other version are dropped first, so a
        replica that goes through many releases without a canary does not report every one forever.
        """
        if serving is not None:
            for flow, (_epoch, versions) in list(self._flows.items()):
                for digest in [d for d in versions if (flow, d) not in serving]:
                    del versions[digest]
                if not versions:
                    del self._flows[flow]
        return {
            flow: {"epoch": epoch, "versions": {h: c.as_dict() for h, c in versions.items()}}
            for flow, (epoch, versions) in sorted(self._flows.items())
        }


@dataclass(frozen=True)
class VersionSummary:
    hash: str
    runs: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "runs": self.runs,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
        }


def quantile(buckets: list[int], q: float) -> float | None:
    """The q-quantile (0..1) in milliseconds, interpolated linearly inside its bucket; None if empty.

    >>> quantile([0, 4, 0] + [0] * 13, 0.5)
    1.75
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(BOUNDS_MS):
                return BOUNDS_MS[-1]  # slower than the last bound: the bound is all we know
            low = BOUNDS_MS[i - 1] if i > 0 else 0.0
            return low + (BOUNDS_MS[i] - low) * (rank - seen) / count
        seen += count
    return BOUNDS_MS[-1]


def summarize(digest: str, counts: VersionCounts | None) -> VersionSummary:
    counts = counts or VersionCounts()
    rate = counts.errors / counts.runs if counts.runs else 0.0
    return VersionSummary(
        digest,
        counts.runs,
        counts.errors,
        rate,
        quantile(counts.buckets, 0.5),
        quantile(counts.buckets, 0.95),
    )


def aggregate(statuses: Iterable[Mapping[str, Any]], flow: str, epoch: float) -> dict[str, VersionCounts]:
    """The fleet's counters for `flow` in `epoch`, by version: the sum over every replica status given."""
    total: dict[str, VersionCounts] = {}
    for status in statuses:
        runs = status.get("runs")
        entry = runs.get(flow) if isinstance(runs, Mapping) else None
        if not isinstance(entry, Mapping) or entry.get("epoch") != epoch:
            continue
        versions = entry.get("versions")
        if not isinstance(versions, Mapping):
            continue
        for digest, raw in versions.items():
            counts = VersionCounts.from_dict(raw)
            if counts is not None and isinstance(digest, str):
                total.setdefault(digest, VersionCounts()).add(counts)
    return total


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
