"""What each replica runs compared with the release records: one row per (replica, flow) (pure).

Replicas heartbeat a JSON status (see the worker) of this shape; unknown fields are ignored:

    {"replica_id": "web-1", "reported_at": 1764100000.0,
     "flows": {"support_qa": {"hash": "ab12...", "generation": 7,
                              "last_error": {"generation": 8, "reason": "compile", "message": "..."}}}}

A row is ``current`` when the replica runs the release record's version and generation, ``error``
when it does not and reports a load error for the flow, ``stale`` otherwise (behind, or the flow has
no release).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cluster.store.fleet import serves_release
from cluster.store.release import Release


@dataclass(frozen=True)
class FleetRow:
    replica: str
    flow: str
    hash: str | None
    generation: int | None
    current_generation: int | None
    state: str  # "current" | "stale" | "error"
    error: str | None
    seen_at: float | None

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


def fleet_rows(statuses: Iterable[Mapping[str, Any]], current: Mapping[str, Release]) -> list[FleetRow]:
    """Rows sorted by flow then replica; `current` maps flow -> its release record. A replica is current
    when it runs the record's version at the record's generation (cluster.store.fleet.serves_release):
    after a restore a generation may come again for another version."""
    rows: list[FleetRow] = []
    for status in statuses:
        replica = str(status.get("replica_id") or "?")
        seen = _float_or_none(status.get("reported_at"))
        for flow, entry in _flow_entries(status):
            generation = _int_or_none(entry.get("generation"))
            record = current.get(flow)
            want = record.generation if record is not None else None
            error = _error_text(entry.get("last_error"))
            if record is not None and serves_release(
                entry, record.hash, record.generation, record.activated_at
            ):
                state = "current"
            elif error:
                state = "error"
            else:
                state = "stale"
            digest = entry.get("hash")
            rows.append(
                FleetRow(
                    replica=replica,
                    flow=flow,
                    hash=digest if isinstance(digest, str) else None,
                    generation=generation,
                    current_generation=want,
                    state=state,
                    error=error,
                    seen_at=seen,
                )
            )
    rows.sort(key=lambda r: (r.flow, r.replica))
    return rows
