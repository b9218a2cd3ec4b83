"""LangFlow's run API on real replica processes: an imported LangFlow 1.13 flow (tests/langflow_113, an
Agent with a calculator) called as LangFlow's clients call it, with run authentication on (`x-api-key`),
a conversation continued across two replicas, the stream parsed as LangFlow's clients parse it, a
webhook, tweaks and errors. The model is tests/openai_server.py's local fake (the replicas'
OPENAI_BASE_URL)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.langflow import translate
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.e2e.fleet import WorkerProcess
from tests.openai_server import FakeOpenAI, Reply, completion, run_fake_openai
from tests.redis_server import RedisServer

FLOW = "maths"
EXPORT = Path(__file__).resolve().parents[1] / "langflow_113" / "agent_calculator.json"
AGENT = "Agent-Xa7pL"
KEY = "sk-langflow-client"
AUTH = {"x-api-key": KEY}


def imported_flow() -> dict[str, Any]:
    """The export as `flowfleet import langflow` converts it, letting callers tweak the Agent's prompt."""
    document = translate(json.loads(EXPORT.read_text()), name=FLOW).document
    return {**document, "api": {"tweaks": {AGENT: ["system_prompt"]}}}


async def loaded(http: httpx.AsyncClient, worker: WorkerProcess, digest: str) -> bool:
    try:
        body = (await http.get(f"{worker.url}/readyz")).json()
    except (httpx.HTTPError, ValueError):
        return False
    return any(f["flow"] == FLOW and f["loaded_hash"] == digest for f in body.get("flows", ()))


async def until(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


@pytest.fixture
async def fleet(
    redis_server: RedisServer, namespace: str, fake: FakeOpenAI, tmp_path: Path
) -> AsyncIterator[list[WorkerProcess]]:
    tokens = tmp_path / "run-tokens.json"
    tokens.write_text(json.dumps([{"name": "web", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]))
    env = {"FLOWFLEET_RUN_TOKENS_FILE": str(tokens), "OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": "sk-test"}
    workers = [WorkerProcess(redis_server.url, namespace, f"lf{i}", **env).start() for i in range(2)]
    client = aioredis.Redis.from_url(redis_server.url)
    store = Store(client, Keys(namespace))
    document = imported_flow()
    data, digest = content_address(document)
    await store.publish(FLOW, data, digest, author="e2e", message="import", node_count=len(document["nodes"]))
    await store.activate(FLOW, digest, by="e2e", reason="import")
    await client.aclose()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for worker in workers:
                await until(lambda w=worker: loaded(http, w, digest), f"{worker.replica_id} to load {FLOW}")
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def answer(body: dict[str, Any]) -> str:
    text: str = body["outputs"][0]["outputs"][0]["results"]["message"]["text"]
    return text


async def test_langflows_run_api_on_two_replicas(fake: FakeOpenAI, fleet: list[WorkerProcess]) -> None:
    first, second = fleet
    fake.script = [Reply(body=completion("Nice to meet you, Ada.")), Reply(body=completion("You are Ada."))]
    async with httpx.AsyncClient(timeout=30) as http:
        run = f"{first.url}/api/v1/run/{FLOW}"
        anonymous = await http.post(run, json={"input_value": "hi"})
        assert anonymous.status_code == 401 and "detail" in anonymous.json()
        turn = await http.post(
            run, json={"input_value": "My name is Ada", "session_id": "chat-1"}, headers=AUTH
        )
        assert turn.status_code == 200, turn.text
        assert (answer(turn.json()), turn.json()["session_id"]) == ("Nice to meet you, Ada.", "chat-1")
        assert turn.json()["outputs"][0]["outputs"][0]["component_id"] == "ChatOutput-Lp0cZ"
        # The next turn lands on the other replica and the model sees the first one.
        body = {"input_value": "Who am I?", "session_id": "chat-1"}
        again = await http.post(f"{second.url}/api/v1/run/{FLOW}", json=body, headers=AUTH)
        assert again.status_code == 200 and answer(again.json()) == "You are Ada."
        assert again.headers["x-flowfleet-replica"] == second.replica_id
        sent = [(m["role"], m.get("content")) for m in fake.requests[-1].body["messages"]]
        assert ("user", "My name is Ada") in sent and ("assistant", "Nice to meet you, Ada.") in sent
        assert sent[-1] == ("user", "Who am I?")

        # A tweak the flow allows reaches the model; one it does not is refused, naming it.
        tweaks = {AGENT: {"system_prompt": "Answer in French."}}
        tweaked = await http.post(run, json={"input_value": "hi", "tweaks": tweaks}, headers=AUTH)
        assert tweaked.status_code == 200, tweaked.text
        assert fake.requests[-1].body["messages"][0] == {"role": "system", "content": "Answer in French."}
        refused = await http.post(
            run, json={"input_value": "hi", "tweaks": {AGENT: {"temperature": 2}}}, headers=AUTH
        )
        assert refused.status_code == 422
        assert refused.json()["detail"]["code"] == "TWEAKS_REFUSED"
        assert refused.json()["detail"]["fields"] == ["temperature"]
        unknown = await http.post(f"{first.url}/api/v1/run/nope", json={"input_value": "hi"}, headers=AUTH)
        assert (unknown.status_code, unknown.json()) == (404, {"detail": "flow 'nope' not found"})


def ndjson(chunks: list[str]) -> list[Any]:
    """LangFlow's JS client (`NDJSONStream` of @datastax/langflow-client): lines are gathered from one
    starting with `{` until they parse as JSON."""
    parsed, buffer = [], ""
    for chunk in chunks:
        for line in chunk.split("\n"):
            if buffer or line.lstrip().startswith("{"):
                buffer += line
            try:
                parsed.append(json.loads(buffer))
                buffer = ""
            except json.JSONDecodeError:
                pass
    return parsed


async def test_the_stream_parses_as_langflows_clients_parse_it(
    fake: FakeOpenAI, fleet: list[WorkerProcess]
) -> None:
    fake.script = [Reply(body=completion("Two plus two is four."))]
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{fleet[0].url}/api/v1/run/{FLOW}?stream=true"
        async with http.stream("POST", url, json={"input_value": "2+2?"}, headers=AUTH) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
            chunks = [chunk async for chunk in reply.aiter_text()]
    raw = "".join(chunks)
    events = [json.loads(piece) for piece in raw.split("\n\n") if piece]  # LangFlow's Python examples
    assert ndjson(chunks) == events
    names = [e["event"] for e in events]
    assert names[0] == "add_message" and names[-2:] == ["add_message", "end"] and "token" in names
    tokens = "".join(e["data"]["chunk"] for e in events if e["event"] == "token")
    end = events[-1]["data"]["result"]
    assert tokens == events[-2]["data"]["text"] == answer(end) == "Two plus two is four."
    assert end["session_id"] and events[0]["data"]["session_id"] == end["session_id"]


async def runs_ok(http: httpx.AsyncClient, worker: WorkerProcess) -> float:
    for line in (await http.get(f"{worker.url}/metrics")).text.splitlines():
        if (
            line.startswith("flowfleet_flow_runs_total{")
            and 'outcome="ok"' in line
            and f'flow="{FLOW}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_webhook_runs_in_the_background(fake: FakeOpenAI, fleet: list[WorkerProcess]) -> None:
    worker = fleet[0]
    fake.script = [Reply(body=completion("noted"))]
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{worker.url}/api/v1/webhook/{FLOW}"
        assert (await http.post(url, content=b'{"order": 42}')).status_code == 401
        accepted = await http.post(url, content=b'{"order": 42}', headers=AUTH)
        assert accepted.status_code == 202
        assert accepted.json() == {"message": "Task started in the background", "status": "in progress"}

        async def counted() -> bool:
            return await runs_ok(http, worker) >= 1

        await until(counted, "the webhook's run to be counted")
    assert fake.requests[-1].body["messages"][-1] == {"role": "user", "content": '{"order": 42}'}
