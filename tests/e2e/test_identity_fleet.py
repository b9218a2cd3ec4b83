"""Release identity and revoked versions end to end (issue 17): a control server, a real redis-server and
two real worker processes running the real engine.

- Redis restored from a backup taken at generation 1, then v3 activated (two-phase, the default): v3 is
  generation 2 again, and the replicas that ran v2 as generation 2 move to v3; `flowfleet status --wait`
  reports the rollout done only once they run it.
- A session pinned to a canary moves back to the stable version on both replicas once the canary is
  aborted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.store.keys import Keys
from tests.control_support import DEPLOYER_TOKEN, Cli, ControlProcess, bearer, flow_doc
from tests.e2e.fleet import WorkerProcess, served_version, wait_all_serve, wait_ready
from tests.e2e.test_canary_fleet import publish, run, wait_canary
from tests.redis_server import RedisServer
from tests.test_release_identity import backup, restore

FLOW = "support_qa"


@pytest.fixture
def control(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[ControlProcess]:
    server = ControlProcess(redis_server.url, namespace, tmp_path)
    server.env |= {"FLOWFLEET_CANARY_GUARD_S": "0"}
    yield server.start()
    server.stop()


@pytest.fixture
def make_fleet(redis_server: RedisServer, namespace: str) -> Iterator[Any]:
    workers: list[WorkerProcess] = []

    def make(**env: str) -> list[WorkerProcess]:
        workers.extend(WorkerProcess(redis_server.url, namespace, f"i{i}", **env).start() for i in range(2))
        return workers

    yield make
    for worker in workers:
        worker.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_after_a_restore_a_reused_generation_reaches_every_replica_and_status_waits_for_it(
    control: ControlProcess,
    make_fleet: Any,
    http: httpx.AsyncClient,
    admin: aioredis.Redis,
    namespace: str,
) -> None:
    # Reconcile passes a minute apart: the replicas can only learn about the restore from the new release.
    fleet = make_fleet(FLOWFLEET_RECONCILE_S="60")
    cli = Cli(control.url)
    await wait_ready(http, fleet)
    v1 = await publish(http, control, flow_doc("Summarise: {input}"), activate=True)
    await wait_all_serve(http, fleet, FLOW, v1)
    saved = await backup(admin, Keys(namespace))  # the backup: generation 1
    v2 = await publish(http, control, flow_doc("Summarise briefly: {input}"), activate=True)
    await wait_all_serve(http, fleet, FLOW, v2)

    await restore(admin, Keys(namespace), saved)
    v3 = await publish(http, control, flow_doc("Summarise with a disclaimer: {input}"))
    activated = await asyncio.to_thread(
        cli, "activate", FLOW, v3[:12], "-m", "after the restore", "-o", "json"
    )
    assert activated.code == 0, activated
    body = activated.json()
    assert (body["generation"], body["rollout"]["mode"], sorted(body["rollout"]["ready"])) == (
        2, "two_phase", ["i0", "i1"],
    )  # fmt: skip

    waited = await asyncio.to_thread(cli, "status", FLOW, "--wait", "--timeout", "20")
    assert waited.code == 0, waited
    # Done means done: every replica runs v3 at the moment status says so, not v2 under the same number.
    assert [await served_version(http, w, FLOW) for w in fleet] == [v3, v3]
    rollout = (
        await http.get(f"{control.url}/v1/flows/{FLOW}/rollout", headers=bearer(DEPLOYER_TOKEN))
    ).json()
    assert rollout["done"] and {(r["hash"], r["generation"]) for r in rollout["replicas"]} == {(v3, 2)}
    ran = await run(http, fleet[1])
    assert (ran.json()["version"], ran.json()["generation"]) == (v3, 2)


async def test_aborting_a_canary_moves_its_sessions_back_to_stable_on_every_replica(
    control: ControlProcess, make_fleet: Any, http: httpx.AsyncClient
) -> None:
    fleet = make_fleet()
    cli = Cli(control.url)
    await wait_ready(http, fleet)
    v1 = await publish(http, control, flow_doc("Summarise: {input}"), activate=True)
    v2 = await publish(http, control, flow_doc("Summarise briefly: {input}"))
    await wait_all_serve(http, fleet, FLOW, v1)
    started = await asyncio.to_thread(cli, "canary", "start", FLOW, v2[:12], "--percent", "100")
    assert started.code == 0, started
    await wait_canary(http, fleet, v2)

    first = (await run(http, fleet[0], session="chat-1")).json()
    assert (first["version"], first["variant"], first["pinned"]) == (v2, "canary", True)
    assert (await run(http, fleet[1], session="chat-1")).json()["version"] == v2

    aborted = await asyncio.to_thread(cli, "canary", "abort", FLOW, "-m", "answers too short")
    assert aborted.code == 0, aborted
    await wait_canary(http, fleet, None)
    moved = (await run(http, fleet[1], session="chat-1")).json()
    assert (moved["version"], moved["variant"], moved["pinned"]) == (v1, "stable", True)
    again = (await run(http, fleet[0], session="chat-1")).json()
    assert (again["version"], again["variant"]) == (v1, "stable"), "the new pin holds on the other replica"
