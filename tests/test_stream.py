"""Streamed runs through the run API: a replica app served by uvicorn in this process (real sockets, so
events arrive as they are written and a client can go away), a real redis-server and a fake OpenAI."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from cluster.flow.hashing import content_address
from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.agent_support import tool_calls
from tests.openai_server import (
    HANG,
    FakeOpenAI,
    Reply,
    StreamReply,
    completion,
    run_fake_openai,
    stream_chunks,
)
from tests.worker_support import wait_for
from worker import stream as stream_module
from worker.app import create_app

Event = tuple[str, Any]  # (event name, data); comments as ("comment", text)


def llm_doc(base_url: str) -> dict[str, Any]:
    params = {"provider": "openai", "model": "gpt-test", "base_url": base_url, "api_key_env": None}
    return {
        "name": "ask",
        "nodes": [{"id": "llm", "type": "LLM", "params": {**params, "backoff_s": 0.01}}],
        "edges": [],
    }


def chat_doc(base_url: str) -> dict[str, Any]:
    params = {"provider": "openai", "model": "gpt-test", "base_url": base_url, "api_key_env": None}
    return {
        "name": "chat",
        "nodes": [
            {"id": "in", "type": "ChatInput", "params": {"name": "prompt"}},
            {"id": "llm", "type": "LLM", "params": {**params, "n_messages": 10}},
            {"id": "out", "type": "ChatOutput"},
        ],
        "edges": [{"source": "in", "target": "llm"}, {"source": "llm", "target": "out"}],
    }


def agent_doc(base_url: str) -> dict[str, Any]:
    model = {"provider": "openai", "model": "gpt-test", "base_url": base_url, "api_key_env": None}
    return {
        "name": "helper",
        "nodes": [
            {"id": "agent", "type": "Agent", "params": {**model, "system_prompt": "Be exact."}},
            {"id": "now", "type": "Agent", "params": {**model, "tool_description": "Answers questions."}},
        ],
        "edges": [{"source": "now", "target": "agent", "target_input": "tools"}],
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


@pytest.fixture
async def worker_url(
    redis_server: Any, namespace: str, redis_client: Any, fake: FakeOpenAI
) -> AsyncIterator[str]:
    store = Store(redis_client, Keys(namespace))
    for doc in (llm_doc(fake.url), chat_doc(fake.url), agent_doc(fake.url)):
        data, digest = content_address(doc)
        await store.publish(doc["name"], data, digest, author="t", message="t", node_count=len(doc["nodes"]))
        await store.activate(doc["name"], digest, by="t", reason="t")
    settings = Settings.from_env(
        {},
        redis_url=redis_server.url,
        namespace=namespace,
        replica_id="replica-s",
        reconcile_s=0.5,
        egress_allow="127.0.0.1",
    )
    app = create_app(settings, environ={})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with httpx.AsyncClient(timeout=10) as http:

        async def ready() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return (await http.get(f"{url}/readyz")).status_code == 200
            return False

        await wait_for(ready, what="replica ready")
    yield url
    server.should_exit = True
    await task
    sock.close()


async def read_events(response: httpx.Response, until: str | None = None) -> list[Event]:
    """Parse the event stream; stop after the first event or comment named `until` when given."""
    events: list[Event] = []
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith(":"):
            events.append(("comment", line[1:].strip()))
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            events.append((name, orjson.loads(data)))
            name, data = "message", ""
        else:
            continue
        if until is not None and events and events[-1][0] == until:
            break
    return events


async def streamed(
    http: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> tuple[httpx.Response, list[Event]]:
    async with http.stream("POST", url, json={**body, "stream": True}) as response:
        return response, await read_events(response)


def tokens(events: list[Event], node: str) -> str:
    return "".join(data["delta"] for name, data in events if name == "token" and data["node"] == node)


async def metric(http: httpx.AsyncClient, url: str, line_start: str) -> float | None:
    text = (await http.get(f"{url}/metrics")).text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else None


async def test_tokens_in_order_then_done_with_the_plain_body(fake: FakeOpenAI, worker_url: str) -> None:
    fake.script = [Reply(body=completion("The answer is 42, said the model."))]
    run = f"{worker_url}/v1/flows/ask/run"
    async with httpx.AsyncClient(timeout=10) as http:
        plain = await http.post(run, json={"inputs": {"prompt": "?"}, "trace": True})
        assert plain.status_code == 200, plain.text
        response, events = await streamed(http, run, {"inputs": {"prompt": "?"}, "trace": True})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-flowfleet-version"] == plain.headers["x-flowfleet-version"]
        assert response.headers["x-flowfleet-variant"] == "stable"
        names = [name for name, _ in events]
        assert names[-1] == "done" and set(names[:-1]) == {"token"}
        deltas = [data["delta"] for name, data in events if name == "token"]
        assert deltas == ["The ", "answer ", "is ", "42, ", "said ", "the ", "model."]
        assert tokens(events, "llm") == plain.json()["outputs"]["llm"]
        done, expected = events[-1][1], plain.json()
        for body in (done, expected):
            body.pop("duration_ms")
            for step in body["trace"]:
                step.pop("duration_ms", None)
                step.pop("started_ms", None)
        assert done == expected
        assert fake.requests[-1].body["stream"] is True and "stream" not in fake.requests[0].body
        # Accept: text/event-stream asks for the same
        headers = {"Accept": "text/event-stream"}
        async with http.stream("POST", run, json={"inputs": {"prompt": "?"}}, headers=headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = await read_events(r)
        assert events[-1][0] == "done" and tokens(events, "llm") == plain.json()["outputs"]["llm"]
        metrics = (await http.get(f"{worker_url}/metrics")).text
        assert 'flowfleet_stream_first_token_seconds_count{flow="ask"} 2.0' in metrics
        assert 'flowfleet_stream_duration_seconds_count{flow="ask"} 2.0' in metrics


async def test_a_streamed_turn_is_stored_like_a_plain_one(fake: FakeOpenAI, worker_url: str) -> None:
    fake.script = [Reply(body=completion("Noted: blue."))]
    run = f"{worker_url}/v1/flows/chat/run"
    async with httpx.AsyncClient(timeout=10) as http:
        body = {"inputs": {"prompt": "My colour is blue."}, "session_id": "conv-1"}
        _, events = await streamed(http, run, body)
        done = events[-1][1]
        assert events[-1][0] == "done" and done["session_id"] == "conv-1" and "pinned" in done
        assert done["outputs"] == {"out": "Noted: blue."} and tokens(events, "llm") == "Noted: blue."
        plain = await http.post(run, json={"inputs": {"prompt": "Which colour?"}, "session_id": "conv-1"})
        assert plain.status_code == 200, plain.text
    assert fake.requests[-1].body["messages"] == [
        {"role": "user", "content": "My colour is blue."},
        {"role": "assistant", "content": "Noted: blue."},
        {"role": "user", "content": "Which colour?"},
    ]


async def test_errors_before_the_run_stay_plain_json(worker_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        cases = [
            ("nope", {"inputs": {}, "stream": True}, 404, "flow_not_found"),
            ("ask", {"inputs": {}, "stream": True}, 422, "invalid_inputs"),
            ("ask", {"inputs": {"prompt": "?"}, "stream": "yes"}, 400, "bad_request"),
        ]
        for flow, body, status, code in cases:
            r = await http.post(f"{worker_url}/v1/flows/{flow}/run", json=body)
            assert (r.status_code, r.json()["error"]) == (status, code), r.text
            assert r.headers["content-type"].startswith("application/json")


async def test_an_agent_stream_shows_its_tool_calls(fake: FakeOpenAI, worker_url: str) -> None:
    fake.script = [
        Reply(body=tool_calls(("now", {"input": "what time is it?"}))),
        Reply(body=completion("noon")),  # the inner agent
        Reply(body=completion("It is noon.")),
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        _, events = await streamed(http, f"{worker_url}/v1/flows/helper/run", {"inputs": {"input": "time?"}})
    names = [(name, data.get("node")) for name, data in events]
    assert names[0] == ("tool_call", "agent")
    call = events[0][1]
    assert (call["tool"], orjson.loads(call["arguments"])) == ("now", {"input": "what time is it?"})
    result = next(data for name, data in events if name == "tool_result")
    assert (result["tool"], result["outcome"], result["result"], result["id"]) == (
        "now",
        "ok",
        "noon",
        call["id"],
    )
    assert tokens(events, "now") == "noon"  # the inner agent's answer, named by its node
    assert tokens(events, "agent") == "It is noon."
    assert names.index(("tool_result", "agent")) < names.index(("token", "agent"))
    assert events[-1] == ("done", events[-1][1]) and events[-1][1]["outputs"] == {"agent": "It is noon."}


async def test_an_upstream_failure_mid_stream_ends_with_an_error_event(
    fake: FakeOpenAI, worker_url: str
) -> None:
    fake.script = [StreamReply(list(stream_chunks(completion("one two three four"))), break_after=3)]
    async with httpx.AsyncClient(timeout=10) as http:
        response, events = await streamed(http, f"{worker_url}/v1/flows/ask/run", {"inputs": {"prompt": "?"}})
    assert response.status_code == 200
    assert tokens(events, "llm") == "one two "
    name, data = events[-1]
    assert name == "error" and set(data) == {"error", "message", "details"}
    assert data["error"] == "node_failed" and "broke after part of the answer" in data["message"]
    assert len(fake.requests) == 1  # text went out: no retry


async def test_keepalives_in_silence_and_a_client_going_away_cancels_the_run(
    fake: FakeOpenAI, worker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "HEARTBEAT_S", 0.05)
    fake.script = [HANG]
    async with httpx.AsyncClient(timeout=10) as http:
        body = {"inputs": {"prompt": "?"}, "stream": True}
        async with http.stream("POST", f"{worker_url}/v1/flows/ask/run", json=body) as response:
            events = await read_events(response, until="comment")
            assert events == [("comment", "keepalive")]
            assert fake.requests, "the model was never called"
        # leaving the block closes the connection mid-stream
        cancelled = 'flowfleet_flow_runs_total{flow="ask",outcome="cancelled",'

        async def counted() -> bool:
            return await metric(http, worker_url, cancelled) == 1

        await wait_for(counted, what="the run counted as cancelled")
