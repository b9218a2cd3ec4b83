"""MessageHistory: retrieving (format, filters, order, limit), storing, no conversation, params; and the
chat history LLM nodes send (n_messages)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cluster.components.base import RunContext
from cluster.components.conversation import ChatMessage, InMemoryConversation
from cluster.components.history import MessageHistory
from cluster.components.llm import LLM
from cluster.components.registry import default_registry
from cluster.engine import compile_flow
from tests.component_helpers import build, problems_of
from tests.egress_support import loopback_runtime
from tests.openai_server import FakeOpenAI, Reply, completion, run_fake_openai

HISTORY = [
    ChatMessage("user", "hi", 1.0, "User"),
    ChatMessage("assistant", "hello", 2.0, "AI"),
    ChatMessage("user", "my name is Ada", 3.0, "Ada"),
    ChatMessage("assistant", "nice to meet you, Ada", 4.0, ""),
]


def conversation() -> InMemoryConversation:
    return InMemoryConversation("c1", list(HISTORY))


async def retrieve(params: dict[str, Any], memory: InMemoryConversation | None = None) -> dict[str, Any]:
    component = build(MessageHistory, params)
    ctx = RunContext(inputs={}, conversation=memory if memory is not None else conversation())
    return dict(await component.run({}, ctx))


def test_is_registered_with_its_ports() -> None:
    assert default_registry().get("MessageHistory") is MessageHistory
    ports = MessageHistory.ports({})
    assert ports.inputs == () and ports.outputs == ("text", "messages") and ports.default_output == "text"
    store = MessageHistory.ports({"mode": "store"})
    assert store.inputs == ("message",) and store.required == {"message"} and store.default_input == "message"


async def test_retrieves_every_message_formatted_oldest_first() -> None:
    out = await retrieve({})
    assert out["text"] == "User: hi\nAI: hello\nAda: my name is Ada\nAI: nice to meet you, Ada"
    assert out["messages"][0] == {"role": "user", "content": "hi", "sender": "User"}
    assert out["messages"][3] == {"role": "assistant", "content": "nice to meet you, Ada", "sender": "AI"}


async def test_limit_order_and_template() -> None:
    out = await retrieve({"n_messages": 2, "order": "descending", "template": "[{role}] {text} {{x}}"})
    assert out["text"] == "[assistant] nice to meet you, Ada {x}\n[user] my name is Ada {x}"
    assert [m["content"] for m in out["messages"]] == ["nice to meet you, Ada", "my name is Ada"]


async def test_filters_by_role_and_sender_name_before_the_limit() -> None:
    out = await retrieve({"sender": "user", "n_messages": 2})
    assert out["text"] == "User: hi\nAda: my name is Ada"
    out = await retrieve({"sender": "assistant", "n_messages": 1})
    assert out["text"] == "AI: nice to meet you, Ada"
    # A message stored without a sender name shows (and filters) as its role's default.
    out = await retrieve({"sender_name": "AI"})
    assert [m["content"] for m in out["messages"]] == ["hello", "nice to meet you, Ada"]


async def test_no_conversation_or_an_empty_one() -> None:
    component = build(MessageHistory, {})
    assert dict(await component.run({}, RunContext(inputs={}))) == {"text": "", "messages": []}
    assert await retrieve({}, InMemoryConversation("empty")) == {"text": "", "messages": []}


async def test_store_mode_remembers_and_passes_the_message_on() -> None:
    memory = conversation()
    component = build(MessageHistory, {"mode": "store", "sender": "user", "sender_name": "Ada"})
    out = dict(await component.run({"message": "remember me"}, RunContext(inputs={}, conversation=memory)))
    assert out["text"] == "remember me"
    assert out["messages"] == [{"role": "user", "content": "remember me", "sender": "Ada"}]
    [stored] = memory.pending
    assert (stored.role, stored.content, stored.sender) == ("user", "remember me", "Ada")
    assert stored.at > 0
    # Not part of this turn's history: earlier turns only, until the caller commits the turn.
    assert len(await memory.history(100)) == len(HISTORY)
    # The default role is the assistant's; without a conversation the message just passes through.
    component = build(MessageHistory, {"mode": "store"})
    out = dict(await component.run({"message": {"a": 1}}, RunContext(inputs={})))
    assert out["text"] == '{"a":1}' and out["messages"][0]["role"] == "assistant"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"template": "{sender_name}: {text} at {timestamp}"}, "unknown_variable"),
        ({"template": "{text.__class__}"}, "unsafe_template"),
        ({"template": "{text"}, "template_syntax"),
        ({"n_messages": 0}, None),
        ({"n_messages": 1001}, None),
        ({"sender": "Machine"}, None),
        ({"order": "up"}, None),
        ({"mode": "forget"}, None),
    ],
)
def test_bad_params_are_refused(params: dict[str, Any], code: str | None) -> None:
    problems = problems_of(MessageHistory, params)
    assert problems, params
    if code is not None:
        assert [p.code for p in problems] == [code]
        assert problems[0].path == "/nodes/0/params/template"


def test_a_tool_without_arguments() -> None:
    assert MessageHistory.tool_parameters({})["properties"] == {}
    assert MessageHistory.tool_parameters({"mode": "store"})["required"] == ["message"]


# -- LLM n_messages: the conversation as chat messages -------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


def llm_flow(url: str, **params: Any) -> dict[str, Any]:
    model = {"provider": "openai", "model": "gpt-test", "base_url": url, "api_key_env": None}
    return {
        "name": "chat",
        "nodes": [
            {"id": "in", "type": "ChatInput"},
            {"id": "llm", "type": "LLM", "params": {**model, **params}},
            {"id": "out", "type": "ChatOutput"},
        ],
        "edges": [
            {"source": "in", "target": "llm", "source_output": "message"},
            {"source": "llm", "target": "out"},
        ],
    }


async def test_llm_sends_the_last_n_messages_between_system_and_prompt(fake: FakeOpenAI) -> None:
    fake.script = [Reply(body=completion("second answer"))]
    compiled = compile_flow(llm_flow(fake.url, system="be brief", n_messages=3), runtime=loopback_runtime({}))
    memory = conversation()
    try:
        result = await compiled.run({"input": "what is my name?"}, conversation=memory)
    finally:
        await compiled.aclose()
    assert result.outputs == {"out": "second answer"}
    [request] = fake.requests
    assert request.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "nice to meet you, Ada"},
        {"role": "user", "content": "what is my name?"},
    ]
    assert [(m.role, m.content) for m in memory.commit()] == [
        ("user", "what is my name?"),
        ("assistant", "second answer"),
    ]


async def test_llm_without_n_messages_or_without_conversation_sends_no_history(fake: FakeOpenAI) -> None:
    compiled = compile_flow(llm_flow(fake.url), runtime=loopback_runtime({}))
    with_history = compile_flow(llm_flow(fake.url, n_messages=10), runtime=loopback_runtime({}))
    try:
        await compiled.run({"input": "q1"}, conversation=conversation())  # default n_messages 0
        await with_history.run({"input": "q2"})  # no conversation
    finally:
        await compiled.aclose()
        await with_history.aclose()
    assert [r.body["messages"] for r in fake.requests] == [
        [{"role": "user", "content": "q1"}],
        [{"role": "user", "content": "q2"}],
    ]


def test_llm_n_messages_bounds() -> None:
    assert problems_of(LLM, {"n_messages": -1}) and problems_of(LLM, {"n_messages": 1001})
    assert problems_of(LLM, {"n_messages": 1000}) == []
