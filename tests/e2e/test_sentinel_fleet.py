"""Sentinel failover end to end: a primary, two replicas and three `redis-server --sentinel` on loopback
(`down-after-milliseconds` 1000), every node and sentinel with ACL users; `flowfleet control` and two
`flowfleet worker` processes reach Redis through `redis+sentinel://` only.

Injected: SIGKILL to the primary while runs flow through both replicas and activations follow one another
through the control API. Checked: no run failed; activations answered 503 `redis_unavailable` /
`redis_unreplicated` (within ~2 s each) only between the kill and the promotion, and 200 after it; every
activation that answered 200 is still in the history; both replicas serve the last acknowledged release
within 5 s of the promotion; each replica's subscriber followed the new primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bench.harness import FLOW
from tests.chaos.support import Load, poll, subscribed
from tests.e2e.failover import (
    ActivationSeries,
    check_failures,
    check_history,
    history_of,
    publish_versions,
    start_control,
    start_workers,
)
from tests.e2e.fleet import WorkerProcess, wait_all_serve, wait_ready
from tests.redis_topologies import SentinelTopology, acl_refusals, ha_passwords


@pytest.fixture
def sentinel() -> Iterator[SentinelTopology]:
    topo = SentinelTopology(replicas=2, passwords=ha_passwords()).start()
    yield topo
    topo.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


async def test_primary_killed_during_activations_under_load(
    sentinel: SentinelTopology, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    env = sentinel.sentinel_env
    control = start_control(sentinel.url("control"), tmp_path, FLOWFLEET_HISTORY_KEEP="1000", **env)
    workers: list[WorkerProcess] = start_workers(sentinel.url("worker"), 2, "s", **env)
    load: Load | None = None
    try:
        versions = await publish_versions(http, control, 4)
        await wait_ready(http, workers)
        series = ActivationSeries(http, control, versions).start()
        await series.wait_acked(3)
        await wait_all_serve(http, workers, FLOW, series.acked()[-1].hash)
        load = Load(workers).start()
        await load.wait_for(50, "runs before the kill")

        old = sentinel.node(sentinel.primary_port())
        killed_at = time.time()
        old.kill()
        new = await asyncio.to_thread(sentinel.wait_promotion, old)
        promoted_at = time.time()
        await series.wait_acked(3, after=promoted_at)
        answers = await series.stop()
        last = series.acked()[-1]
        converged = await wait_all_serve(http, workers, FLOW, last.hash, timeout=10)
        converged_at = time.time()
        await load.wait_for(50, "runs after the failover")
        records = await load.stop()

        failures, slowest = check_failures(answers, killed_at)
        check_history(await history_of(http, control), answers)
        assert not Load.failures(records), Load.failures(records)[:5]
        assert acl_refusals(sentinel) == []  # replication, Sentinel and flowfleet under their ACL users
        assert converged_at - promoted_at <= 5.0, f"converged {converged_at - promoted_at:.2f} s after"
        # Each subscriber lost the old primary and subscribed to the new one (after its backoff).
        await poll(lambda: subscribed(http, workers), what="both replicas subscribed again")
        resubscribed_at = time.time()
        for w in workers:
            assert w.log().count("subscribed to flowfleet:events") >= 2, w.log()[-2000:]
        during = [r for r in records if killed_at <= r[0] <= promoted_at]
        codes = sorted({str(a.code) for a in answers if a.status != 200})
        print(
            f"injected: SIGKILL of the primary (port {old.port}); promoted {new.port} "
            f"{promoted_at - killed_at:.2f} s later; checked: {len(records)} runs ({len(during)} during the "
            f"failover), 0 failed; {len(series.acked())} activations acknowledged, none lost; {failures} "
            f"answered 503 {codes} (slowest {slowest:.2f} s); last release on both replicas "
            f"{converged_at - promoted_at:.2f} s after the promotion ({converged:.2f} s after its 200); "
            f"both subscribed again {resubscribed_at - promoted_at:.2f} s after the promotion"
        )
    finally:
        if load is not None:
            await load.stop()
        for w in workers:
            w.stop()
        control.stop()
