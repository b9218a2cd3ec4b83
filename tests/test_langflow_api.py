"""LangFlow's v1 run API on a replica (worker/api/langflow): the request, its mapping onto a flow, the
nesting of the answer, the stream's bytes, errors and the webhook. The app runs in-process
(httpx.ASGITransport) with the real engine and a real redis-server behind it.

Expected bytes are written from LangFlow 1.13's code: `EventManager.send_event` writes
`json.dumps({"event": event_type, "data": jsonable_data}) + "\\n\\n"`, and the stream of `/run` is served
as `StreamingResponse(..., media_type="text/event-stream")`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.engine import compile_flow
from cluster.errors import BadRequest, InvalidTweaks, RunInputError
from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.openai_server import HANG, run_fake_openai
from tests.worker_support import wait_for
from worker.api.langflow.framing import frame, sse_frame
from worker.api.langflow.plan import OutputNotFound, plan
from worker.api.langflow.request import InvalidRequest, LangflowRequest, parse_request, query_flag
from worker.api.langflow.results import Messages, run_response
from worker.app import create_app

CHAT: dict[str, Any] = {
    "name": "chat",
    "nodes": [
        {"id": "ChatInput-a1", "type": "ChatInput", "params": {"name": "input"}},
        {"id": "LLM-b2", "type": "LLM", "params": {"provider": "echo", "model": "echo-1", "n_messages": 10}},
        {"id": "ChatOutput-c3", "type": "ChatOutput"},
    ],
    "edges": [
        {"source": "ChatInput-a1", "target": "LLM-b2", "target_input": "prompt"},
        {"source": "LLM-b2", "target": "ChatOutput-c3"},
    ],
    "api": {"tweaks": {"LLM-b2": ["model"]}},
}
MULTI: dict[str, Any] = {
    "name": "multi",
    "nodes": [
        {"id": "question", "type": "ChatInput", "params": {"name": "question"}},
        {"id": "tone", "type": "TextInput", "params": {"name": "tone"}},
        {"id": "prompt", "type": "PromptTemplate", "params": {"template": "{question} ({tone}, {topic})"}},
        {"id": "llm", "type": "LLM", "params": {"provider": "echo", "model": "echo-1", "system": "s"}},
        {"id": "answer", "type": "TextOutput"},
        {"id": "chat_out", "type": "ChatOutput", "params": {"store_message": False}},
    ],
    "edges": [
        {"source": "question", "target": "prompt", "target_input": "question"},
        {"source": "tone", "target": "prompt", "target_input": "tone"},
        {"source": "prompt", "target": "llm"},
        {"source": "llm", "target": "answer"},
        {"source": "prompt", "target": "chat_out"},
    ],
}


def lf(**fields: Any) -> LangflowRequest:
    return parse_request(fields)


# --- the stream's bytes ------------------------------------------------------------------------------


def test_events_are_framed_as_langflows_event_manager_writes_them() -> None:
    assert frame("token", {"chunk": "Hel", "id": "m-1"}) == (
        b'{"event": "token", "data": {"chunk": "Hel", "id": "m-1"}}\n\n'
    )
    # json.dumps' defaults: ", " and ": " separators, non-ASCII escaped, keys in insertion order.
    assert frame("end", {"result": {"session_id": "s", "outputs": []}}) == (
        b'{"event": "end", "data": {"result": {"session_id": "s", "outputs": []}}}\n\n'
    )
    assert frame("token", {"chunk": "caf\u00e9 \u2615", "id": "m"}) == (
        b'{"event": "token", "data": {"chunk": "caf\\u00e9 \\u2615", "id": "m"}}\n\n'
    )
    assert frame("error", {"error": "boom"}) == b'{"event": "error", "data": {"error": "boom"}}\n\n'
    assert (
        sse_frame("token", {"chunk": "a", "id": "m"}) == b'event: token\ndata: {"chunk": "a", "id": "m"}\n\n'
    )


# --- the request -------------------------------------------------------------------------------------


def test_request_defaults_ignored_fields_and_fastapi_errors() -> None:
    assert parse_request({"extra": 1}) == LangflowRequest()
    wanted = lf(input_value="hi", input_type=None, tweaks=None, output_component=None)
    assert (wanted.input_value, wanted.input_type, wanted.tweaks, wanted.output_component) == (
        "hi",
        "chat",
        {},
        "",
    )
    with pytest.raises(InvalidRequest) as caught:
        parse_request({"input_value": 5, "output_type": "voice", "tweaks": []})
    assert caught.value.errors == [
        {
            "type": "string_type",
            "loc": ["body", "input_value"],
            "msg": "Input should be a valid string",
            "input": 5,
        },
        {
            "type": "literal_error",
            "loc": ["body", "output_type"],
            "msg": "Input should be 'chat', 'text', 'any' or 'debug'",
            "input": "voice",
            "ctx": {"expected": "'chat', 'text', 'any' or 'debug'"},
        },
        {
            "type": "dict_type",
            "loc": ["body", "tweaks"],
            "msg": "Input should be a valid dictionary",
            "input": [],
        },
    ]
    with pytest.raises(InvalidRequest):
        parse_request(["not", "an", "object"])
    assert query_flag({"stream": "true"}, "stream") and not query_flag({"stream": "0"}, "stream")
    with pytest.raises(InvalidRequest):
        query_flag({"stream": "maybe"}, "stream")


# --- the mapping onto a flow -------------------------------------------------------------------------


def test_input_value_goes_to_the_input_of_the_input_type() -> None:
    chat, multi = compile_flow(CHAT), compile_flow(MULTI)
    assert plan(lf(input_value="hi"), chat).inputs == {"input": "hi"}
    assert plan(lf(input_value="hi", input_type="any"), chat).inputs == {"input": "hi"}  # "input" wins
    assert plan(lf(input_value="q?"), multi).inputs == {"question": "q?"}
    assert plan(lf(input_value="dry", input_type="text"), multi).inputs == {"tone": "dry"}
    with pytest.raises(RunInputError) as caught:
        plan(lf(input_value="x", input_type="any"), multi)
    assert (
        "question (message, required)" in caught.value.message
        and "tone (text, required)" in caught.value.message
    )
    assert plan(lf(), multi).inputs == {}  # no input_value: nothing given (the run then asks for them)


def test_tweaks_give_other_inputs_use_langflow_names_and_refuse_ambiguity() -> None:
    chat, multi = compile_flow(CHAT), compile_flow(MULTI)
    tweaks = {"tone": {"input_value": "dry"}, "prompt": {"topic": "tea"}, "llm": {"stream": True}}
    planned = plan(lf(input_value="q?", tweaks=tweaks), multi)
    assert planned.inputs == {"question": "q?", "tone": "dry", "topic": "tea"}
    assert planned.tweaks == {}  # `stream` is LangFlow's own: the request's ?stream= decides
    renamed = plan(lf(tweaks={"LLM-b2": {"model_name": "echo-2", "system_message": "x"}}), chat)
    assert renamed.tweaks == {"LLM-b2": {"model": "echo-2", "system": "x"}}
    assert plan(lf(tweaks={"ChatInput-a1": {"input_value": "hi"}}), chat).inputs == {"input": "hi"}
    with pytest.raises(BadRequest, match="cannot pass a tweak with the same name"):
        plan(lf(input_value="hi", tweaks={"ChatInput-a1": {"input_value": "hi"}}), chat)
    with pytest.raises(InvalidTweaks, match="tweaks name a node"):
        plan(lf(tweaks={"temperature": 0.5}), chat)


def test_outputs_are_selected_as_langflow_selects_them() -> None:
    multi = compile_flow(MULTI)
    ids = {
        kind: [o.node_id for o in plan(lf(output_type=kind), multi).outputs]
        for kind in ("chat", "text", "any")
    }
    assert ids == {"chat": ["chat_out"], "text": ["answer"], "any": ["answer", "chat_out"]}
    assert [o.node_id for o in plan(lf(output_component="answer"), multi).outputs] == ["answer"]
    with pytest.raises(OutputNotFound, match="'nope' not found"):
        plan(lf(output_component="nope"), multi)
    [out] = plan(lf(), compile_flow(CHAT)).outputs
    assert (out.messages, out.sources, dict(out.source)) == (
        True,
        ("LLM-b2",),
        {"id": "LLM-b2", "display_name": "LLM", "source": "echo-1"},
    )


def test_the_answer_is_nested_as_langflow_nests_it() -> None:
    [out] = plan(lf(), compile_flow(CHAT)).outputs
    body = run_response(Messages("chat", "s-1"), "hi", [out], {"ChatOutput-c3": "Hello!"})
    assert list(body) == ["session_id", "outputs"] and body["session_id"] == "s-1"
    [run] = body["outputs"]
    assert run["inputs"] == {"input_value": "hi"}
    [result] = run["outputs"]
    assert list(result) == [
        *("results", "artifacts", "outputs", "logs", "messages", "timedelta", "duration"),
        *("component_display_name", "component_id", "used_frozen_result", "token_usage"),
    ]
    message = result["results"]["message"]
    assert (message["text"], message["sender"], message["sender_name"], message["session_id"]) == (
        "Hello!",
        "Machine",
        "AI",
        "s-1",
    )
    assert message["data"]["text"] == "Hello!" and message["flow_id"] == "chat"
    assert (result["component_display_name"], result["component_id"]) == ("Chat Output", "ChatOutput-c3")
    # What LangFlow's JS client reads (FlowResponse.chatOutputText): outputs.message.message(.text).
    assert result["outputs"]["message"]["message"]["text"] == "Hello!"
    assert result["messages"][0]["message"] == "Hello!" and result["used_frozen_result"] is False


# --- through the app ---------------------------------------------------------------------------------


@asynccontextmanager
async def replica_app(redis_url: str, namespace: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env({}, redis_url=redis_url, namespace=namespace, replica_id="lf-1", **overrides)
    app = create_app(settings, environ={})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            client.app = app  # type: ignore[attr-defined]
            await wait_for(lambda: ready(client), what="replica serves every flow")
            yield client


async def ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.fixture
async def store(redis_client: Any, namespace: str) -> Store:
    store = Store(redis_client, Keys(namespace))
    for doc in (CHAT, MULTI):
        data, digest = content_address(doc)
        await store.publish(doc["name"], data, digest, author="t", message="t", node_count=len(doc["nodes"]))
        await store.activate(doc["name"], digest, by="t", reason="t")
    return store


@pytest.fixture
async def client(redis_server: Any, namespace: str, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with replica_app(redis_server.url, namespace) as client:
        yield client


def result_of(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = body["outputs"][0]["outputs"][0]
    return result


async def test_a_run_answers_langflows_nesting_with_a_fresh_session(client: httpx.AsyncClient) -> None:
    first = await client.post("/api/v1/run/chat", json={"input_value": "hi"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert result_of(body)["results"]["message"]["text"] == "[echo-1] hi"
    assert first.headers["x-flowfleet-version"] == content_address(CHAT)[1]
    second = (await client.post("/api/v1/run/chat", json={"input_value": "hi"})).json()
    assert uuid.UUID(body["session_id"]) and second["session_id"] != body["session_id"]
    # The session named in the answer continues the conversation (the LLM reads the last turns).
    again = await client.post(
        "/api/v1/run/chat", json={"input_value": "and?", "session_id": body["session_id"]}
    )
    assert again.json()["session_id"] == body["session_id"]
    assert result_of(again.json())["results"]["message"]["text"] == "[echo-1] and?"
    tweaked = await client.post(
        "/api/v1/run/chat", json={"input_value": "hi", "tweaks": {"LLM-b2": {"model_name": "echo-2"}}}
    )
    assert result_of(tweaked.json())["results"]["message"]["text"] == "[echo-2] hi"


def pieces(raw: bytes) -> list[dict[str, Any]]:
    """Split as LangFlow's Python callers do (on blank lines), checking each event's exact encoding."""
    events = []
    for piece in raw.split(b"\n\n"):
        if not piece:
            continue
        event = json.loads(piece)
        assert piece == json.dumps(event).encode() and list(event) == ["event", "data"]
        events.append(event)
    return events


async def test_a_streamed_run_is_langflows_event_stream(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/api/v1/run/chat?stream=true", json={"input_value": "tell me", "session_id": "s-9"}
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert reply.content.endswith(b"}\n\n")
    events = pieces(reply.content)
    names = [e["event"] for e in events]
    assert names[:2] == ["add_message", "add_message"] and names[-2:] == ["add_message", "end"]
    assert set(names[2:-2]) == {"token"}
    user, partial, *tokens, complete, end = events
    assert (user["data"]["sender"], user["data"]["text"], user["data"]["session_id"]) == (
        "User",
        "tell me",
        "s-9",
    )
    assert (
        partial["data"]["properties"]["state"] == "partial"
        and complete["data"]["properties"]["state"] == "complete"
    )
    message_id = complete["data"]["id"]
    assert partial["data"]["id"] == message_id and all(
        t["data"] == {"chunk": t["data"]["chunk"], "id": message_id} for t in tokens
    )
    assert "".join(t["data"]["chunk"] for t in tokens) == complete["data"]["text"] == "[echo-1] tell me"
    result = end["data"]["result"]
    assert (
        result["session_id"] == "s-9" and result_of(result)["results"]["message"]["data"]["id"] == message_id
    )
    assert result_of(result)["results"]["message"]["text"] == "[echo-1] tell me"


async def test_sse_is_an_opt_in(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/v1/run/chat?sse=true", json={"input_value": "hi"})
    blocks = [b for b in reply.content.split(b"\n\n") if b]
    assert all(b.startswith(b"event: ") and b"\ndata: {" in b for b in blocks)
    assert blocks[-1].startswith(b'event: end\ndata: {"result": ')


async def test_errors_have_langflows_shape(client: httpx.AsyncClient, redis_server: Any) -> None:
    async def post(path: str, **kwargs: Any) -> httpx.Response:
        return await client.post(path, **kwargs)

    missing = await post("/api/v1/run/nope", json={"input_value": "hi"})
    assert (missing.status_code, missing.json()) == (404, {"detail": "flow 'nope' not found"})
    bad_json = await post("/api/v1/run/chat", content=b"{nope")
    assert bad_json.status_code == 400 and bad_json.json()["detail"].startswith(
        "request body is not valid JSON"
    )
    bad_field = await post("/api/v1/run/chat", json={"input_type": "voice"})
    assert bad_field.status_code == 422 and bad_field.json()["detail"][0]["loc"] == ["body", "input_type"]
    refused = await post(
        "/api/v1/run/chat", json={"input_value": "hi", "tweaks": {"LLM-b2": {"temperature": 1}}}
    )
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert (detail["error"], detail["code"], detail["fields"], detail["node"]) == (
        "Refused tweaks",
        "TWEAKS_REFUSED",
        ["temperature"],
        "LLM-b2",
    )
    assert (
        detail["tweakable"] == {"LLM-b2": ["model"]}
        and refused.headers["x-flowfleet-error"] == "tweak_not_allowed"
    )
    # Refused before the stream's head: still a plain error.
    streamed = await post("/api/v1/run/multi?stream=true", json={"input_value": "x", "input_type": "any"})
    assert streamed.status_code == 422 and "this flow takes several inputs" in streamed.json()["detail"]
    unknown = await post("/api/v1/run/multi", json={"tweaks": {"nope": {"x": 1}}, "input_value": "q"})
    assert unknown.status_code == 422 and unknown.json()["detail"]["code"] == "TWEAKS_REFUSED"
    huge = await post("/api/v1/run/chat", content=b" " * (1024 * 1024 + 1))
    assert huge.status_code == 413 and "exceeds" in huge.json()["detail"]
    missing_input = await post("/api/v1/run/multi", json={"input_value": "q?"})
    assert (
        missing_input.status_code == 422
        and "missing required input(s): tone, topic" in missing_input.json()["detail"]
    )


async def metric(client: httpx.AsyncClient, flow: str, outcome: str) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if (
            line.startswith("flowfleet_flow_runs_total{")
            and f'flow="{flow}"' in line
            and f'outcome="{outcome}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_webhook_answers_202_then_runs_through_the_run_service(client: httpx.AsyncClient) -> None:
    accepted = await client.post("/api/v1/webhook/chat", content=b'{"ticket": 1}')
    assert (accepted.status_code, accepted.json()) == (
        202,
        {"message": "Task started in the background", "status": "in progress"},
    )
    await wait_for(lambda: _counted(client, "chat", "ok", 1), what="the webhook run counted")
    empty = await client.post("/api/v1/webhook/chat", content=b"")
    assert empty.status_code == 400 and empty.json()["detail"].startswith("Request body is empty")
    # What cannot run is still answered: the flow's inputs are checked before the 202.
    refused = await client.post("/api/v1/webhook/multi", content=b"hello")
    assert refused.status_code == 422, refused.text
    assert (await client.post("/api/v1/webhook/nope", content=b"x")).status_code == 404


async def _counted(client: httpx.AsyncClient, flow: str, outcome: str, n: float) -> bool:
    return await metric(client, flow, outcome) >= n


async def test_shutdown_cancels_webhook_runs_still_running_after_the_grace(
    redis_server: Any, namespace: str, redis_client: Any
) -> None:
    """A run waiting on a model that never answers: the replica's stop cancels it once the grace is over."""
    async with run_fake_openai() as fake:
        fake.script = [HANG]
        model = {"provider": "openai", "model": "m", "base_url": fake.url, "api_key_env": None}
        doc = {
            "name": "slow",
            "nodes": [{"id": "in", "type": "TextInput"}, {"id": "llm", "type": "LLM", "params": model}],
            "edges": [{"source": "in", "target": "llm"}],
        }
        data, digest = content_address(doc)
        store = Store(redis_client, Keys(namespace))
        await store.publish("slow", data, digest, author="t", message="t", node_count=2)
        await store.activate("slow", digest, by="t", reason="t")
        overrides = {"shutdown_grace_s": 0.2, "egress_allow": "127.0.0.1"}
        async with replica_app(redis_server.url, namespace, **overrides) as client:
            replica = client.app.state.replica  # type: ignore[attr-defined]
            accepted = await client.post("/api/v1/webhook/slow", content=b"wake up")
            assert accepted.status_code == 202
            await wait_for(lambda: bool(fake.requests), what="the model called")
            assert len(replica.background) == 1
        assert replica.background == set() and replica.gate.in_flight == 0
        cancelled = replica.metrics.runs_total.labels("slow", digest, "cancelled")._value.get()
        assert cancelled == 1


async def test_run_auth_takes_langflows_x_api_key(
    redis_server: Any, namespace: str, store: Store, tmp_path: Path
) -> None:
    tokens = tmp_path / "run-tokens.json"
    tokens.write_text(
        json.dumps([{"name": "app", "sha256": hashlib.sha256(b"sk-lf").hexdigest(), "flows": ["chat"]}])
    )
    async with replica_app(redis_server.url, namespace, run_tokens_file=str(tokens)) as client:
        anonymous = await client.post("/api/v1/run/chat", json={"input_value": "hi"})
        assert anonymous.status_code == 401 and "detail" in anonymous.json()
        keyed = await client.post(
            "/api/v1/run/chat", json={"input_value": "hi"}, headers={"x-api-key": "sk-lf"}
        )
        assert keyed.status_code == 200, keyed.text
        other = await client.post(
            "/api/v1/run/multi", json={"input_value": "hi"}, headers={"x-api-key": "sk-lf"}
        )
        assert other.status_code == 403


async def test_a_session_pinned_to_an_older_version_is_mapped_for_that_version(
    client: httpx.AsyncClient, store: Store
) -> None:
    """The release after the session's first turn names its input otherwise: the turn still runs on the
    version the session is pinned to, with `input_value` mapped onto that version's input."""
    first = await client.post("/api/v1/run/chat", json={"input_value": "one", "session_id": "pinned"})
    assert first.status_code == 200, first.text
    renamed = {
        **CHAT,
        "nodes": [
            {"id": "ChatInput-a1", "type": "ChatInput", "params": {"name": "question"}},
            {
                "id": "LLM-b2",
                "type": "LLM",
                "params": {"provider": "echo", "model": "echo-2", "n_messages": 10},
            },
            CHAT["nodes"][2],
        ],
    }
    data, digest = content_address(renamed)
    await store.publish("chat", data, digest, author="t", message="t", node_count=3)
    await store.activate("chat", digest, by="t", reason="t")

    async def serves_v2() -> bool:
        flows = (await client.get("/readyz")).json()["flows"]
        return any(f["flow"] == "chat" and f["loaded_hash"] == digest for f in flows)

    await wait_for(serves_v2, what="the new version loaded")
    fresh = await client.post("/api/v1/run/chat", json={"input_value": "new"})
    assert result_of(fresh.json())["results"]["message"]["text"] == "[echo-2] new"
    again = await client.post("/api/v1/run/chat", json={"input_value": "two", "session_id": "pinned"})
    assert again.status_code == 200, again.text
    assert again.headers["x-flowfleet-variant"] == "pinned"
    assert result_of(again.json())["results"]["message"]["text"] == "[echo-1] two"
