"""How a replica's subscriber paces itself: reconcile period, liveness pings and watchdog, and the
reconnect backoff (worker/subscriber.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    reconcile_s: float = 5.0
    watchdog_s: float = 15.0
    ping_s: float = 5.0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0
    # A subscription must stay up this long before the reconnect backoff starts from the bottom again,
    # so a server that drops every connection right after the subscribe is not hammered.
    healthy_s: float = 10.0


def backoff_with_jitter(failures: int, timing: Timing, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**failures)] so replicas spread their retries."""
    ceiling = min(timing.backoff_cap_s, timing.backoff_base_s * 2 ** min(failures, 16))
    return rng.uniform(timing.backoff_base_s / 2, max(ceiling, timing.backoff_base_s))
