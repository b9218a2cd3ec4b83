"""A flow name holding `/` is a 400 invalid_name naming the rule, on the control API and on a replica's
run API — whether percent-encoded (`a%2Fb`, which routing sees decoded) or as an extra path segment —
never a bare 404 nor another flow's answer. Real redis-server, apps in process (httpx.ASGITransport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.store import Store
from control.http.api import create_app
from tests.control_support import ADMIN_TOKEN, DEPLOYER_TOKEN, bearer, flow_doc, write_tokens_file
from tests.redis_server import RedisServer
from tests.worker_support import wait_for
from worker.app import create_app as create_worker_app

FLOW = "support_qa"
RULE = "use 1-128 letters, digits, '_', '.' or '-'"


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


def invalid_name(response: httpx.Response, name: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == "invalid_name" and body["details"] == {"flow": name}
    assert f"invalid flow name {name!r}" in body["message"] and RULE in body["message"]
    return body


async def test_the_control_api_refuses_a_name_with_a_slash_encoded_or_not(control: httpx.AsyncClient) -> None:
    doc = flow_doc("Summarise: {input}")
    published = await control.post(f"/v1/flows/{FLOW}/versions?activate=true", content=json.dumps(doc))
    assert published.status_code == 201, published.text
    invalid_name(await control.get("/v1/flows/a%2Fb"), "a/b")
    invalid_name(await control.get("/v1/flows/a/b"), "a/b")
    invalid_name(await control.post("/v1/flows/a/b/activate", json={"hash": "0" * 64}), "a/b")
    invalid_name(await control.post("/v1/flows/a%2Fb/versions", content=json.dumps(doc)), "a/b")
    invalid_name(await control.get("/v1/flows/a/b/c/history"), "a/b/c")
    # Decoded, this path is flow support_qa's history: the name the client sent is another one.
    invalid_name(await control.get(f"/v1/flows/{FLOW}%2Fhistory"), f"{FLOW}/history")
    invalid_name(await control.get(f"/v1/flows/{FLOW}%2Fx/history"), f"{FLOW}/x")
    # What is not about a flow name keeps its answer.
    assert (await control.get(f"/v1/flows/{FLOW}/history")).status_code == 200
    missing = await control.get("/v1/nothing/here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert (await control.get(f"/v1/flows/{FLOW}/activate")).status_code == 405
    # Authentication still comes first on a route.
    anonymous = await control.get(f"/v1/flows/{FLOW}%2Fhistory", headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_a_replica_refuses_an_encoded_slash_that_routing_would_read_as_another_flow(
    redis_server: RedisServer, namespace: str, redis_client: aioredis.Redis
) -> None:
    doc = flow_doc("Summarise: {input}")
    data, digest = content_address(doc)
    store = Store(redis_client, Keys(namespace))
    await store.publish(FLOW, data, digest, author="t", message="t", node_count=len(doc["nodes"]))
    await store.activate(FLOW, digest, by="t", reason="t")
    settings = Settings.from_env({}, redis_url=redis_server.url, namespace=namespace, replica_id="n1")
    app = create_worker_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:

            async def serving() -> bool:
                flows = (await client.get("/v1/flows")).json()["flows"]
                return any(f["flow"] == FLOW for f in flows)

            await wait_for(serving, what="the flow served")
            ran = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {"input": "hi"}})
            assert ran.status_code == 200, ran.text
            # Decoded, the path is support_qa's run route; the name the client sent is `support_qa/run`.
            aliased = await client.post(f"/v1/flows/{FLOW}%2Frun", json={"inputs": {"input": "hi"}})
            invalid_name(aliased, f"{FLOW}/run")
            # A name with a slash, encoded or as an extra segment, names no flow: 400, not a bare 404.
            invalid_name(await client.post("/v1/flows/a%2Fb/run", json={"inputs": {}}), "a/b")
            invalid_name(await client.post("/v1/flows/a/b/run", json={"inputs": {}}), "a/b")
            invalid_name(await client.get("/v1/flows/a/b"), "a/b")
            missing = await client.get("/v1/nothing/here")
            assert missing.status_code == 404 and missing.json()["error"] == "not_found"
