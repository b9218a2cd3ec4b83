"""The numbers benchmarks report: nearest-rank percentiles, distributions, and rounds of announcements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def dist(samples: list[float]) -> dict[str, float]:
    """p50/p99/min/max/mean of samples (same unit in, same unit out), rounded to 3 decimals."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": round(percentile(samples, 50), 3),
        "p99": round(percentile(samples, 99), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "mean": round(sum(samples) / len(samples), 3),
    }


def fmt(d: dict[str, float], key: str = "p50") -> str:
    return "–" if not d.get("n") else f"{d[key]:.2f}"


@dataclass(frozen=True)
class Round:
    """One announcement: when the call started and returned, and when each receiver acted on it."""

    started: float
    returned: float
    seen: list[float]  # unix seconds, one per receiver


def rounds_summary(rounds: list[Round]) -> dict[str, Any]:
    """Milliseconds: each receiver after the call returned / started, the last one, and the skew."""
    ms = 1000.0
    return {
        "rounds": len(rounds),
        "call_ms": dist([(r.returned - r.started) * ms for r in rounds]),
        "each_after_return_ms": dist([(t - r.returned) * ms for r in rounds for t in r.seen]),
        "each_after_start_ms": dist([(t - r.started) * ms for r in rounds for t in r.seen]),
        "last_after_return_ms": dist([(max(r.seen) - r.returned) * ms for r in rounds]),
        "last_after_start_ms": dist([(max(r.seen) - r.started) * ms for r in rounds]),
        "skew_ms": dist([(max(r.seen) - min(r.seen)) * ms for r in rounds]),
    }
