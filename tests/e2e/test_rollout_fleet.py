"""Two-phase rollouts on a real fleet: a control server, a real redis-server and three worker processes.

Two replicas have the test plugin (component `TestHold`), the third does not: a version using it is
exactly "a version one replica cannot load". The control plane has the plugin, so it accepts the version.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.control_support import DEPLOYER_TOKEN, Cli, ControlProcess, bearer, flow_doc
from tests.e2e.fleet import WorkerProcess, hold_plugin_dir, served_version, wait_all_serve, wait_ready
from tests.e2e.skew import measure_switch
from tests.redis_server import RedisServer

FLOW = "support_qa"


def hold_doc() -> dict[str, Any]:
    """Loadable only where the TestHold plugin is installed (never run here, only compiled)."""
    params = {"url": "http://127.0.0.1:9/none", "label": "v2"}
    return {"name": FLOW, "nodes": [{"id": "hold", "type": "TestHold", "params": params}]}


@pytest.fixture
def plugin() -> Path:
    return hold_plugin_dir()


@pytest.fixture
def control(
    redis_server: RedisServer, namespace: str, tmp_path: Path, plugin: Path, request: pytest.FixtureRequest
) -> Iterator[ControlProcess]:
    server = ControlProcess(redis_server.url, namespace, tmp_path)
    server.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH")) if p)
    server.env |= {"FLOWFLEET_GUARD_S": "0.3", "FLOWFLEET_PREPARE_TIMEOUT_S": "10"}
    server.env |= getattr(request, "param", {})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fleet(redis_server: RedisServer, namespace: str, plugin: Path) -> Iterator[list[WorkerProcess]]:
    """r0 and r1 have the plugin, r2 does not."""
    workers = [
        WorkerProcess(redis_server.url, namespace, "r0", PLUGIN_PATH=str(plugin)).start(),
        WorkerProcess(redis_server.url, namespace, "r1", PLUGIN_PATH=str(plugin)).start(),
        WorkerProcess(redis_server.url, namespace, "r2").start(),
    ]
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.fixture
async def store(redis_server: RedisServer, namespace: str) -> AsyncIterator[Store]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield Store(client, Keys(namespace))
    await client.aclose()


async def cli(control: ControlProcess, *args: str) -> Any:
    return await asyncio.to_thread(Cli(control.url), *args)


async def publish(control: ControlProcess, http: httpx.AsyncClient, doc: dict[str, Any]) -> str:
    reply = await http.post(
        f"{control.url}/v1/flows/{FLOW}/versions", json=doc, headers=bearer(DEPLOYER_TOKEN)
    )
    assert reply.status_code in (200, 201), reply.text
    return content_address(doc)[1]


async def start(control: ControlProcess, fleet: list[WorkerProcess], http: httpx.AsyncClient) -> str:
    """Every replica ready and serving v1 (activated two-phase through the CLI, then `status --wait`)."""
    await wait_ready(http, fleet)
    await wait_live(http, control, len(fleet))
    v1 = await publish(control, http, flow_doc("v1: {input}"))
    result = await cli(control, "activate", FLOW, v1, "-m", "v1")
    assert result.code == 0 and f"prepared on {len(fleet)} replica(s)" in result.out, result
    waited = await cli(control, "status", FLOW, "--wait", "--timeout", "20")
    assert waited.code == 0 and "3/3 replicas on generation 1" in waited.out, waited
    return v1


async def wait_live(
    http: httpx.AsyncClient, control: ControlProcess, count: int, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        fleet = (await http.get(f"{control.url}/v1/fleet", headers=bearer(DEPLOYER_TOKEN))).json()
        # A prepare waits only for replicas whose status says they are subscribed to the channel.
        if sum(1 for r in fleet["replicas"] if r.get("subscribed")) == count:
            return
        assert time.monotonic() < deadline, fleet
        await asyncio.sleep(0.05)


async def test_prepare_commit_switches_three_replicas_together_and_reports_skew(
    control: ControlProcess, fleet: list[WorkerProcess], http: httpx.AsyncClient
) -> None:
    await start(control, fleet, http)
    v2 = await publish(control, http, flow_doc("v2: {input}"))
    two_phase = await measure_switch(http, control.url, DEPLOYER_TOKEN, fleet, FLOW, v2)
    rollout = two_phase.response["rollout"]
    assert (
        rollout["mode"] == "two_phase" and rollout["ready"] == ["r0", "r1", "r2"] and not rollout["failures"]
    )
    v3 = await publish(control, http, flow_doc("v3: {input}"))
    one_phase = await measure_switch(http, control.url, DEPLOYER_TOKEN, fleet, FLOW, v3, prepare=False)
    assert one_phase.response["rollout"] == {"mode": "direct"}
    # Numbers for the benchmark report (not asserted: timing on a shared machine is not a test).
    print(f"\nswitch skew two-phase: {two_phase.as_dict()}\nswitch skew one-phase: {one_phase.as_dict()}")
    for worker in fleet:
        assert "result=ready" in worker.log(), worker.log()[-2000:]


async def test_a_replica_missing_a_component_aborts_the_activation_and_force_commits(
    control: ControlProcess, fleet: list[WorkerProcess], http: httpx.AsyncClient, store: Store
) -> None:
    v1 = await start(control, fleet, http)
    v2 = await publish(control, http, hold_doc())

    refused = await cli(control, "activate", FLOW, v2, "-m", "needs the plugin")
    assert refused.code == 6, refused
    lines = refused.err.strip().splitlines()
    assert lines[0].startswith(
        "flowfleet: rollout of support_qa to " + v2[:12] + " aborted, nothing switched"
    )
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["r2"]
    assert "invalid_document" in lines[1] and "TestHold" in lines[1]
    # Nothing switched: the record, and every replica, still on v1.
    release = await store.get_release(FLOW)
    assert release is not None and (release.hash, release.generation) == (v1, 1)
    assert [await served_version(http, w, FLOW) for w in fleet] == [v1, v1, v1]
    audit = await store.audit(FLOW, 5)
    assert audit[0]["action"] == "rollout_aborted" and "r2: invalid_document" in audit[0]["failures"]
    rollout = (
        await http.get(f"{control.url}/v1/flows/{FLOW}/rollout", headers=bearer(DEPLOYER_TOKEN))
    ).json()
    assert rollout["rollout"]["state"] == "aborted" and rollout["done"] is True

    forced = await cli(control, "activate", FLOW, v2, "--force", "-m", "r2 will catch up later")
    assert forced.code == 0, forced
    assert "generation 2" in forced.out and "forced past r2: invalid_document" in forced.out
    await wait_all_serve(http, fleet[:2], FLOW, v2)
    assert await served_version(http, fleet[2], FLOW) == v1
    audit = await store.audit(FLOW, 5)
    forced_entry = next(e for e in audit if e["action"] == "rollout_forced")
    assert forced_entry["by"] == "ci" and "r2: invalid_document" in forced_entry["failures"]

    # `status --wait` names the replica that cannot load the release, with exit 6.
    waited = await cli(control, "status", FLOW, "--wait", "--timeout", "20")
    assert waited.code == 6, waited
    assert "r2: generation 1: invalid_document" in waited.err and "2/3 replicas on generation 2" in waited.out


@pytest.mark.parametrize("control", [{"FLOWFLEET_AUTO_ROLLBACK_REPLICAS": "0"}], indirect=True)
async def test_repeated_load_failures_roll_the_fleet_back_automatically(
    control: ControlProcess, fleet: list[WorkerProcess], http: httpx.AsyncClient, store: Store
) -> None:
    v1 = await start(control, fleet, http)
    v2 = await publish(control, http, hold_doc())
    pushed = await cli(control, "activate", FLOW, v2, "--no-prepare", "-m", "one-phase")
    assert pushed.code == 0 and "(one-phase, no prepare)" in pushed.out, pushed

    # r2 fails v2 (at once, then after its 2 s and 4 s backoffs); the third failure triggers the guard.
    deadline = time.monotonic() + 40
    while (release := await store.get_release(FLOW)) is not None and release.generation < 3:
        assert time.monotonic() < deadline, await http.get(
            f"{control.url}/v1/fleet", headers=bearer(DEPLOYER_TOKEN)
        )
        await asyncio.sleep(0.1)
    assert release is not None
    assert (release.hash, release.generation, release.action) == (v1, 3, "rollback")
    assert release.activated_by == "auto-rollback"
    assert "failed to load 3+ consecutive times on r2 (invalid_document" in release.reason
    await wait_all_serve(http, fleet, FLOW, v1)
    audit = await store.audit(FLOW, 3)
    assert audit[0]["action"] == "rollback" and audit[0]["by"] == "auto-rollback"
    # Never twice for one generation, never a rollback of the automatic rollback itself.
    metrics = (await http.get(f"{control.url}/metrics", headers=bearer(DEPLOYER_TOKEN))).text
    assert 'flowfleet_control_auto_rollbacks_total{result="rolled_back"} 1.0' in metrics
    assert 'flowfleet_control_replicas{flow="support_qa",generation="3"} 3.0' in metrics
