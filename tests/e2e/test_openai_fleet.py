"""The OpenAI-compatible API through the real `openai` SDK, over HTTP, against replica processes: sync and
async clients, streamed chat (the pieces add up to the plain answer), a Responses conversation continued
on another replica, models, and errors as the SDK's exceptions (with run authentication on one replica).

One fleet for the module: two replicas without authentication, one with it, sharing a redis-server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from cluster.flow.hashing import content_address
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.e2e.fleet import WorkerProcess
from tests.redis_server import RedisServer, free_port

TOKEN = "e2e-secret"
ECHO = {"provider": "echo", "model": "echo-1"}


def chat_doc() -> dict[str, Any]:
    return {
        "name": "chat",
        "nodes": [
            {"id": "question", "type": "ChatInput", "params": {"name": "question"}},
            {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Q: {question}"}},
            {"id": "llm", "type": "LLM", "params": ECHO},
            {"id": "answer", "type": "ChatOutput", "params": {"name": "answer"}},
        ],
        "edges": [
            {
                "source": "question",
                "target": "prompt",
                "source_output": "message",
                "target_input": "question",
            },
            {"source": "prompt", "target": "llm"},
            {"source": "llm", "target": "answer"},
        ],
    }


def memo_doc() -> dict[str, Any]:
    """The answer shows the conversation the run was given (MessageHistory)."""
    return {
        "name": "memo",
        "nodes": [
            {"id": "question", "type": "ChatInput", "params": {"name": "question"}},
            {
                "id": "history",
                "type": "MessageHistory",
                "params": {"n_messages": 20, "template": "{role}: {text}"},
            },
            {"id": "prompt", "type": "PromptTemplate", "params": {"template": "{history}|{question}"}},
            {"id": "llm", "type": "LLM", "params": ECHO},
            {"id": "answer", "type": "ChatOutput", "params": {"name": "answer"}},
        ],
        "edges": [
            {
                "source": "question",
                "target": "prompt",
                "source_output": "message",
                "target_input": "question",
            },
            {"source": "history", "target": "prompt", "source_output": "text", "target_input": "history"},
            {"source": "prompt", "target": "llm"},
            {"source": "llm", "target": "answer"},
        ],
    }


def broken_doc() -> dict[str, Any]:
    """A model nobody answers for (a closed loopback port): the run fails once it has started."""
    model = {"provider": "openai", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    model |= {"api_key_env": None, "retries": 0}
    return {
        "name": "broken",
        "nodes": [
            {"id": "question", "type": "ChatInput"},
            {"id": "llm", "type": "LLM", "params": model},
            {"id": "answer", "type": "ChatOutput"},
        ],
        "edges": [
            {"source": "question", "target": "llm", "source_output": "message"},
            {"source": "llm", "target": "answer"},
        ],
    }


DOCS = (chat_doc(), memo_doc(), broken_doc())


async def publish(redis_url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = Store(client, Keys(namespace))
    for doc in DOCS:
        data, digest = content_address(doc)
        await store.publish(doc["name"], data, digest, author="e2e", message="openai", node_count=3)
        await store.activate(doc["name"], digest, by="e2e", reason="openai")
    await client.aclose()


def wait_serving(worker: WorkerProcess, headers: dict[str, str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while True:
            try:
                ready = http.get(f"{worker.url}/readyz").status_code == 200
                models = http.get(f"{worker.url}/v1/models", headers=headers).json()["data"] if ready else []
                if {m["id"] for m in models} >= {"chat", "memo"}:
                    return
            except httpx.TransportError:
                pass
            if worker.proc is not None and worker.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{worker.replica_id} does not serve:\n{worker.log()[-3000:]}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    namespace = f"fftest-oa-{uuid.uuid4().hex[:8]}"
    # Published from a thread of its own: the tests' event loops are per test.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, publish(redis_server.url, namespace)).result()
    tokens = tmp_path_factory.mktemp("auth") / "run-tokens.json"
    tokens.write_text(json.dumps([{"name": "e2e", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]))
    env = {"FLOWFLEET_EGRESS_ALLOW": "127.0.0.1"}
    workers = [
        WorkerProcess(redis_server.url, namespace, "oa0", **env).start(),
        WorkerProcess(redis_server.url, namespace, "oa1", **env).start(),
        WorkerProcess(
            redis_server.url, namespace, "oa2", FLOWFLEET_RUN_TOKENS_FILE=str(tokens), **env
        ).start(),
    ]
    try:
        for worker, token in zip(workers, ("", "", TOKEN), strict=True):
            wait_serving(worker, {"authorization": f"Bearer {token}"} if token else {})
        yield workers
    finally:
        for worker in workers:
            worker.stop()


OPENED: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """Each test's SDK clients are closed at its end: their pooled sockets must not outlive it."""
    yield
    while OPENED:
        OPENED.pop().close()


def client(worker: WorkerProcess, api_key: str = "unused") -> openai.OpenAI:
    made = openai.OpenAI(base_url=f"{worker.url}/v1", api_key=api_key, max_retries=0)
    OPENED.append(made)
    return made


USER = [{"role": "user", "content": "How do I reset my password?"}]


def test_the_sync_client(fleet: list[WorkerProcess]) -> None:
    completion = client(fleet[0]).chat.completions.create(model="chat", messages=USER, temperature=0.2)
    assert completion.choices[0].message.content == "[echo-1] Q: How do I reset my password?"
    assert completion.choices[0].finish_reason == "stop" and completion.model == "chat"
    assert completion.system_fingerprint is not None and completion.system_fingerprint.startswith("fp_")
    assert completion.usage is not None and completion.usage.total_tokens == 0  # echo reports none


async def test_the_async_client(fleet: list[WorkerProcess]) -> None:
    async with openai.AsyncOpenAI(base_url=f"{fleet[1].url}/v1", api_key="unused") as aclient:
        completions = await asyncio.gather(
            *(aclient.chat.completions.create(model="chat", messages=USER, user=f"u{i}") for i in range(4))
        )
        assert {c.choices[0].message.content for c in completions} == {
            "[echo-1] Q: How do I reset my password?"
        }
        chunks = [
            c async for c in await aclient.chat.completions.create(model="chat", messages=USER, stream=True)
        ]
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            == completions[0].choices[0].message.content
        )


def test_a_streamed_chat_adds_up_to_the_plain_answer(fleet: list[WorkerProcess]) -> None:
    sdk = client(fleet[0])
    messages = [{"role": "system", "content": "ignored"}, *USER]
    plain = sdk.chat.completions.create(model="chat", messages=messages).choices[0].message.content
    stream = sdk.chat.completions.create(
        model="chat", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == plain
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0


def test_a_failure_after_the_head_is_raised_by_the_sdk(fleet: list[WorkerProcess]) -> None:
    sdk = client(fleet[0])
    with pytest.raises(openai.APIError, match="node 'llm' failed") as raised:
        list(sdk.chat.completions.create(model="broken", messages=USER, stream=True))
    assert not isinstance(raised.value, openai.APIStatusError)  # the 200 head had gone out
    with pytest.raises(openai.InternalServerError) as plain:
        sdk.chat.completions.create(model="broken", messages=USER)
    assert plain.value.status_code == 502 and plain.value.response.headers["x-should-retry"] == "false"


def test_a_conversation_continues_on_another_replica(fleet: list[WorkerProcess]) -> None:
    first = client(fleet[0]).responses.create(model="memo", input="My name is Ada")
    assert first.output_text == "[echo-1] |My name is Ada" and first.status == "completed"
    second = client(fleet[1]).responses.create(
        model="memo", input="What is my name?", previous_response_id=first.id
    )
    assert (
        second.output_text
        == "[echo-1] user: My name is Ada\nassistant: [echo-1] |My name is Ada|What is my name?"
    )
    assert second.id != first.id and second.usage is not None and second.usage.total_tokens == 0


def test_a_streamed_response(fleet: list[WorkerProcess]) -> None:
    sdk = client(fleet[1])
    with sdk.responses.stream(model="chat", input="Stream me") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == "[echo-1] Q: Stream me"
    failed = list(sdk.responses.create(model="broken", input="x", stream=True))
    assert failed[-1].type == "response.failed" and "node 'llm' failed" in failed[-1].response.error.message


def test_models(fleet: list[WorkerProcess]) -> None:
    sdk = client(fleet[0])
    assert sorted(m.id for m in sdk.models.list()) == ["broken", "chat", "memo"]
    model = sdk.models.retrieve("chat")
    assert (model.id, model.owned_by) == ("chat", "flowfleet") and model.created > 0
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nope")


def test_errors_are_the_sdks_exceptions(fleet: list[WorkerProcess]) -> None:
    sdk = client(fleet[0])
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="nope", messages=USER)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as several:
        sdk.chat.completions.create(model="chat", messages=USER, n=2)
    assert several.value.param == "n"
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as tools:
        sdk.chat.completions.create(model="chat", messages=USER, tools=[tool])
    assert tools.value.param == "tools"
    guarded = fleet[2]
    with pytest.raises(openai.AuthenticationError) as denied:
        client(guarded, "wrong").chat.completions.create(model="chat", messages=USER)
    assert denied.value.code == "invalid_api_key"
    allowed = client(guarded, TOKEN).chat.completions.create(model="chat", messages=USER)
    assert allowed.choices[0].message.content == "[echo-1] Q: How do I reset my password?"
