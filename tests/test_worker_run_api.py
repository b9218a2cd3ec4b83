"""The native run API with the real engine: strict inputs, unknown fields, the flow's description, version
selection per call, and run authentication (principals scope conversations). In-process replica
(httpx.ASGITransport) with a real redis-server behind it."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.release import AUTO_ROLLBACK_ACTOR
from cluster.store.store import Store
from tests.worker_support import wait_for
from worker.api.auth import RunAuthConfigError
from worker.app import create_app

FLOW = "chat"


def chat_doc(label: str, *, version_selection: bool = False) -> dict[str, Any]:
    """Question in, `<label>: [echo-1] History: … Q: …` out, with the conversation's messages."""
    doc: dict[str, Any] = {
        "name": FLOW,
        "nodes": [
            {"id": "question", "type": "ChatInput", "params": {"name": "question", "description": "ask"}},
            {"id": "tone", "type": "TextInput", "params": {"name": "tone", "default": "plain"}},
            {"id": "history", "type": "MessageHistory", "params": {"n_messages": 10, "template": "{text}"}},
            {
                "id": "prompt",
                "type": "PromptTemplate",
                "params": {"template": label + " ({tone}) History: {history} Q: {question}"},
            },
            {
                "id": "llm",
                "type": "LLM",
                "params": {"provider": "echo", "model": "echo-1", "system": "Be brief."},
            },
            {"id": "answer", "type": "ChatOutput", "params": {"name": "answer"}},
        ],
        "edges": [
            {
                "source": "question",
                "target": "prompt",
                "source_output": "message",
                "target_input": "question",
            },
            {"source": "tone", "target": "prompt", "source_output": "text", "target_input": "tone"},
            {"source": "history", "target": "prompt", "source_output": "text", "target_input": "history"},
            {"source": "prompt", "target": "llm"},
            {"source": "llm", "target": "answer", "source_output": "text", "target_input": "message"},
        ],
    }
    if version_selection:
        doc["api"] = {"version_selection": True}
    return doc


@pytest.fixture
def store(redis_client, namespace):
    return Store(redis_client, Keys(namespace))


async def release(store: Store, doc: dict[str, Any], *, activate: bool = True, by: str = "test") -> str:
    data, digest = content_address(doc)
    await store.publish(FLOW, data, digest, author="test", message="t", node_count=len(doc["nodes"]))
    if activate:
        await store.activate(FLOW, digest, by=by, reason="t")
    return digest


@asynccontextmanager
async def replica(redis_url: str, namespace: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env({}, redis_url=redis_url, namespace=namespace, replica_id="r1", **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            yield client


async def serving(client: httpx.AsyncClient, digest: str, headers: dict[str, str] | None = None) -> bool:
    flows = (await client.get("/v1/flows", headers=headers)).json()["flows"]
    return any(f["flow"] == FLOW and f["hash"] == digest for f in flows)


async def test_an_input_the_flow_does_not_take_is_a_422_listing_what_it_takes(redis_server, namespace, store):
    digest = await release(store, chat_doc("v1"))
    async with replica(redis_server.url, namespace) as client:
        await wait_for(lambda: serving(client, digest), what="v1 served")
        r = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {"input_value": "What is RAG?"}})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "invalid_inputs"
        assert "input_value" in body["message"] and "question (message, required)" in body["message"]
        assert body["details"]["unknown"] == ["input_value"]
        assert [i["name"] for i in body["details"]["inputs"]] == ["question", "tone"]
        # The same description is on the flow.
        shown = (await client.get(f"/v1/flows/{FLOW}")).json()
        assert shown["hash"] == digest and shown["outputs"] == ["answer"] and shown["memory"] is True
        assert shown["inputs"] == [
            {
                "name": "question",
                "type": "message",
                "required": True,
                "description": "ask",
                "nodes": ["question"],
            },
            {"name": "tone", "type": "text", "required": False, "default": "plain", "nodes": ["tone"]},
        ]
        assert shown["version_selection"] is False and shown["tweaks"] == {}
        ok = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {"question": "What is RAG?"}})
        assert ok.status_code == 200 and "Q: What is RAG?" in ok.json()["outputs"]["answer"]
        missing = await client.get("/v1/flows/nope")
        assert (missing.status_code, missing.json()["error"]) == (404, "flow_not_found")


async def test_unknown_top_level_fields_are_refused(redis_server, namespace, store):
    digest = await release(store, chat_doc("v1"))
    async with replica(redis_server.url, namespace) as client:
        await wait_for(lambda: serving(client, digest), what="v1 served")
        body = {"inputs": {"question": "hi"}, "input_value": "hi", "output_type": "chat"}
        r = await client.post(f"/v1/flows/{FLOW}/run", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "bad_request"
        assert r.json()["details"]["unknown"] == ["input_value", "output_type"]
        null = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": None})
        assert (
            null.status_code == 422 and null.json()["message"] == "'inputs' must be a JSON object, not null"
        )
        listed = await client.post(f"/v1/flows/{FLOW}/run", json=[1])
        assert listed.json()["message"] == "request body must be a JSON object, not array"
        bad_version = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {}, "version": 3})
        assert (bad_version.status_code, bad_version.json()["details"]) == (400, {"field": "version"})


async def test_version_per_call_only_for_flows_that_opt_in(redis_server, namespace, store):
    v1 = await release(store, chat_doc("v1"))
    async with replica(redis_server.url, namespace) as client:
        await wait_for(lambda: serving(client, v1), what="v1 served")
        r = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {"question": "q"}, "version": v1[:12]})
        assert r.status_code == 403, r.text
        assert r.json()["details"]["reason"] == "version_selection_off"


async def test_version_per_call_from_the_release_history(redis_server, namespace, store):
    v1 = await release(store, chat_doc("v1", version_selection=True))
    v2 = await release(store, chat_doc("v2", version_selection=True))
    never = await release(store, chat_doc("unreleased", version_selection=True), activate=False)
    async with replica(redis_server.url, namespace) as client:
        await wait_for(lambda: serving(client, v2), what="v2 served")

        async def ask(**extra: Any) -> httpx.Response:
            return await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {"question": "q"}, **extra})

        old = await ask(version=v1[:10])
        assert old.status_code == 200, old.text
        assert (old.json()["version"], old.json()["variant"]) == (v1, "pinned")
        assert " v1 (plain)" in old.json()["outputs"]["answer"]
        assert (await ask(version=v2)).json()["version"] == v2
        # An explicit version wins over the session's pin (the session is pinned to v2 by its first run).
        assert (await ask(session_id="s1")).json()["version"] == v2
        assert (await ask(session_id="s1", version=v1)).json()["version"] == v1
        # Published but never released: not selectable; nor is garbage.
        for version in (never, never[:8], "zz-not-a-hash"):
            refused = await ask(version=version)
            assert (refused.status_code, refused.json()["error"]) == (404, "version_not_found"), version
        # A version the guard rolled back is never served again by request.
        await store.activate(FLOW, v1, by=AUTO_ROLLBACK_ACTOR, reason="guard", action="rollback")
        await wait_for(lambda: serving(client, v1), what="v1 served again")
        refused = await ask(version=v2)
        assert refused.status_code == 403, refused.text
        assert refused.json()["details"]["reason"] == "version_rolled_back"


def tokens_file(tmp_path: Path, entries: list[dict[str, Any]]) -> str:
    path = tmp_path / "run-tokens.json"
    path.write_bytes(orjson.dumps(entries))
    return str(path)


def entry(name: str, token: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(token.encode()).hexdigest(), **extra}


async def test_run_authentication_and_principal_scoped_conversations(
    redis_server, namespace, store, tmp_path
):
    digest = await release(store, chat_doc("v1"))
    path = tokens_file(
        tmp_path,
        [entry("web", "web-token-0123456789"), entry("batch", "batch-token-012345", flows=["other"])],
    )
    async with replica(redis_server.url, namespace, run_tokens_file=path) as client:
        web = {"Authorization": "Bearer web-token-0123456789"}
        await wait_for(lambda: serving(client, digest, web), what="v1 served")
        url = f"/v1/flows/{FLOW}/run"
        turn = {"inputs": {"question": "my name is Ada"}, "session_id": "s1"}
        for headers, code in [
            ({}, 401),
            ({"Authorization": "Bearer wrong"}, 401),
            ({"Authorization": "Basic d2ViOng="}, 401),
            ({"x-api-key": "batch-token-012345"}, 403),  # batch may run only `other`
        ]:
            r = await client.post(url, json=turn, headers=headers)
            assert r.status_code == code, (headers, r.text)
        assert (await client.get("/v1/flows")).status_code == 401
        first = await client.post(url, json=turn, headers={"x-api-key": "web-token-0123456789"})
        assert first.status_code == 200, first.text
        again = await client.post(url, json={**turn, "inputs": {"question": "who am I?"}}, headers=web)
        assert "my name is Ada" in again.json()["outputs"]["answer"]
    keys = Keys(namespace)
    stored = await store.redis.llen(keys.conversation(FLOW, "web", "s1"))
    assert stored == 4
    assert await store.redis.exists(keys.conversation(FLOW, "-", "s1")) == 0


async def test_two_principals_with_one_session_id_never_share_a_conversation(
    redis_server, namespace, store, tmp_path
):
    digest = await release(store, chat_doc("v1"))
    path = tokens_file(tmp_path, [entry("alice", "alice-token-0123456"), entry("bob", "bob-token-01234567")])
    async with replica(redis_server.url, namespace, run_tokens_file=path) as client:
        alice = {"Authorization": "Bearer alice-token-0123456"}
        bob = {"Authorization": "Bearer bob-token-01234567"}
        await wait_for(lambda: serving(client, digest, alice), what="v1 served")
        url = f"/v1/flows/{FLOW}/run"
        said = await client.post(
            url, json={"inputs": {"question": "secret 42"}, "session_id": "s"}, headers=alice
        )
        assert said.status_code == 200, said.text
        heard = await client.post(url, json={"inputs": {"question": "what?"}, "session_id": "s"}, headers=bob)
        assert heard.status_code == 200 and "secret 42" not in heard.json()["outputs"]["answer"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[]", "non-empty"),
        (b"{}", "non-empty"),
        (b'[{"name": "a", "sha256": "00"}]', "64 hex"),
        (b'[{"name": "a", "token": "clear", "sha256": "' + b"0" * 64 + b'"}]', "unknown keys"),
        (b'[{"name": "-", "sha256": "' + b"0" * 64 + b'"}]', "name"),
        (b'[{"name": "a", "sha256": "' + b"0" * 64 + b'", "flows": ["bad name!"]}]', "flow names"),
        (b"not json", "not valid JSON"),
    ],
)
def test_a_bad_run_tokens_file_stops_the_replica_at_start(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    settings = Settings.from_env({}, redis_url="redis://127.0.0.1:1/0", run_tokens_file=str(path))
    with pytest.raises(RunAuthConfigError, match=message):
        create_app(settings)


async def test_tweaks_only_within_the_flows_allow_list(redis_server, namespace, store):
    doc = chat_doc("v1")
    doc["api"] = {"tweaks": {"prompt": ["template"]}}
    digest = await release(store, doc)
    async with replica(redis_server.url, namespace) as client:
        await wait_for(lambda: serving(client, digest), what="v1 served")
        url = f"/v1/flows/{FLOW}/run"
        tweaked = {"prompt": {"template": "Tweaked: {question} {tone} {history}"}}
        r = await client.post(url, json={"inputs": {"question": "q"}, "tweaks": tweaked})
        assert r.status_code == 200, r.text
        assert "Tweaked: q plain" in r.json()["outputs"]["answer"] and r.json()["version"] == digest
        plain = await client.post(url, json={"inputs": {"question": "q"}})
        assert "Tweaked" not in plain.json()["outputs"]["answer"]
        for tweaks in ({"llm": {"base_url": "http://169.254.169.254/"}}, {"prompt": {"description": "x"}}):
            refused = await client.post(url, json={"inputs": {"question": "q"}, "tweaks": tweaks})
            assert (refused.status_code, refused.json()["error"]) == (422, "tweak_not_allowed"), refused.text
        shape = await client.post(url, json={"inputs": {"question": "q"}, "tweaks": ["prompt"]})
        assert (shape.status_code, shape.json()["details"]) == (400, {"field": "tweaks"})


async def test_tweaks_are_off_without_an_allow_list(redis_server, namespace, store):
    digest = await release(store, chat_doc("v1"))
    async with replica(redis_server.url, namespace) as client:
        await wait_for(lambda: serving(client, digest), what="v1 served")
        tweaks = {"prompt": {"template": "{question}"}}
        r = await client.post(f"/v1/flows/{FLOW}/run", json={"inputs": {"question": "q"}, "tweaks": tweaks})
        assert (r.status_code, r.json()["error"]) == (422, "tweak_not_allowed"), r.text
        assert "off" in r.json()["message"]
