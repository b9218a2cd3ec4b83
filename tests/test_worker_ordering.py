"""Property: whatever order and however often change events arrive, a replica only moves forward and
ends on the newest release (an in-memory store; the Redis-backed paths are in test_worker_loader.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.worker_support import ToyCompiler, toy_doc
from worker.loader import Loader
from worker.metrics import WorkerMetrics
from worker.state import WorkerState


@dataclass(frozen=True)
class Event:
    flow: str
    hash: str
    generation: int


class MemoryStore:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    async def get_blob(self, flow: str, digest: str) -> bytes | None:
        await asyncio.sleep(0)  # a real await point, so concurrent applies interleave
        return self.blobs.get(digest)

    async def get_release(self, flow: str) -> Any:
        return None

    async def list_releases(self) -> dict[str, Any]:
        return {}

    async def write_replica_status(self, replica_id: str, status: dict[str, Any], ttl_s: float) -> None:
        return None


def history(n: int, bad: frozenset[int]) -> tuple[list[Event], dict[str, bytes]]:
    """Generations 1..n; those in `bad` point at a document that fails validation."""
    events, blobs = [], {}
    for gen in range(1, n + 1):
        data, digest = toy_doc(f"v{gen}", broken=gen in bad)
        blobs[digest] = data
        events.append(Event("qa", digest, gen))
    return events, blobs


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=8),
    data=st.data(),
)
def test_any_order_any_duplicates_ends_on_the_newest_good_release(n: int, data: st.DataObject) -> None:
    bad = (
        frozenset(data.draw(st.sets(st.integers(min_value=1, max_value=n - 1)), label="bad"))
        if n > 1
        else frozenset()
    )
    events, blobs = history(n, bad)
    order = data.draw(st.lists(st.sampled_from(events), min_size=1, max_size=20), label="deliveries")
    order.append(events[-1])  # the newest is delivered at least once
    concurrent = data.draw(st.booleans(), label="concurrent")

    async def scenario() -> WorkerState:
        state = WorkerState("r")
        loader = Loader(MemoryStore(blobs), state, ToyCompiler(), WorkerMetrics())
        seen: list[int] = []

        async def deliver(event: Event) -> None:
            await loader.apply(event, triggered_by="event", forced=True)
            loaded = state.snapshot.get("qa")
            if loaded is not None:
                seen.append(loaded.generation)

        if concurrent:
            await asyncio.gather(*(deliver(e) for e in order))
        else:
            for event in order:
                await deliver(event)
        assert seen == sorted(seen), f"went backwards: {seen}"
        return state

    state = asyncio.run(scenario())
    loaded = state.snapshot.get("qa")
    assert loaded is not None
    assert (loaded.generation, loaded.hash) == (n, events[-1].hash)
    assert state.health_of("qa").last_error is None
