"""gc never deletes what may still be needed: young versions (FLOWFLEET_GC_MIN_AGE_S), the version a
rollout in flight names, versions live session pins name; and `gc --dry-run` lists without deleting.
Against a real redis-server; the API through the real app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store import rollouts
from cluster.store.keys import Keys
from cluster.store.store import Store
from control.http.api import create_app
from control.metrics import ControlMetrics
from control.rollout.cutover import CutoverRequest
from control.rollout.twophase import RolloutAborted, TwoPhaseCutover
from tests.control_support import ADMIN_TOKEN, bearer, flow_doc, write_tokens_file
from tests.redis_server import RedisServer
from tests.test_rollout_serial import prepares, scripted
from tests.worker_support import wait_for

FLOW = "support_qa"
HOUR = 3600.0


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace), history_keep=1)


async def stored(store: Store, template: str) -> str:
    data, digest = content_address(flow_doc(template))
    await store.publish(FLOW, data, digest, author="t", message="", node_count=2)
    return digest


@pytest.fixture
async def http(
    redis_server: RedisServer, namespace: str, tmp_path: Path, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    env = {"FLOWFLEET_GC_MIN_AGE_S": str(HOUR)}  # as an operator sets it
    settings = Settings.from_env(
        env, redis_url=redis_server.url, namespace=namespace, admin_token=ADMIN_TOKEN,
        tokens_file=str(write_tokens_file(tmp_path)), guard_interval_s=0, canary_guard_s=0,
    )  # fmt: skip
    app = create_app(settings, redis=redis_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as client:
            client.headers.update(bearer(ADMIN_TOKEN))
            yield client


async def test_the_api_spares_young_versions_and_a_dry_run_deletes_nothing(
    http: httpx.AsyncClient, redis_client: aioredis.Redis, namespace: str
) -> None:
    assert Settings().gc_min_age_s == 7 * 86400
    yesterday = Store(redis_client, Keys(namespace), clock=lambda: time.time() - 24 * HOUR)
    old, young = (
        await stored(yesterday, "old {input}"),
        await stored(Store(redis_client, Keys(namespace)), "y {input}"),
    )

    listed = await http.post("/v1/gc", params={"dry_run": "true"})
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert (body["dry_run"], body["removed"], body["kept"], body["min_age_s"]) == (
        True,
        {FLOW: [old]},
        1,
        HOUR,
    )
    assert body["bytes_freed"] > 0
    for digest in (old, young):
        assert (await http.get(f"/v1/flows/{FLOW}/versions/{digest}")).status_code == 200
    assert [e for e in (await http.get("/v1/audit")).json()["entries"] if e["action"] == "gc"] == []

    done = (await http.post("/v1/gc")).json()
    assert (done["dry_run"], done["removed"]) == (False, {FLOW: [old]})
    assert (await http.get(f"/v1/flows/{FLOW}/versions/{old}")).status_code == 404
    assert (await http.get(f"/v1/flows/{FLOW}/versions/{young}")).status_code == 200
    assert (await http.post("/v1/gc", params={"dry_run": "maybe"})).status_code == 400


async def test_the_version_of_a_rollout_in_flight_is_kept(store: Store, redis_server: RedisServer) -> None:
    v1, v2 = await stored(store, "v1 {input}"), await stored(store, "v2 {input}")
    await store.activate(FLOW, v1, by="t", reason="first")
    async with scripted(store, redis_server.url, "hung", "silent") as replica:
        rollout = asyncio.create_task(
            TwoPhaseCutover(store, ControlMetrics(), timeout_s=1)(CutoverRequest(FLOW, v2, "ci", "go"))
        )
        await wait_for(lambda: prepares(replica), what="the prepare")
        assert (await store.gc(by="admin")).removed == {}, "the version being prepared stays"
        assert (await store.gc(by="admin", dry_run=True)).removed == {}
        with pytest.raises(RolloutAborted):
            await rollout
    assert (await rollouts.read_record(store.redis, store.keys, FLOW))["state"] == "aborted"  # type: ignore[index]
    assert (await store.gc(by="admin")).removed == {FLOW: (v2,)}


async def test_versions_live_session_pins_name_are_kept(store: Store, redis_client: aioredis.Redis) -> None:
    v1, v2, v3 = [await stored(store, f"v{n} {{input}}") for n in (1, 2, 3)]
    for digest in (v1, v2, v3):
        await store.activate(FLOW, digest, by="t", reason="")
    # History keeps 1 entry: v1 fell out of it, but a session that started on v1 still runs it.
    pin = store.keys.session(FLOW, "chat-7")
    assert await redis_client.set(
        pin, orjson.dumps({"hash": v1, "generation": 1, "at": 1.0}), px=60_000, nx=True
    )
    await redis_client.set(store.keys.session(FLOW, "junk"), b"not json", px=60_000)
    assert (await store.gc(by="admin")).removed == {}
    await redis_client.delete(pin)  # the session expired
    assert (await store.gc(by="admin")).removed == {FLOW: (v1,)}
