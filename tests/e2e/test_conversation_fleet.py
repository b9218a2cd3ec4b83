"""A conversation whose turns land on three replicas keeps its history; with Redis stopped mid-conversation
the replica keeps answering, says the memory degraded, and writes the turn once Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.e2e.fleet import WorkerProcess, wait_all_serve, wait_ready
from tests.redis_server import RedisServer

FLOW = "chat"
DOC: dict[str, Any] = {
    "name": FLOW,
    "nodes": [
        {"id": "question", "type": "ChatInput", "params": {"name": "question"}},
        {
            "id": "history",
            "type": "MessageHistory",
            "params": {"n_messages": 20, "template": "{role}: {text}"},
        },
        {
            "id": "prompt",
            "type": "PromptTemplate",
            "params": {"template": "History:\n{history}\nQ: {question}"},
        },
        {"id": "llm", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
        {"id": "answer", "type": "ChatOutput", "params": {"name": "answer"}},
    ],
    "edges": [
        {"source": "question", "target": "prompt", "source_output": "message", "target_input": "question"},
        {"source": "history", "target": "prompt", "source_output": "text", "target_input": "history"},
        {"source": "prompt", "target": "llm"},
        {"source": "llm", "target": "answer", "source_output": "text", "target_input": "message"},
    ],
}


async def start_fleet(server: RedisServer, namespace: str, count: int) -> list[WorkerProcess]:
    workers = [WorkerProcess(server.url, namespace, f"c{i}").start() for i in range(count)]
    client = aioredis.Redis.from_url(server.url)
    store = Store(client, Keys(namespace))
    data, digest = content_address(DOC)
    await store.publish(FLOW, data, digest, author="e2e", message="chat", node_count=len(DOC["nodes"]))
    await store.activate(FLOW, digest, by="e2e", reason="chat")
    await client.aclose()
    async with httpx.AsyncClient(timeout=30) as http:
        await wait_ready(http, workers)
        await wait_all_serve(http, workers, FLOW, digest)
    return workers


async def ask(worker: WorkerProcess, question: str, session: str = "talk-1") -> httpx.Response:
    # A new connection per turn, as a load balancer would open.
    async with httpx.AsyncClient(timeout=30) as http:
        body = {"inputs": {"question": question}, "session_id": session, "user_id": "ada"}
        return await http.post(f"{worker.url}/v1/flows/{FLOW}/run", json=body)


@pytest.fixture
async def fleet(redis_server: RedisServer, namespace: str) -> AsyncIterator[list[WorkerProcess]]:
    workers = await start_fleet(redis_server, namespace, 3)
    yield workers
    for worker in workers:
        worker.stop()


async def test_turns_on_three_replicas_share_one_history(fleet: list[WorkerProcess]) -> None:
    answers = []
    for worker, question in zip(fleet, ("my name is Ada", "I like tea", "what do you know?"), strict=True):
        reply = await ask(worker, question)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-flowfleet-replica"] == worker.replica_id
        assert "memory" not in reply.json()
        answers.append(reply.json()["outputs"]["answer"])
    last = answers[-1]
    assert "user: my name is Ada" in last and "user: I like tea" in last and "assistant: [echo-1]" in last
    # Another session of the same flow starts empty.
    fresh = (await ask(fleet[0], "hello?", session="talk-2")).json()["outputs"]["answer"]
    assert fresh.startswith("[echo-1] History:\n\nQ: hello?")


async def test_redis_stopped_mid_conversation(
    make_redis_server: Callable[..., RedisServer], namespace: str
) -> None:
    server = make_redis_server()
    (worker,) = await start_fleet(server, namespace, 1)
    try:
        assert (await ask(worker, "first")).status_code == 200
        server.kill()
        reply = await ask(worker, "while Redis is away")
        assert reply.status_code == 200, reply.text
        assert reply.json()["memory"] == {"history": "unavailable", "stored": "buffered"}
        server.restart()
        client = aioredis.Redis.from_url(server.url)
        key = Keys(namespace).conversation(FLOW, "-", "talk-1")
        for _ in range(500):  # the replica writes the buffered turn once Redis answers again
            if await client.llen(key) == 2:
                break
            await asyncio.sleep(0.02)
        stored = await client.lrange(key, 0, -1)
        await client.aclose()
        assert [b'"content":"while Redis is away"' in m for m in stored] == [True, False], stored
    finally:
        worker.stop()
