"""A fleet of real worker processes against a real redis-server: activation, rollback, refusal of bad
versions, Redis outages, lost events, killed subscriptions and graceful shutdown.

Every test injects one fault, states what it checks, and stops every process it started.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.store.events import ReleaseChanged, encode
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.control_support import DEPLOYER_TOKEN, ControlProcess, bearer
from tests.e2e.fleet import (
    HoldServer,
    WorkerProcess,
    get_json,
    hold_plugin_dir,
    served_version,
    wait_all_serve,
    wait_ready,
)

FLOW = "support_qa"


def qa_doc(prefix: str) -> dict[str, Any]:
    return {
        "name": FLOW,
        "description": f"answers prefixed with {prefix}",
        "nodes": [
            {"id": "prompt_1", "type": "PromptTemplate", "params": {"template": prefix + " {input}"}},
            {"id": "llm_1", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
        ],
        "edges": [
            {"source": "prompt_1", "target": "llm_1", "source_output": "text", "target_input": "prompt"}
        ],
    }


def hold_doc(label: str, url: str) -> dict[str, Any]:
    return {
        "name": FLOW,
        "nodes": [{"id": "hold", "type": "TestHold", "params": {"url": url, "label": label}}],
    }


async def publish(store: Store, doc: dict[str, Any]) -> str:
    data, digest = content_address(doc)
    await store.publish(FLOW, data, digest, author="e2e", message="test", node_count=len(doc["nodes"]))
    return digest


async def release(store: Store, doc: dict[str, Any]) -> tuple[str, int]:
    digest = await publish(store, doc)
    rel = await store.activate(FLOW, digest, by="e2e", reason="test")
    return digest, rel.generation


async def run(client: httpx.AsyncClient, worker: WorkerProcess, inputs: dict[str, Any] | None = None):
    return await client.post(
        f"{worker.url}/v1/flows/{FLOW}/run", json={"inputs": {"input": "hi"} if inputs is None else inputs}
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.fixture
def make_fleet(namespace) -> Any:
    started: list[WorkerProcess] = []

    def make(redis_url: str, n: int = 3, **env: str) -> list[WorkerProcess]:
        workers = [
            WorkerProcess(redis_url, namespace, f"w{len(started) + i}", **env).start() for i in range(n)
        ]
        started.extend(workers)
        return workers

    yield make
    for w in started:
        w.stop()


@pytest.fixture
def store(redis_client, namespace) -> Store:
    return Store(redis_client, Keys(namespace))


@pytest.fixture
def control(redis_server, namespace, tmp_path) -> Any:
    server = ControlProcess(redis_server.url, namespace, tmp_path).start()
    yield server
    server.stop()


async def control_call(http: httpx.AsyncClient, control: ControlProcess, path: str, **kwargs: Any) -> Any:
    r = await http.post(f"{control.url}/v1/flows/{FLOW}/{path}", headers=bearer(DEPLOYER_TOKEN), **kwargs)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def test_three_replicas_serve_every_activation_and_rollback_brings_them_back(
    redis_server, store, make_fleet, http, control
):
    """Through the control plane's HTTP API: publish + activate v1, v2, then roll back."""

    async def publish_and_activate(doc: dict[str, Any]) -> dict[str, Any]:
        published = await control_call(http, control, "versions", content=json.dumps(doc))
        return await control_call(http, control, "activate", json={"hash": published["hash"]})

    v1 = (await publish_and_activate(qa_doc("v1")))["hash"]
    fleet = make_fleet(redis_server.url)
    await wait_ready(http, fleet)
    await wait_all_serve(http, fleet, FLOW, v1)

    second = await publish_and_activate(qa_doc("v2"))
    v2, gen2 = second["hash"], second["generation"]
    took = await wait_all_serve(http, fleet, FLOW, v2)
    swaps = [await swap_delay(http, w, second["activated_at"]) for w in fleet]
    print(
        f"activation reached 3 replicas in {took * 1000:.1f} ms (observed by polling); swapped "
        f"{', '.join(f'{d * 1000:.1f}' for d in swaps)} ms after the activation was recorded"
    )
    for w in fleet:
        r = await run(http, w)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == v2 and r.json()["generation"] == gen2
        assert "v2 hi" in str(r.json()["outputs"])
        assert r.headers["x-flowfleet-replica"] == w.replica_id

    back = await control_call(http, control, "rollback", json={})
    assert back["hash"] == v1
    took = await wait_all_serve(http, fleet, FLOW, v1)
    print(f"rollback reached 3 replicas in {took * 1000:.1f} ms")
    for w in fleet:
        r = await run(http, w)
        assert r.json()["version"] == v1 and r.json()["generation"] == back["generation"]

    async def fleet_view_current() -> bool:
        r = await http.get(f"{control.url}/v1/fleet", headers=bearer(DEPLOYER_TOKEN))
        rows = [row for row in r.json()["rows"] if row["flow"] == FLOW]
        return sorted(row["replica"] for row in rows if row["state"] == "current") == sorted(
            w.replica_id for w in fleet
        ) and all(row["generation"] == back["generation"] for row in rows)

    await poll(fleet_view_current, what="the control plane's fleet view showing 3 current replicas")


async def swap_delay(http: httpx.AsyncClient, worker: WorkerProcess, activated_at: float) -> float:
    """Seconds from the release record's activated_at to this replica's swap (same machine clock)."""
    body = await get_json(http, f"{worker.url}/v1/flows")
    [entry] = [f for f in body["flows"] if f["flow"] == FLOW]
    return float(entry["loaded_at"]) - activated_at


async def test_slow_run_finishes_on_v1_while_a_run_started_after_the_swap_gets_v2(
    redis_server, store, make_fleet, http
):
    hold = await HoldServer().start()
    try:
        v1, _ = await release(store, hold_doc("v1", hold.url("slow")))
        [worker] = make_fleet(redis_server.url, 1, PLUGIN_PATH=str(hold_plugin_dir()))
        await wait_ready(http, [worker])
        slow = asyncio.create_task(run(http, worker, {}))  # TestHold takes no input
        await hold.wait_arrived("slow")  # the v1 run is now in flight

        hold.release("fast")
        v2, _ = await release(store, hold_doc("v2", hold.url("fast")))
        await wait_all_serve(http, [worker], FLOW, v2)
        fresh = await run(http, worker, {})
        assert fresh.json()["version"] == v2
        assert fresh.json()["outputs"] == {"hold": "v2:released"}
        assert not slow.done()

        hold.release("slow")
        old = await slow
        assert old.status_code == 200, old.text
        assert old.json()["version"] == v1 and old.json()["outputs"] == {"hold": "v1:released"}
    finally:
        await hold.stop()


async def inject_release(redis_client: aioredis.Redis, keys: Keys, digest: str, generation: int) -> None:
    """Point the release record at `digest` and announce it, bypassing every check of the store."""
    await redis_client.hset(keys.release(FLOW), mapping={"hash": digest, "generation": generation})
    event = ReleaseChanged(flow=FLOW, hash=digest, generation=generation, by="intruder", at=time.time())
    await redis_client.publish(keys.channel(), encode(event))


async def test_corrupt_blob_and_invalid_document_are_refused_everywhere_and_v1_keeps_serving(
    redis_server, store, make_fleet, http, redis_client, namespace
):
    keys = Keys(namespace)
    v1, gen1 = await release(store, qa_doc("v1"))
    fleet = make_fleet(redis_server.url)
    await wait_ready(http, fleet)
    await wait_all_serve(http, fleet, FLOW, v1)

    # 1. A stored version whose bytes were changed in Redis after publishing.
    v2 = await publish(store, qa_doc("v2"))
    await redis_client.set(keys.blob(FLOW, v2), content_address(qa_doc("evil"))[0])
    await inject_release(redis_client, keys, v2, gen1 + 1)
    await expect_refused(http, store, fleet, v1, v2, "hash_mismatch")

    # 2. A document that hashes correctly but names a component nobody has.
    bad = qa_doc("v3")
    bad["nodes"][1]["type"] = "NoSuchComponent"
    data, v3 = content_address(bad)
    await redis_client.set(keys.blob(FLOW, v3), data)
    await inject_release(redis_client, keys, v3, gen1 + 2)
    await expect_refused(http, store, fleet, v1, v3, "invalid_document")


async def expect_refused(
    http: httpx.AsyncClient, store: Store, fleet: list[WorkerProcess], serving: str, refused: str, reason: str
) -> None:
    async def all_report_it() -> bool:
        statuses = {s["id"]: s for s in await store.read_fleet()}
        for w in fleet:
            err = statuses.get(w.replica_id, {}).get("last_error") or {}
            if err.get("hash") != refused or err.get("reason") != reason:
                return False
        return True

    await poll(all_report_it, what=f"every replica reporting {reason}")
    for w in fleet:
        assert await served_version(http, w, FLOW) == serving
        r = await run(http, w)
        assert r.status_code == 200 and r.json()["version"] == serving
        metrics = (await http.get(f"{w.url}/metrics")).text
        assert f'flowfleet_reload_errors_total{{flow="{FLOW}",reason="{reason}"}}' in metrics
        ready = await get_json(http, f"{w.url}/readyz")
        assert ready is not None and ready["flows"][0]["state"] == "loaded_with_error"


async def test_redis_killed_while_requests_flow(make_redis_server, namespace, make_fleet, http):
    # Persistence on, as in production: a restarted Redis still holds the release records.
    server = make_redis_server("--appendonly", "yes", "--appendfsync", "always")
    client = aioredis.Redis.from_url(server.url)
    store = Store(client, Keys(namespace))
    try:
        v1, _ = await release(store, qa_doc("v1"))
        fleet = make_fleet(server.url)
        await wait_ready(http, fleet)
        await wait_all_serve(http, fleet, FLOW, v1)

        results: list[tuple[int, str | None]] = []
        stop = asyncio.Event()

        async def load() -> None:
            i = 0
            while not stop.is_set():
                r = await run(http, fleet[i % len(fleet)])
                results.append((r.status_code, r.json().get("version")))
                i += 1

        loader = asyncio.create_task(load())
        await poll(lambda: len(results) >= 30, what="load before the outage")
        server.kill()
        await client.aclose()
        before_outage = len(results)

        async def all_unsubscribed() -> bool:
            states = [await get_json(http, f"{w.url}/readyz") for w in fleet]
            return all(s is not None and not s["subscribed"] for s in states)

        await poll(all_unsubscribed, what="every replica noticing the outage")
        await poll(lambda: len(results) >= before_outage + 60, what="load during the outage")
        server.start()
        client = aioredis.Redis.from_url(server.url)
        store = Store(client, Keys(namespace))
        v2, _ = await release(store, qa_doc("v2"))
        took = await wait_all_serve(http, fleet, FLOW, v2, timeout=30)
        print(f"activation after Redis returned reached 3 replicas in {took:.2f} s")
        stop.set()
        await loader
        failures = [r for r in results if r[0] != 200]
        assert not failures, failures[:5]
        assert {v for _, v in results} <= {v1, v2}
    finally:
        await client.aclose()


async def test_release_changed_without_an_event_converges_by_reconcile(
    redis_server, store, make_fleet, http, redis_client, namespace
):
    keys = Keys(namespace)
    v1, gen1 = await release(store, qa_doc("v1"))
    fleet = make_fleet(redis_server.url, FLOWFLEET_RECONCILE_S="1")
    await wait_ready(http, fleet)
    v2 = await publish(store, qa_doc("v2"))
    # As if the event were lost: the record changes, nothing is published.
    await redis_client.hset(keys.release(FLOW), mapping={"hash": v2, "generation": gen1 + 1})
    took = await wait_all_serve(http, fleet, FLOW, v2, timeout=10)
    print(f"reconcile (FLOWFLEET_RECONCILE_S=1) converged 3 replicas in {took:.2f} s")


async def test_killed_subscriber_connections_still_get_the_next_activation(
    redis_server, store, make_fleet, http, redis_client, namespace
):
    v1, _ = await release(store, qa_doc("v1"))
    # A long reconcile interval, so only resubscribe (and its re-read) can bring the change.
    fleet = make_fleet(redis_server.url, FLOWFLEET_RECONCILE_S="600")
    await wait_ready(http, fleet)
    channel = Keys(namespace).channel()
    await poll(
        lambda: redis_client.pubsub_numsub(channel), check=lambda r: r[0][1] == 3, what="3 subscribers"
    )
    killed = await redis_client.client_kill_filter(_type="pubsub")
    assert killed >= 3
    v2, _ = await release(store, qa_doc("v2"))
    await wait_all_serve(http, fleet, FLOW, v2, timeout=20)


async def test_sigterm_finishes_the_in_flight_run(redis_server, store, make_fleet, http):
    hold = await HoldServer().start()
    try:
        await release(store, hold_doc("v1", hold.url("inflight")))
        [worker] = make_fleet(redis_server.url, 1, PLUGIN_PATH=str(hold_plugin_dir()))
        await wait_ready(http, [worker])
        pending = asyncio.create_task(run(http, worker, {}))
        await hold.wait_arrived("inflight")
        worker.terminate()
        await poll(lambda: "draining" in worker.log() or "Shutting down" in worker.log(), what="shutdown")
        assert worker.proc is not None and worker.proc.poll() is None, "must wait for the run"
        hold.release("inflight")
        r = await pending
        assert r.status_code == 200 and r.json()["outputs"] == {"hold": "v1:released"}
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown.
        assert await asyncio.to_thread(worker.wait, 30) in (0, -signal.SIGTERM)
        assert "stopped" in worker.log()
    finally:
        await hold.stop()


async def poll(
    probe: Callable[[], Any], *, check: Callable[[Any], bool] = bool, timeout: float = 20.0, what: str = ""
) -> None:
    """Bounded polling for a condition (sync or async probe)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if check(value):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
