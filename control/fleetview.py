"""What each replica runs compared with the release records, and whether it is still there (pure).

Replicas heartbeat a JSON status (see the worker) of this shape; unknown fields are ignored:

    {"replica_id": "web-1", "host": "web-1", "pid": 7, "reported_at": 1764100000.0,
     "heartbeat_s": 2.0, "ttl_s": 10.0, "state": "serving",
     "flows": {"support_qa": {"hash": "ab12...", "generation": 7,
                              "last_error": {"generation": 8, "reason": "compile", "message": "..."}}}}

A replica's presence comes from the age of its last heartbeat: ``live``, ``draining`` (stopping; it
finishes its runs), ``stale`` once the heartbeat is late (`late_after`), ``gone`` past its status TTL
or when its status expired while it is still listed: it died, since a replica that stops cleanly
deregisters and is not listed at all.

A row (replica, flow) takes the replica's presence unless it is live; a live replica's row is
``current`` when it runs the release record's version and generation, ``error`` when it does not and
reports a load error for the flow, ``behind`` otherwise (an older release, or the flow has no release).
A gone replica whose status expired has one row, without a flow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from cluster.store.fleet import serves_release
from cluster.store.release import Release
from control.rollout.convergence import Convergence

# The worker's defaults, for statuses that do not say (replicas older than these fields).
DEFAULT_HEARTBEAT_S = 2.0
DEFAULT_TTL_S = 10.0


def late_after(heartbeat_s: float) -> float:
    """Seconds after which a heartbeat is late: two intervals, and at least one interval plus a second
    (a beat is due every interval; the extra second absorbs a busy machine).

    >>> late_after(2.0), late_after(0.5)
    (4.0, 1.5)
    """
    return max(2 * heartbeat_s, heartbeat_s + 1.0)


@dataclass(frozen=True)
class Presence:
    """Whether one replica is still there, and the age of its last heartbeat (None: unknown)."""

    replica: str
    state: str  # "live" | "draining" | "stale" | "gone"
    host: str | None
    pid: int | None
    heartbeat_at: float | None
    age_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FleetRow:
    replica: str
    host: str | None
    pid: int | None
    flow: str | None
    hash: str | None
    generation: int | None
    current_generation: int | None
    state: str  # "current" | "behind" | "error" | "draining" | "stale" | "gone"
    error: str | None
    seen_at: float | None
    age_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flow_entries(status: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    flows = status.get("flows")
    if isinstance(flows, Mapping):
        return [(str(k), v) for k, v in flows.items() if isinstance(v, Mapping)]
    return []


def _error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, Mapping):
        return str(error.get("message") or error.get("reason") or "error")
    return str(error)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _positive(value: Any, default: float) -> float:
    number = _float_or_none(value)
    return number if number is not None and number > 0 else default


def _age(seen: float | None, now: float | None) -> float | None:
    return None if seen is None or now is None else max(0.0, round(now - seen, 3))


def replica_name(status: Mapping[str, Any]) -> str:
    return str(status.get("replica_id") or status.get("id") or "?")


def presence(status: Mapping[str, Any], now: float | None) -> Presence:
    """The presence of a replica whose status is still in Redis, at `now` (None: not judged by age)."""
    seen = _float_or_none(status.get("reported_at"))
    seen = seen if seen is not None else _float_or_none(status.get("heartbeat_at"))
    age = _age(seen, now)
    host = status.get("host")
    if age is not None and age > _positive(status.get("ttl_s"), DEFAULT_TTL_S):
        state = "gone"
    elif age is not None and age > late_after(_positive(status.get("heartbeat_s"), DEFAULT_HEARTBEAT_S)):
        state = "stale"
    else:
        state = "draining" if status.get("state") == "draining" else "live"
    return Presence(
        replica_name(status),
        state,
        host if isinstance(host, str) else None,
        _int_or_none(status.get("pid")),
        seen,
        age,
    )


def gone(replica: str, last_heartbeat: float, now: float | None) -> Presence:
    """A replica still listed whose status expired: it stopped heartbeating without deregistering."""
    return Presence(replica, "gone", None, None, last_heartbeat, _age(last_heartbeat, now))


def fleet_rows(
    statuses: Iterable[Mapping[str, Any]],
    current: Mapping[str, Release],
    *,
    now: float | None = None,
    expired: Mapping[str, float] | None = None,
) -> list[FleetRow]:
    """Rows sorted by flow then replica, the flowless rows of `expired` replicas (id -> last heartbeat)
    last; `current` maps flow -> its release record. A replica is current when it runs the record's
    version at the record's generation (cluster.store.fleet.serves_release): after a restore a
    generation may come again for another version."""
    rows: list[FleetRow] = []
    for status in statuses:
        here = presence(status, now)
        for flow, entry in _flow_entries(status):
            record = current.get(flow)
            error = _error_text(entry.get("last_error"))
            if here.state != "live":
                state = here.state
            elif record is not None and serves_release(
                entry, record.hash, record.generation, record.activated_at
            ):
                state = "current"
            else:
                state = "error" if error else "behind"
            digest = entry.get("hash")
            rows.append(
                FleetRow(
                    replica=here.replica,
                    host=here.host,
                    pid=here.pid,
                    flow=flow,
                    hash=digest if isinstance(digest, str) else None,
                    generation=_int_or_none(entry.get("generation")),
                    current_generation=record.generation if record is not None else None,
                    state=state,
                    error=error,
                    seen_at=here.heartbeat_at,
                    age_s=here.age_s,
                )
            )
    for replica, last in (expired or {}).items():
        p = gone(replica, last, now)
        rows.append(FleetRow(replica, None, None, None, None, None, None, "gone", None, last, p.age_s))
    rows.sort(key=lambda r: (r.flow is None, r.flow or "", r.replica))
    return rows


def with_presence(state: Convergence, presences: Mapping[str, Presence]) -> Convergence:
    """A flow's convergence with what the heartbeats say: a replica whose heartbeat is late is `stale`
    (not current, still counted: it may be back), one past its TTL no longer counts."""
    rows = []
    for row in state.replicas:
        seen = presences.get(row.replica)
        if seen is None or seen.state in ("live", "draining"):
            rows.append(row)
        elif seen.state == "stale":
            rows.append(replace(row, state="stale"))
    return replace(state, replicas=tuple(rows))
