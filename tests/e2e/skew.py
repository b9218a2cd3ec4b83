"""Switch skew of one activation across real replicas: when did each replica swap, and how far apart.

Reusable by the benchmark: `measure_switch(...)` activates a stored version through the control API
(two-phase by default, `prepare=False` for the one-phase path), waits until every given replica serves it,
and returns each replica's swap time (the `loaded_at` its /v1/flows reports, taken right at the swap).
All replicas of a test run on one host, so their clocks agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.fleet import WorkerProcess, get_json, wait_all_serve


@dataclass(frozen=True)
class SwitchSkew:
    flow: str
    hash: str
    generation: int
    activated_at: float  # the release record's activated_at (unix seconds, control plane clock)
    swapped_at: dict[str, float]  # replica id -> unix seconds of its swap
    response: dict[str, Any]

    @property
    def skew_ms(self) -> float:
        """Time between the first and the last replica's swap."""
        return (max(self.swapped_at.values()) - min(self.swapped_at.values())) * 1000

    @property
    def last_swap_ms(self) -> float:
        """Time from the release record's commit to the last replica's swap."""
        return (max(self.swapped_at.values()) - self.activated_at) * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "skew_ms": round(self.skew_ms, 3),
            "last_swap_ms": round(self.last_swap_ms, 3),
            "swapped_at": self.swapped_at,
        }


async def swap_times(
    client: httpx.AsyncClient, workers: Sequence[WorkerProcess], flow: str, generation: int
) -> dict[str, float]:
    out: dict[str, float] = {}
    for worker in workers:
        body = await get_json(client, f"{worker.url}/v1/flows")
        entry = next((f for f in (body or {}).get("flows", []) if f["flow"] == flow), None)
        if entry is None or entry["generation"] != generation:
            raise AssertionError(
                f"{worker.replica_id} does not serve {flow} generation {generation}: {entry}"
            )
        out[worker.replica_id] = float(entry["loaded_at"])
    return out


async def measure_switch(
    client: httpx.AsyncClient,
    control_url: str,
    token: str,
    workers: Sequence[WorkerProcess],
    flow: str,
    digest: str,
    *,
    prepare: bool = True,
    timeout: float = 20.0,
) -> SwitchSkew:
    """Activate `digest` (already stored) and report when each replica swapped to it."""
    reply = await client.post(
        f"{control_url}/v1/flows/{flow}/activate",
        json={"hash": digest, "prepare": prepare},
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )
    if reply.status_code != 200:
        raise AssertionError(f"activation failed: {reply.status_code} {reply.text}")
    release = reply.json()
    await wait_all_serve(client, workers, flow, digest, timeout)
    swapped = await swap_times(client, workers, flow, release["generation"])
    return SwitchSkew(flow, digest, release["generation"], release["activated_at"], swapped, release)
