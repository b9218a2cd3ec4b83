"""The control API against a real redis-server: every route's success and its 4xx answers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store.events import ReleaseChanged, decode
from cluster.store.keys import Keys
from cluster.store.store import Store
from control.http.api import create_app
from tests.control_support import (
    ADMIN_TOKEN,
    DEPLOYER_TOKEN,
    VIEWER_TOKEN,
    bearer,
    failing_example_doc,
    flow_doc,
    invalid_doc,
    write_tokens_file,
)
from tests.redis_server import RedisServer

MAX_BODY = 64 * 1024
FLOW = "support_qa"


@pytest.fixture
def settings(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        namespace=namespace,
        admin_token=ADMIN_TOKEN,
        tokens_file=str(write_tokens_file(tmp_path)),
        max_body_bytes=MAX_BODY,
        gc_min_age_s=0,  # gc here may delete a version published a moment ago
    )


@pytest.fixture
async def http(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, redis=redis_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as client:
            client.headers.update(bearer(DEPLOYER_TOKEN))
            yield client


@pytest.fixture
def store(redis_client: aioredis.Redis, namespace: str) -> Store:
    return Store(redis_client, Keys(namespace))


async def publish(http: httpx.AsyncClient, doc: Any, flow: str = FLOW, **params: str) -> httpx.Response:
    return await http.post(f"/v1/flows/{flow}/versions", content=json.dumps(doc), params=params)


async def published(http: httpx.AsyncClient, doc: Any, **params: str) -> str:
    response = await publish(http, doc, **params)
    assert response.status_code in (200, 201), response.text
    digest: str = response.json()["hash"]
    return digest


async def next_message(pubsub: Any, within_s: float = 10.0) -> dict[str, Any]:
    """The next pub/sub message, failing the test if none arrives in time."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            return dict(message)
    raise AssertionError(f"no pub/sub message within {within_s}s")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)
    return body


# -- publish ------------------------------------------------------------------------------------------
async def test_publish_stores_once_and_records_author_and_message(http: httpx.AsyncClient) -> None:
    doc = flow_doc()
    first = await http.post(
        f"/v1/flows/{FLOW}/versions", content=json.dumps(doc), headers={"X-Flowfleet-Message": "first cut"}
    )
    assert first.status_code == 201
    assert first.json() == {"flow": FLOW, "hash": content_address(doc)[1], "created": True, "release": None}
    again = await publish(http, doc, message="ignored: identical content")
    assert again.status_code == 200 and again.json()["created"] is False
    version = (await http.get(f"/v1/flows/{FLOW}/versions/{first.json()['hash']}")).json()
    assert version["document"] == doc
    assert version["meta"]["author"] == "ci" and version["meta"]["message"] == "first cut"
    assert version["meta"]["node_count"] == 2


async def test_publish_with_activate_makes_it_current(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/v1/flows/{FLOW}/versions",
        content=json.dumps(flow_doc()),
        params={"activate": "true"},
        headers={"X-Flowfleet-Message": "naïve fix ✓".encode()},
    )
    assert response.status_code == 201
    release = response.json()["release"]
    assert (
        release["generation"] == 1 and release["activated_by"] == "ci" and release["reason"] == "naïve fix ✓"
    )
    current = (await http.get(f"/v1/flows/{FLOW}")).json()
    assert current["release"]["hash"] == response.json()["hash"]
    assert [v["hash"] for v in current["versions"]] == [response.json()["hash"]]


async def test_publish_reports_every_problem_and_stores_nothing(http: httpx.AsyncClient) -> None:
    body = assert_error(await publish(http, invalid_doc()), 422, "invalid_flow")
    problems = body["details"]["problems"]
    assert len(problems) >= 2
    assert any("NoSuchComponent" in p["message"] for p in problems)
    assert any("ghost" in p["message"] for p in problems)
    assert_error(await http.get(f"/v1/flows/{FLOW}"), 404, "flow_not_found")


async def test_publish_runs_the_documents_examples_before_storing(http: httpx.AsyncClient) -> None:
    body = assert_error(await publish(http, failing_example_doc()), 422, "invalid_flow")
    assert "smoke" in json.dumps(body["details"]["problems"])
    assert (await http.get("/v1/flows")).json() == {"flows": []}


async def test_document_name_must_match_the_url(http: httpx.AsyncClient) -> None:
    body = assert_error(await publish(http, flow_doc(name="other_flow")), 422, "invalid_flow")
    assert body["details"]["problems"][0]["code"] == "name_mismatch"
    # A document without a name takes the URL's.
    assert (await publish(http, flow_doc(name=None), flow="unnamed")).status_code == 201


@pytest.mark.parametrize(
    ("content", "params", "status", "code"),
    [
        (b"{not json", {}, 400, "bad_request"),
        (b"   ", {}, 400, "bad_request"),
        (b"[1, 2]", {}, 422, "invalid_flow"),
        (b"[" * 500 + b"]" * 500, {}, 422, "invalid_flow"),
        (b"{}", {"message": "x" * 2001}, 400, "bad_request"),
        (b"{}", {"activate": "maybe"}, 400, "bad_request"),
        (b"{}", {"expected_generation": "-1", "activate": "true"}, 400, "bad_request"),
        (b"{}", {"expected_generation": "1"}, 400, "bad_request"),
        (b"x" * (MAX_BODY + 1), {}, 413, "payload_too_large"),
    ],
)
async def test_publish_rejects_bad_requests(
    http: httpx.AsyncClient, content: bytes, params: dict[str, str], status: int, code: str
) -> None:
    response = await http.post(f"/v1/flows/{FLOW}/versions", content=content, params=params)
    assert_error(response, status, code)


async def test_invalid_flow_name_in_the_url_is_a_400(http: httpx.AsyncClient) -> None:
    assert_error(await publish(http, flow_doc(name=None), flow="-bad"), 400, "invalid_name")
    assert_error(await http.get("/v1/flows/has%20space/history"), 400, "invalid_name")


# -- activate -----------------------------------------------------------------------------------------
async def test_activate_by_short_hash_with_cas(http: httpx.AsyncClient) -> None:
    v1 = await published(http, flow_doc("one {input}"))
    v2 = await published(http, flow_doc("two {input}"))
    url = f"/v1/flows/{FLOW}/activate"
    first = await http.post(url, json={"hash": v1[:8], "expected_generation": 0}, params={"message": "go"})
    assert first.status_code == 200
    assert first.json()["hash"] == v1 and first.json()["generation"] == 1 and first.json()["reason"] == "go"
    stale = await http.post(url, json={"hash": v2, "expected_generation": 0})
    body = assert_error(stale, 409, "generation_conflict")
    assert body["details"] == {"flow": FLOW, "expected_generation": 0, "actual_generation": 1}
    second = await http.post(url, json={"hash": v2.upper()[:10]})
    assert second.json()["generation"] == 2 and second.json()["previous_hash"] == v1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"hash": "0123456789abcdef"}, 404, "version_not_found"),
        ({"hash": "xyz"}, 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"hash": 12345678}, 400, "bad_request"),
        ({"hash": "0123456789abcdef", "expected_generation": "1"}, 400, "bad_request"),
        ({"hash": "0123456789abcdef", "expected_generation": True}, 400, "bad_request"),
        ({"hash": "0123456789abcdef", "generation": 1}, 400, "bad_request"),
        ([], 400, "bad_request"),
    ],
)
async def test_activate_rejects(http: httpx.AsyncClient, body: Any, status: int, code: str) -> None:
    await published(http, flow_doc())
    assert_error(await http.post(f"/v1/flows/{FLOW}/activate", json=body), status, code)


async def test_activate_unknown_flow_is_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/flows/nobody/activate", json={"hash": "0123456789abcdef"})
    assert_error(response, 404, "flow_not_found")


async def test_activate_refuses_a_corrupt_blob_and_announces_nothing(
    http: httpx.AsyncClient, redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    digest = await published(http, flow_doc())
    await redis_client.set(keys.blob(FLOW, digest), b'{"name":"support_qa","nodes":[],"edges":[]}')
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.channel())
    try:
        body = assert_error(
            await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": digest}), 409, "corrupt_blob"
        )
        assert body["details"]["hash"] == digest
        assert (await http.get(f"/v1/flows/{FLOW}")).json()["release"] is None
        assert_error(await http.get(f"/v1/flows/{FLOW}/versions/{digest}"), 409, "corrupt_blob")
        # A ping published after the refusal arrives first: nothing was announced before it.
        await redis_client.publish(keys.channel(), b"probe")
        assert (await next_message(pubsub))["data"] == b"probe"
    finally:
        await pubsub.aclose()


async def test_activation_event_names_the_principal(
    http: httpx.AsyncClient, redis_client: aioredis.Redis, namespace: str
) -> None:
    digest = await published(http, flow_doc())
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(Keys(namespace).channel())
    try:
        await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": digest})
        message = await next_message(pubsub)
    finally:
        await pubsub.aclose()
    event = decode(message["data"])
    assert isinstance(event, ReleaseChanged)
    assert (event.flow, event.hash, event.generation, event.by) == (FLOW, digest, 1, "ci")


async def test_concurrent_activations_with_one_expectation_one_wins(http: httpx.AsyncClient) -> None:
    digests = [await published(http, flow_doc(f"v{i} {{input}}")) for i in range(10)]
    url = f"/v1/flows/{FLOW}/activate"
    responses = await asyncio.gather(
        *(http.post(url, json={"hash": d, "expected_generation": 0}) for d in digests)
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 9
    history = (await http.get(f"/v1/flows/{FLOW}/history")).json()["releases"]
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert [h["hash"] for h in history] == [winner["hash"]]


# -- rollback -----------------------------------------------------------------------------------------
async def test_rollback_chain_and_explicit_targets(http: httpx.AsyncClient) -> None:
    a = await published(http, flow_doc("a {input}"), activate="true")
    b = await published(http, flow_doc("b {input}"), activate="true")
    url = f"/v1/flows/{FLOW}/rollback"
    undo = (await http.post(url, headers={"X-Flowfleet-Message": "bad answers"})).json()
    assert (undo["hash"], undo["generation"], undo["action"], undo["reason"]) == (
        a,
        3,
        "rollback",
        "bad answers",
    )
    redo = (await http.post(url, json={})).json()
    assert (redo["hash"], redo["generation"]) == (b, 4)
    to_gen = (await http.post(url, json={"to_generation": 1})).json()
    assert (to_gen["hash"], to_gen["generation"]) == (a, 5)
    to_hash = (await http.post(url, json={"to_hash": b[:12]})).json()
    assert (to_hash["hash"], to_hash["generation"]) == (b, 6)
    history = (await http.get(f"/v1/flows/{FLOW}/history", params={"limit": 3})).json()["releases"]
    assert [h["generation"] for h in history] == [6, 5, 4]


async def test_rollback_errors(http: httpx.AsyncClient) -> None:
    url = f"/v1/flows/{FLOW}/rollback"
    assert_error(await http.post(url), 404, "flow_not_found")
    a = await published(http, flow_doc("a {input}"))
    assert_error(await http.post(url), 409, "no_previous_release")
    assert_error(await http.post(url, json={"to_hash": a}), 409, "no_previous_release")
    await published(http, flow_doc("a {input}"), activate="true")
    assert_error(await http.post(url), 409, "no_previous_release")
    assert_error(await http.post(url, json={"to_generation": 9}), 404, "release_not_found")
    assert_error(
        await http.post(url, json={"to_generation": 1, "to_hash": "0123456789ab"}), 400, "bad_request"
    )
    assert_error(await http.post(url, json={"to_hash": "0123456789ab"}), 404, "version_not_found")
    assert_error(await http.post(url, json={"to_generation": "1"}), 400, "bad_request")
    assert_error(await http.post(url, content=b"{oops"), 400, "bad_request")


# -- reads --------------------------------------------------------------------------------------------
async def test_flows_flow_and_history(http: httpx.AsyncClient) -> None:
    a = await published(http, flow_doc("a {input}"), activate="true")
    await published(http, flow_doc(name="second"), flow="second")
    flows = (await http.get("/v1/flows")).json()["flows"]
    assert [(f["name"], (f["release"] or {}).get("hash")) for f in flows] == [("second", None), (FLOW, a)]
    assert (await http.get("/v1/flows/second")).json()["release"] is None
    assert (await http.get("/v1/flows/second/history")).json() == {"flow": "second", "releases": []}
    assert_error(await http.get("/v1/flows/nobody"), 404, "flow_not_found")
    assert_error(await http.get("/v1/flows/nobody/history"), 404, "flow_not_found")
    assert_error(await http.get(f"/v1/flows/{FLOW}/history", params={"limit": "0"}), 400, "bad_request")
    assert_error(await http.get(f"/v1/flows/{FLOW}/history", params={"limit": "x"}), 400, "bad_request")


async def test_version_document_errors(http: httpx.AsyncClient) -> None:
    await published(http, flow_doc())
    assert_error(await http.get(f"/v1/flows/{FLOW}/versions/0123456789ab"), 404, "version_not_found")
    assert_error(await http.get(f"/v1/flows/{FLOW}/versions/short"), 400, "bad_request")
    assert_error(await http.get("/v1/flows/nobody/versions/0123456789ab"), 404, "flow_not_found")


async def test_diff_between_two_versions(http: httpx.AsyncClient) -> None:
    a = await published(http, flow_doc("Summarise: {input}"))
    b = await published(http, flow_doc("Summarise briefly: {input}"))
    body = (await http.get(f"/v1/flows/{FLOW}/diff", params={"from": a[:8], "to": b[:8]})).json()
    assert (body["from"], body["to"]) == (a, b)
    (changed,) = body["diff"]["nodes"]["changed"]
    assert changed["id"] == "prompt_1"
    assert changed["params"] == [
        {
            "path": "/template",
            "kind": "changed",
            "old": "Summarise: {input}",
            "new": "Summarise briefly: {input}",
        }
    ]
    assert_error(await http.get(f"/v1/flows/{FLOW}/diff", params={"from": a}), 400, "bad_request")
    missing = await http.get(f"/v1/flows/{FLOW}/diff", params={"from": a, "to": "0123456789ab"})
    assert_error(missing, 404, "version_not_found")


async def test_fleet_rows_compare_replicas_with_releases(http: httpx.AsyncClient, store: Store) -> None:
    v1 = await published(http, flow_doc("a {input}"), activate="true")
    v2 = await published(http, flow_doc("b {input}"), activate="true")
    flows = {FLOW: {"hash": v2, "generation": 2, "last_error": None}}
    await store.write_replica_status("web-1", {"flows": flows}, ttl_s=30)
    behind = {FLOW: {"hash": v1, "generation": 1, "last_error": {"generation": 2, "message": "boom"}}}
    await store.write_replica_status("web-2", {"flows": behind}, ttl_s=30)
    body = (await http.get("/v1/fleet")).json()
    assert [r["replica_id"] for r in body["replicas"]] == ["web-1", "web-2"]
    rows = [
        (r["replica"], r["generation"], r["current_generation"], r["state"], r["error"]) for r in body["rows"]
    ]
    assert rows == [("web-1", 2, 2, "current", None), ("web-2", 1, 2, "error", "boom")]
    assert body["releases"][FLOW]["hash"] == v2


async def test_audit_lists_who_did_what(http: httpx.AsyncClient) -> None:
    digest = await published(http, flow_doc(), activate="true", message="launch")
    entries = (await http.get("/v1/audit", params={"flow": FLOW})).json()["entries"]
    activation = next(e for e in entries if e["action"] == "activate")
    assert (activation["hash"], activation["by"], activation["reason"]) == (digest, "ci", "launch")
    assert (await http.get("/v1/audit", params={"limit": "1"})).json()["entries"] == entries[:1]
    assert_error(await http.get("/v1/audit", params={"flow": "../x"}), 400, "invalid_name")
    assert_error(await http.get("/v1/audit", params={"limit": "100000"}), 400, "bad_request")


async def test_gc_removes_only_unreferenced_versions(http: httpx.AsyncClient) -> None:
    kept = await published(http, flow_doc("a {input}"), activate="true")
    dropped = await published(http, flow_doc("b {input}"))
    response = await http.post("/v1/gc", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200
    assert response.json()["removed"] == {FLOW: [dropped]}
    assert (await http.get(f"/v1/flows/{FLOW}/versions/{kept}")).status_code == 200
    assert_error(await http.get(f"/v1/flows/{FLOW}/versions/{dropped}"), 404, "version_not_found")


# -- operations ---------------------------------------------------------------------------------------
async def test_healthz_needs_no_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz", headers={"Authorization": ""})
    assert response.status_code == 200 and response.json() == {"status": "ok", "redis": True}


async def test_healthz_reports_an_unreachable_redis(make_redis_server: Any, settings: Settings) -> None:
    server = make_redis_server()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=1)
    app = create_app(settings, redis=client)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://control") as c:
                assert (await c.get("/healthz")).status_code == 200
                server.kill()
                response = await c.get("/healthz")
                assert response.status_code == 503 and response.json()["status"] == "unavailable"
                # Any other route answers 503 too, never a 500.
                assert_error(await c.get("/v1/flows", headers=bearer(VIEWER_TOKEN)), 503, "redis_unavailable")
    finally:
        await client.aclose()


async def test_metrics_count_requests_publishes_and_activations(http: httpx.AsyncClient) -> None:
    digest = await published(http, flow_doc())
    await publish(http, invalid_doc())
    await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": digest})
    await http.post(f"/v1/flows/{FLOW}/activate", json={"hash": digest, "expected_generation": 0})
    text = (await http.get("/metrics", headers=bearer(VIEWER_TOKEN))).text
    assert 'flowfleet_control_publishes_total{result="created"} 1.0' in text
    assert 'flowfleet_control_publishes_total{result="invalid"} 1.0' in text
    assert 'flowfleet_control_activations_total{action="activate",result="ok"} 1.0' in text
    assert 'flowfleet_control_activations_total{action="activate",result="conflict"} 1.0' in text
    route = 'route="/v1/flows/{name}/activate"'
    assert f'flowfleet_control_requests_total{{method="POST",{route},status="409"}} 1.0' in text


async def test_unknown_routes_and_methods_answer_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await http.delete(f"/v1/flows/{FLOW}"), 405, "method_not_allowed")


# -- LangFlow exports ---------------------------------------------------------------------------------
LANGFLOW_DATA = Path(__file__).parent / "data" / "langflow"


async def test_a_langflow_export_is_stored_as_the_converted_flowfleet_document(
    http: httpx.AsyncClient,
) -> None:
    export = json.loads((LANGFLOW_DATA / "basic_prompting.json").read_text())
    response = await publish(http, export)
    assert response.status_code == 201, response.text
    stored = (await http.get(f"/v1/flows/{FLOW}/versions/{response.json()['hash']}")).json()["document"]
    assert stored["name"] == FLOW and "data" not in stored
    assert content_address(stored)[1] == response.json()["hash"]
    assert '"code"' not in json.dumps(stored)


async def test_an_unsupported_langflow_export_is_refused_listing_every_node(http: httpx.AsyncClient) -> None:
    export = json.loads((LANGFLOW_DATA / "unsupported.json").read_text())
    body = assert_error(await publish(http, export), 422, "unsupported_langflow")
    assert len(body["details"]["unsupported"]) >= 2
    assert_error(await http.get(f"/v1/flows/{FLOW}"), 404, "flow_not_found")
