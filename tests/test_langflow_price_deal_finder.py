"""LangFlow 1.13's *Price Deal Finder* starter, end to end against a local OpenAI-compatible server: an
Agent with web search, URL, its own calculator and date tools and a cross-session Memory Base, whose
`structured_response` (the deals, per its output schema) feeds the Chat Output."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cluster.components.agent_response import JSON_ONLY
from cluster.components.conversation import ChatMessage, InMemoryConversation
from cluster.engine import compile_flow
from cluster.errors import NodeFailed
from cluster.flow.validation import validate
from cluster.langflow import translate
from tests.langflow_starters import starter_projects
from tests.openai_server import FakeOpenAI, Reply, completion, run_fake_openai, tool_call_completion
from tests.test_langflow_starters import _lf_node, _runtime, _value

QUESTION = "Cheapest Logitech MX Master 3S?"
ROWS = [
    {"retailer": "Shop A", "price": "$89.99", "url": "https://a.test/mx", "notes": "coupon SAVE10"},
    {"retailer": "Shop B", "price": "$99.99", "url": "https://b.test/mx", "notes": ""},
]
EARLIER = [
    ChatMessage("user", "Track the MX Master 3S for me.", 1.0, "User"),
    ChatMessage("assistant", "Tracking it.", 2.0, "AI"),
]


@pytest.fixture(scope="module")
def export() -> dict[str, Any]:
    return starter_projects()["Price Deal Finder"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


async def run(fake: FakeOpenAI, export: dict[str, Any], script: list[Reply], conversation: Any = None) -> Any:
    fake.script = script
    flow = translate(export).document
    assert validate(flow) == []
    compiled = compile_flow(flow, runtime=_runtime(fake))
    try:
        return await compiled.run({"input": QUESTION}, timeout=30, conversation=conversation)
    finally:
        await compiled.aclose()


def tool_messages(request: Any) -> dict[str, str]:
    names = {
        c["id"]: c["function"]["name"] for m in request.body["messages"] for c in m.get("tool_calls") or ()
    }
    return {names[m["tool_call_id"]]: m["content"] for m in request.body["messages"] if m["role"] == "tool"}


async def test_the_deals_come_back_as_langflows_structured_response(
    fake: FakeOpenAI, export: dict[str, Any]
) -> None:
    script = [
        Reply(body=tool_call_completion("retrieve_memory", {})),
        Reply(body=tool_call_completion("evaluate_expression", {"expression": "99.99 - 89.99"})),
        Reply(body=completion(f"```json\n{json.dumps(ROWS)}\n```")),
    ]
    memory = InMemoryConversation("shopper-1", list(EARLIER))
    result = await run(fake, export, script, memory)
    assert result.outputs == {"ChatOutput-FpPme": {"results": ROWS}}
    first, second, third = fake.requests
    # LangFlow's structured-output prompt: instructions, format instructions, then the schema.
    agent = _lf_node(export, "Agent")
    flow = translate(export).document
    schema = next(n for n in flow["nodes"] if n["type"] == "Agent")["params"]["output_schema"]
    assert set(schema["properties"]) == {"retailer", "price", "url", "notes"}
    system = (
        f"{_value(agent, 'system_prompt')}\n\nFormat instructions: {_value(agent, 'format_instructions')}"
        f"\n\n{JSON_ONLY}{json.dumps(schema, indent=2)}"
    )
    assert first.body["messages"][0] == {"role": "system", "content": system}
    assert first.body["messages"][1:] == [m.as_chat() for m in EARLIER] + [
        {"role": "user", "content": QUESTION}
    ]
    tools = {t["function"]["name"] for t in first.body["tools"]}
    assert tools == {
        "get_current_date",
        "evaluate_expression",
        "perform_search",
        "fetch_content",
        "retrieve_memory",
    }
    # Memory across sessions reads this run's conversation; the calculator is the Agent's own.
    assert tool_messages(second) == {
        "retrieve_memory": "User: Track the MX Master 3S for me.\nAI: Tracking it."
    }
    assert tool_messages(third)["evaluate_expression"] == "10"
    # The turn joins the conversation: the question, and the deals as JSON text.
    stored = memory.commit()
    assert [(m.role, m.content) for m in stored][0] == ("user", QUESTION)
    assert json.loads(stored[1].content) == {"results": ROWS}


async def test_without_a_session_the_memory_is_empty_and_one_deal_is_an_object(
    fake: FakeOpenAI, export: dict[str, Any]
) -> None:
    script = [
        Reply(body=tool_call_completion("retrieve_memory", {})),
        Reply(body=completion(json.dumps(ROWS[:1]))),
    ]
    result = await run(fake, export, script)
    assert result.outputs == {"ChatOutput-FpPme": ROWS[0]}
    first, second = fake.requests
    assert [m["role"] for m in first.body["messages"]] == ["system", "user"]
    assert tool_messages(second) == {"retrieve_memory": ""}


async def test_an_answer_outside_the_schema_fails_the_run(fake: FakeOpenAI, export: dict[str, Any]) -> None:
    answer = json.dumps([{"retailer": "Shop A", "price": 89.99}])
    with pytest.raises(
        NodeFailed, match="does not fit output_schema: item 0: /: 'url' is a required property"
    ):
        await run(fake, export, [Reply(body=completion(answer))])
