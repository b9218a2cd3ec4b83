"""Status tells the truth: a replica that stops deregisters at once, one whose heartbeat is late shows
`stale`, one past its TTL or whose status expired shows `gone` — with host, pid and heartbeat age — in
`GET /v1/fleet` and `GET /v1/flows/{name}/rollout`. Real redis-server; replica and control plane in
process (real worker processes: tests/e2e/test_status_fleet.py)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.settings import Settings
from cluster.store import fleet
from cluster.store.keys import Keys
from cluster.store.store import Store
from control.http.api import create_app
from tests.control_support import ADMIN_TOKEN, DEPLOYER_TOKEN, bearer, flow_doc, write_tokens_file
from tests.redis_server import RedisServer
from tests.worker_support import ToyCompiler, publish_activate, wait_for
from worker.replica import Replica

FLOW = "support_qa"


@pytest.fixture
async def control(
    redis_server: RedisServer, namespace: str, tmp_path: Path, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        redis_url=redis_server.url,
        namespace=namespace,
        admin_token=ADMIN_TOKEN,
        tokens_file=str(write_tokens_file(tmp_path)),
    )
    app = create_app(settings, redis=redis_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as client:
            client.headers.update(bearer(DEPLOYER_TOKEN))
            yield client


def replica_settings(url: str, namespace: str, replica_id: str) -> Settings:
    return Settings.from_env(
        {}, redis_url=url, namespace=namespace, replica_id=replica_id, heartbeat_s=0.1, status_ttl_s=5
    )


async def test_a_replica_that_stops_deregisters_at_once(
    redis_server: RedisServer, redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    await publish_activate(Store(redis_client, keys), "qa", "v1")
    replica = Replica(replica_settings(redis_server.url, namespace, "r-stop"), compiler=ToyCompiler())
    await replica.start()
    try:
        await wait_for(lambda: replica.state.is_ready() and replica.heartbeat.beats >= 1, what="a heartbeat")
        [status] = (await fleet.read_roster(redis_client, keys)).statuses
        assert (status["heartbeat_s"], status["ttl_s"]) == (0.1, 5.0)
    finally:
        await replica.stop()
    # No lingering "draining" status, and no "gone" either: it left.
    assert not await redis_client.exists(keys.replica("r-stop"))
    assert await redis_client.zrange(keys.replicas(), 0, -1) == []
    assert await fleet.read_roster(redis_client, keys) == fleet.Roster()


async def test_a_replica_stops_promptly_when_redis_is_gone(
    make_redis_server: Callable[..., RedisServer], namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_redis_server()
    client = aioredis.Redis.from_url(server.url)
    try:
        await publish_activate(Store(client, Keys(namespace)), "qa", "v1")
    finally:
        await client.aclose()
    replica = Replica(replica_settings(server.url, namespace, "r-alone"), compiler=ToyCompiler())
    await replica.start()
    await wait_for(lambda: replica.heartbeat.beats >= 1, what="a heartbeat")
    server.kill()
    started = time.monotonic()
    await replica.stop()
    assert time.monotonic() - started < 10.0
    assert "could not deregister" in caplog.text


async def write(redis: aioredis.Redis, keys: Keys, replica: str, age_s: float, **fields: Any) -> None:
    """A status as a replica wrote it `age_s` ago (its heartbeat time is the store's clock)."""
    store = Store(redis, keys, clock=lambda: time.time() - age_s)
    status = {"host": f"host-{replica}", "pid": 100, "heartbeat_s": 1.0, "ttl_s": 6.0, **fields}
    await store.write_replica_status(replica, status, ttl_s=60)


async def test_fleet_and_rollout_show_stale_and_gone_replicas_with_their_age(
    control: httpx.AsyncClient, redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    published = await control.post(
        f"/v1/flows/{FLOW}/versions?activate=true", content=json.dumps(flow_doc("a {input}"))
    )
    assert published.status_code == 201, published.text
    digest = published.json()["hash"]
    release = (await control.get(f"/v1/flows/{FLOW}")).json()["release"]
    flows = {FLOW: {"hash": digest, "generation": 1, "activated_at": release["activated_at"]}}
    await write(redis_client, keys, "a-live", 0.0, flows=flows)
    await write(redis_client, keys, "b-late", 3.0, flows=flows)  # 2 intervals of 1 s: late
    await write(redis_client, keys, "c-past-ttl", 8.0, flows=flows)  # past its 6 s TTL
    # d-dead's status expired (it was killed): only its list member remains.
    await Store(redis_client, keys, clock=lambda: time.time() - 9.0).write_replica_status(
        "d-dead", {"flows": flows}, ttl_s=0.001
    )
    await wait_for(lambda: _expired(redis_client, keys.replica("d-dead")), what="d-dead's status expiring")

    body = (await control.get("/v1/fleet")).json()
    rows = {r["replica"]: r for r in body["rows"]}
    assert {r: (row["state"], row["flow"]) for r, row in rows.items()} == {
        "a-live": ("current", FLOW),
        "b-late": ("stale", FLOW),
        "c-past-ttl": ("gone", FLOW),
        "d-dead": ("gone", None),
    }
    assert (rows["b-late"]["host"], rows["b-late"]["pid"]) == ("host-b-late", 100)
    assert 0 <= rows["a-live"]["age_s"] < 1.0 and 3.0 <= rows["b-late"]["age_s"] < 4.0
    assert 8.0 <= rows["c-past-ttl"]["age_s"] and 9.0 <= rows["d-dead"]["age_s"] < 10.0
    assert rows["d-dead"]["seen_at"] is not None and rows["d-dead"]["host"] is None
    presence = {p["replica"]: p["state"] for p in body["presence"]}
    assert presence == {"a-live": "live", "b-late": "stale", "c-past-ttl": "gone", "d-dead": "gone"}
    assert sorted(s["replica_id"] for s in body["replicas"]) == ["a-live", "b-late", "c-past-ttl"]

    rollout = (await control.get(f"/v1/flows/{FLOW}/rollout")).json()
    assert [(r["replica"], r["state"]) for r in rollout["replicas"]] == [
        ("a-live", "current"),
        ("b-late", "stale"),
    ]
    assert (rollout["current"], rollout["total"], rollout["done"]) == (1, 2, False)
    assert 3.0 <= rollout["replicas"][1]["age_s"] < 4.0
    assert [(g["replica"], g["state"]) for g in rollout["gone"]] == [
        ("c-past-ttl", "gone"),
        ("d-dead", "gone"),
    ]

    # The late replica beats again: it is live and current, and the rollout is done.
    await write(redis_client, keys, "b-late", 0.0, flows=flows)
    rollout = (await control.get(f"/v1/flows/{FLOW}/rollout")).json()
    assert (rollout["current"], rollout["total"], rollout["done"]) == (2, 2, True)


async def _expired(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)
