"""Redis Cluster end to end: three primaries and three replicas (`redis-cli --cluster create
--cluster-replicas 1`, `cluster-node-timeout` 2000) with ACL users; `flowfleet control` and two
`flowfleet worker` processes reach it through `redis+cluster://` seed nodes only.

First the whole life of a flow: two-phase activation, canary (keys split between versions on both
replicas), promotion, a session pinned across replicas, rollback, gc, fleet and audit. Then, injected:
SIGKILL to the primary serving the flow's slot while runs flow and activations follow one another, and
the killed node restarted once its replica took over (it rejoins as a replica, as a supervisor would
restart it). Checked: no run failed; activations failed only with a 503 `redis_unavailable` /
`redis_unreplicated` between the kill and the rejoin, and succeeded after; every activation that
answered 200 is still in the history; both replicas serve the last acknowledged release.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness import FLOW
from cluster.store.keys import Keys
from tests.chaos.support import Load, poll, subscribed
from tests.control_support import ADMIN_TOKEN, DEPLOYER_TOKEN, ControlProcess, bearer
from tests.e2e.failover import (
    ActivationSeries,
    check_failures,
    check_history,
    history_of,
    publish_versions,
    start_control,
    start_workers,
)
from tests.e2e.fleet import WorkerProcess, get_json, served_version, wait_all_serve, wait_ready
from tests.redis_topologies import ClusterTopology, acl_refusals, ha_passwords


@pytest.fixture
def cluster() -> Iterator[ClusterTopology]:
    topo = ClusterTopology(passwords=ha_passwords()).start()
    yield topo
    topo.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20.0) as client:
        yield client


async def call(http: httpx.AsyncClient, control: ControlProcess, path: str, body: Any = None) -> Any:
    token = ADMIN_TOKEN if path.startswith("/v1/gc") else DEPLOYER_TOKEN
    url = f"{control.url}{path}"
    r = await http.request("POST" if body is not None else "GET", url, json=body, headers=bearer(token))
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


async def run(http: httpx.AsyncClient, worker: WorkerProcess, **body: Any) -> httpx.Response:
    headers = {"X-Flowfleet-Key": body.pop("key")} if "key" in body else {}
    r = await http.post(
        f"{worker.url}/v1/flows/{FLOW}/run", json={"inputs": {"input": "hi"}, **body}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r


async def life_of_a_flow(
    http: httpx.AsyncClient, control: ControlProcess, workers: list[WorkerProcess], v1: str, v2: str
) -> None:
    await poll(lambda: fleet_of(http, control), check=lambda ids: ids >= {"k0", "k1"}, what="the fleet view")
    released = await call(http, control, f"/v1/flows/{FLOW}/activate", {"hash": v1})  # two-phase
    assert sorted(released["rollout"]["ready"]) == ["k0", "k1"], released
    await wait_all_serve(http, workers, FLOW, v1)
    await call(http, control, f"/v1/flows/{FLOW}/canary", {"hash": v2, "percent": 50})
    await poll(lambda: canary_everywhere(http, workers, v2), what="the canary on both replicas")
    variants = {(await run(http, w, key=f"user-{n}")).json()["version"] for n in range(40) for w in workers}
    assert variants == {v1, v2}
    await call(http, control, f"/v1/flows/{FLOW}/canary/promote", {})
    await wait_all_serve(http, workers, FLOW, v2)
    pinned = (await run(http, workers[0], session_id="chat-1")).json()["version"]
    assert pinned == v2
    await call(http, control, f"/v1/flows/{FLOW}/rollback", {})
    await wait_all_serve(http, workers, FLOW, v1)
    for w in workers:  # the pin lives in the flow's slot, read by both replicas
        assert (await run(http, w, session_id="chat-1")).json()["version"] == v2
        assert (await run(http, w, session_id=f"new-{w.replica_id}")).json()["version"] == v1
    assert "removed_count" in await call(http, control, "/v1/gc?dry_run=true", {})
    assert await fleet_of(http, control) >= {"k0", "k1"}
    audit = await call(http, control, f"/v1/audit?flow={FLOW}&limit=100")
    assert {"publish", "activate", "canary_start", "canary_promote", "rollback"} <= {
        e["action"] for e in audit["entries"]
    }


async def fleet_of(http: httpx.AsyncClient, control: ControlProcess) -> set[str]:
    """The replicas the control plane sees live and subscribed (their status keys, in several slots)."""
    fleet = await call(http, control, "/v1/fleet")
    return {r["replica_id"] for r in fleet["replicas"] if r.get("subscribed")}


async def canary_everywhere(http: httpx.AsyncClient, workers: list[WorkerProcess], canary: str) -> bool:
    for w in workers:
        body = await get_json(http, f"{w.url}/v1/flows")
        entry = next((f for f in (body or {}).get("flows", []) if f["flow"] == FLOW), None)
        if entry is None or (entry.get("canary") or {}).get("hash") != canary:
            return False
    return True


async def test_the_life_of_a_flow_then_a_primary_killed_under_load(
    cluster: ClusterTopology, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    control = start_control(cluster.url("control"), tmp_path, FLOWFLEET_HISTORY_KEEP="1000")
    workers = start_workers(cluster.url("worker"), 2, "k")
    load: Load | None = None
    try:
        v1, v2, *more = await publish_versions(http, control, 5)
        await wait_ready(http, workers)
        await life_of_a_flow(http, control, workers, v1, v2)

        series = ActivationSeries(http, control, [v1, v2, *more]).start()
        await series.wait_acked(3)
        load = Load(workers).start()
        await load.wait_for(50, "runs before the kill")
        old = cluster.slot_owner(Keys().release(FLOW))
        killed_at = time.time()
        old.kill()
        new = await asyncio.to_thread(cluster.wait_promotion, old, Keys().release(FLOW))
        promoted_at = time.time()
        await asyncio.to_thread(cluster.rejoin, old)
        rejoined_at = time.time()
        await series.wait_acked(3, after=rejoined_at)
        answers = await series.stop()
        last = series.acked()[-1]
        converged = await wait_all_serve(http, workers, FLOW, last.hash, timeout=10)
        await poll(lambda: subscribed(http, workers), what="both replicas subscribed")
        await load.wait_for(50, "runs after the failover")
        records = await load.stop()

        failures, slowest = check_failures(answers, killed_at)
        check_history(await history_of(http, control), answers)
        assert not Load.failures(records), Load.failures(records)[:5]
        assert acl_refusals(cluster) == []  # replication, Sentinel and flowfleet under their ACL users
        assert [await served_version(http, w, FLOW) for w in workers] == [last.hash] * 2
        codes = sorted({str(a.code) for a in answers if a.status != 200})
        print(
            f"injected: SIGKILL of the primary of {FLOW}'s slot (port {old.port}); replica {new.port} "
            f"promoted {promoted_at - killed_at:.2f} s later, the killed node rejoined as a replica "
            f"{rejoined_at - promoted_at:.2f} s after that; checked: {len(records)} runs, 0 failed; "
            f"{len(series.acked())} activations acknowledged, none lost; {failures} answered 503 {codes} "
            f"(slowest {slowest:.2f} s); the last release on both replicas {converged:.2f} s after its 200"
        )
    finally:
        if load is not None:
            await load.stop()
        for w in workers:
            w.stop()
        control.stop()
