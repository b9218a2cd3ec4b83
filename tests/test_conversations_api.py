"""The conversation routes against a real redis-server: messages written as a replica would, then listed,
read, deleted (with the session's version pin) and forgotten per user; 404s, roles and audit entries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.components.conversation import ChatMessage
from cluster.settings import Settings
from cluster.store.conversations import ConversationRef, ConversationStore, user_digest
from cluster.store.keys import Keys
from cluster.traffic.canary import Pin
from control.http.api import create_app
from tests.control_support import (
    ADMIN_TOKEN,
    DEPLOYER_TOKEN,
    VIEWER_TOKEN,
    bearer,
    flow_doc,
    write_tokens_file,
)
from tests.redis_server import RedisServer
from tests.test_api import assert_error

FLOW, OTHER = "support_qa", "rag_qa"
SECRET = "my password is hunter2"


@pytest.fixture
def settings(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        namespace=namespace,
        admin_token=ADMIN_TOKEN,
        tokens_file=str(write_tokens_file(tmp_path)),
    )


@pytest.fixture
async def http(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, redis=redis_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as client:
            client.headers.update(bearer(DEPLOYER_TOKEN))
            for flow in (FLOW, OTHER):
                doc = flow_doc(name=flow)
                response = await client.post(f"/v1/flows/{flow}/versions", content=json.dumps(doc))
                assert response.status_code == 201, response.text
            yield client


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


@pytest.fixture
def replica(redis_client: aioredis.Redis, keys: Keys) -> ConversationStore:
    """The store as a replica uses it."""
    return ConversationStore(redis_client, keys, max_messages=100, ttl_s=3600)


async def chat(
    replica: ConversationStore, flow: str, session: str, user: str | None = None, principal: str = "-"
) -> ConversationRef:
    ref = ConversationRef(flow, principal, session)
    turn = [ChatMessage("user", SECRET, 100.0, "User"), ChatMessage("assistant", "noted", 101.0, "AI")]
    await replica.append(ref, turn, user)
    pin = Pin("ab" * 32, 1, 100.0).encode()
    await replica.redis.set(replica.keys.session(flow, session), pin, ex=3600)
    return ref


async def test_list_is_most_recent_first(http: httpx.AsyncClient, replica: ConversationStore) -> None:
    await chat(replica, FLOW, "s-1")
    await chat(replica, FLOW, "s-2")
    await chat(replica, OTHER, "elsewhere")
    body = (await http.get(f"/v1/flows/{FLOW}/conversations", headers=bearer(VIEWER_TOKEN))).json()
    assert body["flow"] == FLOW
    assert [(c["principal"], c["id"]) for c in body["conversations"]] == [("-", "s-2"), ("-", "s-1")]
    assert all(isinstance(c["last_active"], float) for c in body["conversations"])
    limited = (await http.get(f"/v1/flows/{FLOW}/conversations", params={"limit": 1})).json()
    assert [c["id"] for c in limited["conversations"]] == ["s-2"]
    empty = await http.get(f"/v1/flows/{FLOW}/conversations")
    assert empty.status_code == 200


async def test_list_of_an_unknown_flow_is_404(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1/flows/nope/conversations"), 404, "flow_not_found")
    assert_error(await http.get(f"/v1/flows/{FLOW}/conversations?limit=0"), 400, "bad_request")


async def test_read_returns_the_messages(http: httpx.AsyncClient, replica: ConversationStore) -> None:
    await chat(replica, FLOW, "s-1")
    response = await http.get(f"/v1/flows/{FLOW}/conversations/s-1", headers=bearer(VIEWER_TOKEN))
    assert response.status_code == 200
    assert response.json() == {
        "flow": FLOW, "principal": "-", "id": "s-1",
        "messages": [
            {"role": "user", "content": SECRET, "at": 100.0, "sender": "User"},
            {"role": "assistant", "content": "noted", "at": 101.0, "sender": "AI"},
        ],
    }  # fmt: skip
    assert_error(await http.get(f"/v1/flows/{FLOW}/conversations/s-9"), 404, "conversation_not_found")
    other = await http.get(f"/v1/flows/{FLOW}/conversations/s-1", params={"principal": "alice"})
    assert_error(other, 404, "conversation_not_found")


async def test_scoped_principal(http: httpx.AsyncClient, replica: ConversationStore) -> None:
    await chat(replica, FLOW, "s-1", principal="alice")
    rows = (await http.get(f"/v1/flows/{FLOW}/conversations")).json()["conversations"]
    assert [(c["principal"], c["id"]) for c in rows] == [("alice", "s-1")]
    url = f"/v1/flows/{FLOW}/conversations/s-1"
    assert (await http.get(url, params={"principal": "alice"})).json()["principal"] == "alice"
    assert_error(await http.get(url, params={"principal": "a:b"}), 422, "invalid_request_key")
    assert (await http.delete(url, params={"principal": "alice"})).status_code == 200


async def test_bad_ids(http: httpx.AsyncClient) -> None:
    bad = await http.get(f"/v1/flows/{FLOW}/conversations/-leading-dash")
    assert_error(bad, 422, "invalid_session_id")
    assert_error(await http.delete(f"/v1/flows/{FLOW}/conversations/{'x' * 129}"), 422, "invalid_session_id")
    assert_error(await http.delete(f"/v1/users/{'u' * 257}/conversations"), 422, "invalid_request_key")
    assert_error(await http.get("/v1/flows/bad name!/conversations/s-1"), 400, "invalid_name")


async def test_delete_removes_the_conversation_and_its_pin(
    http: httpx.AsyncClient, replica: ConversationStore, keys: Keys, redis_client: aioredis.Redis
) -> None:
    ref = await chat(replica, FLOW, "s-1")
    await chat(replica, FLOW, "s-2")
    response = await http.delete(f"/v1/flows/{FLOW}/conversations/s-1", headers={"X-Flowfleet-Message": "x"})
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": {"flow": FLOW, "principal": "-", "id": "s-1"}}
    assert await replica.read(ref) == []
    assert await redis_client.exists(keys.session(FLOW, "s-1")) == 0
    assert await redis_client.exists(keys.session(FLOW, "s-2")) == 1
    rows = (await http.get(f"/v1/flows/{FLOW}/conversations")).json()["conversations"]
    assert [c["id"] for c in rows] == ["s-2"]
    assert_error(await http.delete(f"/v1/flows/{FLOW}/conversations/s-1"), 404, "conversation_not_found")

    entries = (await http.get("/v1/audit", params={"flow": FLOW})).json()["entries"]
    deletes = [e for e in entries if e["action"] == "conversation_delete"]
    assert len(deletes) == 1
    assert deletes[0]["by"] == "ci" and deletes[0]["flow"] == FLOW and deletes[0]["conversation"] == "s-1"
    assert SECRET not in json.dumps(entries) and "noted" not in json.dumps(entries)


async def test_viewer_cannot_delete_or_forget(http: httpx.AsyncClient, replica: ConversationStore) -> None:
    ref = await chat(replica, FLOW, "s-1", user="u-1")
    viewer = bearer(VIEWER_TOKEN)
    response = await http.delete(f"/v1/flows/{FLOW}/conversations/s-1", headers=viewer)
    assert_error(response, 403, "forbidden")
    assert_error(await http.delete("/v1/users/u-1/conversations", headers=viewer), 403, "forbidden")
    assert len(await replica.read(ref)) == 2


async def test_forget_user_across_flows(
    http: httpx.AsyncClient, replica: ConversationStore, keys: Keys, redis_client: aioredis.Redis
) -> None:
    user = "alice@example.com"
    await chat(replica, FLOW, "s-1", user=user)
    await chat(replica, OTHER, "s-2", user=user)
    kept = await chat(replica, FLOW, "s-3", user="bob")
    response = await http.delete(f"/v1/users/{user}/conversations")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == user_digest(user)
    assert sorted((d["flow"], d["principal"], d["id"]) for d in body["deleted"]) == [
        (OTHER, "-", "s-2"), (FLOW, "-", "s-1"),
    ]  # fmt: skip
    for flow, session in ((FLOW, "s-1"), (OTHER, "s-2")):
        assert await redis_client.exists(keys.session(flow, session)) == 0
        assert await replica.read(ConversationRef(flow, "-", session)) == []
    assert len(await replica.read(kept)) == 2
    assert await redis_client.exists(keys.session(FLOW, "s-3")) == 1
    assert (await http.delete(f"/v1/users/{user}/conversations")).json()["deleted"] == []

    entries = (await http.get("/v1/audit")).json()["entries"]
    forgets = [e for e in entries if e["action"] == "user_forget"]
    assert sorted(e["flow"] for e in forgets) == [OTHER, FLOW]
    assert all(e["user"] == user_digest(user) and e["count"] == 1 and e["by"] == "ci" for e in forgets)
    assert user not in json.dumps(entries) and SECRET not in json.dumps(entries)


async def test_metrics_count_deletions(http: httpx.AsyncClient, replica: ConversationStore) -> None:
    await chat(replica, FLOW, "s-1")
    await http.delete(f"/v1/flows/{FLOW}/conversations/s-1")
    text = (await http.get("/metrics")).text
    assert 'flowfleet_control_conversations_deleted_total{action="delete"} 1.0' in text
