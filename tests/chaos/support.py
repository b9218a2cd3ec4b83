"""Shared by the fault-injection tests: load against real replicas, flows, and bounded waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.harness import FLOW, qa_doc
from bench.loadgen import Record, drive, is_error
from cluster.flow.hashing import content_address
from cluster.store.events import ReleaseChanged, encode
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.e2e.fleet import WorkerProcess, get_json

__all__ = ["FLOW", "Load", "inject_release", "poll", "publish", "qa_doc", "release", "subscribed"]


class Load:
    """Runs against every replica (each on its own port, as behind a load balancer) until stopped."""

    def __init__(self, workers: list[WorkerProcess], connections_per_replica: int = 2) -> None:
        self.workers = workers
        self.per_replica = connections_per_replica
        self.records: list[Record] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[list[Record]]] = []

    def start(self) -> Load:
        self._tasks = [
            asyncio.create_task(
                drive(
                    f"{w.url}/v1/flows/{FLOW}/run",
                    duration=600,
                    concurrency=self.per_replica,
                    timeout=10.0,
                    until=self._stop,
                    records=self.records,
                )
            )
            for w in self.workers
        ]
        return self

    async def stop(self) -> list[Record]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.records

    def count(self) -> int:
        return len(self.records)

    async def wait_for(self, more: int, what: str) -> None:
        target = self.count() + more
        await poll(lambda: self.count() >= target, what=what)

    def sent_between(self, start: float, end: float) -> list[Record]:
        return [r for r in self.records if start <= r[0] <= end]

    @staticmethod
    def failures(records: list[Record]) -> list[Record]:
        return [r for r in records if is_error(r)]


async def poll(
    probe: Callable[[], Any], *, check: Callable[[Any], bool] = bool, timeout: float = 30.0, what: str = ""
) -> Any:
    """Bounded polling for a condition (sync or async probe); returns the value that satisfied it."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def publish(store: Store, doc: dict[str, Any]) -> str:
    data, digest = content_address(doc)
    await store.publish(FLOW, data, digest, author="chaos", message="", node_count=len(doc["nodes"]))
    return digest


async def release(store: Store, doc: dict[str, Any]) -> tuple[str, int]:
    digest = await publish(store, doc)
    rel = await store.activate(FLOW, digest, by="chaos", reason="test")
    return digest, rel.generation


async def inject_release(
    client: aioredis.Redis, keys: Keys, digest: str, generation: int, *, announce: bool = True
) -> None:
    """Point the release record at `digest` bypassing every check of the store; announce it or not."""
    await client.hset(keys.release(FLOW), mapping={"hash": digest, "generation": generation})
    if announce:
        event = ReleaseChanged(flow=FLOW, hash=digest, generation=generation, by="intruder", at=time.time())
        await client.publish(keys.channel(), encode(event))


async def subscribed(http: httpx.AsyncClient, workers: list[WorkerProcess]) -> bool:
    states = [await get_json(http, f"{w.url}/readyz") for w in workers]
    return all(s is not None and s["subscribed"] for s in states)
