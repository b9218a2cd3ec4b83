"""Which version serves a run: the request key, canary bucketing, and the variant a response names.

Pure: given the flow's loaded release (one snapshot read) and the request's key, `route` decides
between the stable version and the canary; sessions (worker.sessions) may override it with their pin.

Keys, in order: the `X-Flowfleet-Key` header, the body's top-level `user_id`, its `session_id`;
without any, the run is bucketed at random (so the canary still gets its share, just not sticky).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster.traffic.canary import BUCKETS, bucket, check_request_key, check_session_id, threshold
from worker.served import Served
from worker.state import LoadedFlow

__all__ = ["KEY_HEADER", "RunKeys", "Served", "request_keys", "route", "run_keys", "variant_of"]

KEY_HEADER = "x-flowfleet-key"


@dataclass(frozen=True)
class RunKeys:
    key: str | None
    session_id: str | None


def run_keys(headers: Mapping[str, str], body: Mapping[str, Any]) -> RunKeys:
    """The routing key and session id of a run request (422 for unusable values)."""
    return RunKeys(*request_keys(headers.get(KEY_HEADER), body))


def request_keys(header: str | None, body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """`run_keys` given the X-Flowfleet-Key header's value: (routing key, session id)."""
    session = body.get("session_id")
    session_id = None if session is None else check_session_id(session)
    user = body.get("user_id")
    user_id = None if user is None else check_request_key(user, "user_id")
    header_key = None if header is None else check_request_key(header, "X-Flowfleet-Key")
    return header_key or user_id or session_id, session_id


def route(loaded: LoadedFlow, key: str | None, rng: random.Random | None = None) -> Served:
    """Stable or canary for this key; the same key gets the same answer on every replica."""
    canary, served = loaded.canary, loaded.canary_served
    if canary is not None and served is not None:
        spot = bucket(loaded.flow, key) if key is not None else (rng or random).randrange(BUCKETS)
        if spot < threshold(canary.percent):
            return served
    return loaded.stable


def variant_of(loaded: LoadedFlow, digest: str) -> str:
    if digest == loaded.hash:
        return "stable"
    if loaded.canary is not None and digest == loaded.canary.hash:
        return "canary"
    return "pinned"
