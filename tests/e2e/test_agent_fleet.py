"""An agent flow on a real replica process: tool calls through the run API with a trace, metrics, and a
client that goes away mid-run cancelling the model call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.agent_support import tool_calls
from tests.e2e.fleet import WorkerProcess, wait_all_serve, wait_ready
from tests.openai_server import HANG, FakeOpenAI, Reply, completion, run_fake_openai
from tests.redis_server import RedisServer

FLOW = "helper"


def agent_doc(base_url: str) -> dict[str, Any]:
    model = {"provider": "openai", "model": "gpt-test", "base_url": base_url, "api_key_env": None}
    return {
        "name": FLOW,
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
async def replica(
    redis_server: RedisServer, namespace: str, fake: FakeOpenAI
) -> AsyncIterator[WorkerProcess]:
    worker = WorkerProcess(redis_server.url, namespace, "a0", FLOWFLEET_EGRESS_ALLOW="127.0.0.1").start()
    client = aioredis.Redis.from_url(redis_server.url)
    store = Store(client, Keys(namespace))
    data, digest = content_address(agent_doc(fake.url))
    await store.publish(FLOW, data, digest, author="e2e", message="agent", node_count=2)
    await store.activate(FLOW, digest, by="e2e", reason="agent")
    async with httpx.AsyncClient(timeout=30) as http:
        await wait_ready(http, [worker])
        await wait_all_serve(http, [worker], FLOW, digest)
    yield worker
    worker.stop()
    await client.aclose()


async def metric(http: httpx.AsyncClient, worker: WorkerProcess, line_start: str) -> float | None:
    text = (await http.get(f"{worker.url}/metrics")).text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else None


async def test_an_agent_run_through_the_run_api(fake: FakeOpenAI, replica: WorkerProcess) -> None:
    fake.script = [
        Reply(body=tool_calls(("now", {"input": "what time is it?"}), usage={"prompt_tokens": 12})),
        Reply(body=completion("noon")),  # the inner agent
        Reply(body=completion("It is noon.")),
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(
            f"{replica.url}/v1/flows/{FLOW}/run", json={"inputs": {"input": "time?"}, "trace": True}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["outputs"] == {"agent": "It is noon."}
        events = [(e["node"], e["event"]) for e in body["trace"] if "event" in e]
        assert events == [
            ("agent", "model_round"),
            ("now", "model_round"),
            ("agent", "tool_call"),
            ("agent", "model_round"),
        ]
        labels = '{flow="helper",outcome="ok",tool="now"}'
        assert await metric(http, replica, f"flowfleet_agent_tool_calls_total{labels}") == 1
        labels = '{flow="helper",kind="prompt",model="gpt-test"}'
        assert await metric(http, replica, f"flowfleet_llm_tokens_total{labels}") == 12


async def test_a_client_that_goes_away_cancels_the_run(fake: FakeOpenAI, replica: WorkerProcess) -> None:
    fake.script = [HANG]
    async with httpx.AsyncClient(timeout=30) as http:
        run = asyncio.create_task(
            http.post(f"{replica.url}/v1/flows/{FLOW}/run", json={"inputs": {"input": "hi"}})
        )
        for _ in range(1000):
            if fake.requests:
                break
            await asyncio.sleep(0.01)
        assert fake.requests, "the model was never called"
        run.cancel()  # closes the connection mid-run
        with pytest.raises(asyncio.CancelledError):
            await run
        cancelled = 'flowfleet_flow_runs_total{flow="helper",outcome="cancelled",'
        for _ in range(500):
            if await metric(http, replica, cancelled) == 1:
                break
            await asyncio.sleep(0.02)
        assert await metric(http, replica, cancelled) == 1, replica.log()[-2000:]
