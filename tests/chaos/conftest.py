"""Fixtures of the fault-injection suite: real worker processes (short reconcile/watchdog/heartbeat
settings so every scenario ends well inside the test timeout), an HTTP client, a store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.chaos.support import Load
from tests.e2e.fleet import WorkerProcess

CHAOS_TIMING = {
    "FLOWFLEET_RECONCILE_S": "1",
    "FLOWFLEET_HEARTBEAT_S": "0.5",
    "FLOWFLEET_STATUS_TTL_S": "5",
    "FLOWFLEET_PING_S": "0.5",
    "FLOWFLEET_WATCHDOG_S": "2",
}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest.fixture
def make_fleet(namespace: str) -> Iterator[Any]:
    """make_fleet(redis_url, n, **env) -> started workers; every one is stopped after the test."""
    started: list[WorkerProcess] = []

    def make(redis_url: str, n: int = 3, *, first: int | None = None, **env: Any) -> list[WorkerProcess]:
        base = len(started) if first is None else first
        workers = [
            WorkerProcess(redis_url, namespace, f"w{base + i}", **{**CHAOS_TIMING, **env}).start()
            for i in range(n)
        ]
        started.extend(workers)
        return workers

    yield make
    for w in started:
        w.stop()


@pytest.fixture
def store(redis_client: Any, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


@pytest.fixture
async def start_load() -> AsyncIterator[Callable[[list[WorkerProcess]], Load]]:
    """start_load(workers) -> a running Load; every load still running is stopped after the test."""
    loads: list[Load] = []

    def start(workers: list[WorkerProcess]) -> Load:
        load = Load(workers).start()
        loads.append(load)
        return load

    yield start
    for load in loads:
        await load.stop()
