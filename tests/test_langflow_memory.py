"""LangFlow chat memory on import: Message History (`Memory`) and Memory Base → MessageHistory, the Agent's
`n_messages`, ChatInput/ChatOutput's `should_store_message` and `sender_name`."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.components.conversation import ChatMessage, InMemoryConversation
from cluster.engine import compile_flow
from cluster.flow.validation import validate
from cluster.langflow import LangflowImportError, translate
from cluster.langflow.memory import MEMORY_TOOL_DESCRIPTION
from tests.test_langflow_agents import AGENT, add_tool, export, node_of, set_value, tool_edges


def lf_node(node_id: str, lf_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    template = {"_type": "Component", **{k: {"name": k, "value": v} for k, v in fields.items()}}
    return {"id": node_id, "data": {"id": node_id, "type": lf_type, "node": {"template": template}}}


def lf_edge(source: str, output: str, target: str, field: str) -> dict[str, Any]:
    handles = {"sourceHandle": {"name": output}, "targetHandle": {"fieldName": field}}
    return {"source": source, "target": target, "data": handles}


def memory_export(fields: dict[str, Any], output: str = "messages_text") -> dict[str, Any]:
    """Message History -> Chat Output."""
    nodes = [lf_node("Memory-1", "Memory", fields), lf_node("ChatOutput-1", "ChatOutput", {})]
    edges = [lf_edge("Memory-1", output, "ChatOutput-1", "input_value")]
    return {"name": "History", "data": {"nodes": nodes, "edges": edges}}


HISTORY = [ChatMessage("user", "hi", 1.0, "User"), ChatMessage("assistant", "hello", 2.0, "AI")]


async def test_message_history_fields_become_params_and_it_runs() -> None:
    fields = {
        "mode": "Retrieve",
        "n_messages": 5,
        "sender_type": "User",
        "sender_name": "",
        "order": "Descending",
        "template": "{sender_name} said {text}",
        "session_id": "",
    }
    conversion = translate(memory_export(fields), provider="echo")
    flow = conversion.document
    assert validate(flow) == []
    params = node_of(flow, "Memory-1")["params"]
    assert params == {
        "n_messages": 5,
        "sender": "user",
        "order": "descending",
        "template": "{sender_name} said {text}",
    }
    assert conversion.warnings == ()
    compiled = compile_flow(flow)
    result = await compiled.run({}, conversation=InMemoryConversation("c", list(HISTORY)))
    assert result.outputs == {"ChatOutput-1": "User said hi"}


def test_defaults_dataframe_output_and_session_id_warning() -> None:
    fields = {"sender_type": "Machine and User", "template": "{sender_name}: {text}", "session_id": "s-1"}
    conversion = translate(memory_export(fields, output="dataframe"), provider="echo")
    assert node_of(conversion.document, "Memory-1")["params"] == {}
    [edge] = conversion.document["edges"]
    assert edge["source_output"] == "messages"
    assert conversion.warnings == (
        "node Memory-1: session_id ignored; the conversation is the one the request's session_id names",
    )


def test_n_messages_is_clamped_with_a_warning() -> None:
    conversion = translate(memory_export({"n_messages": 5000}), provider="echo")
    assert node_of(conversion.document, "Memory-1")["params"] == {"n_messages": 1000}
    assert conversion.warnings == ("node Memory-1: n_messages 5000 clamped to 1000",)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"template": "{sender_name} at {timestamp}: {text}"}, "template variable(s) 'timestamp'"),
        ({"sender_type": "Robot"}, "unknown sender 'Robot'"),
        ({"order": "Random"}, "unknown order 'Random'"),
        ({"mode": "Forget"}, "unknown mode 'Forget'"),
    ],
)
def test_what_message_history_cannot_express_is_refused(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(LangflowImportError) as caught:
        translate(memory_export(fields), provider="echo")
    [unsupported] = caught.value.unsupported
    assert unsupported.id == "Memory-1" and reason in unsupported.reason


async def test_store_mode_remembers_the_message_and_passes_it_on() -> None:
    nodes = [
        lf_node("ChatInput-1", "ChatInput", {"should_store_message": False, "sender_name": "User"}),
        lf_node("Memory-1", "Memory", {"mode": "Store", "sender": "User", "sender_name": "Ada"}),
        lf_node("ChatOutput-1", "ChatOutput", {"should_store_message": False, "sender_name": "Bot"}),
    ]
    edges = [
        lf_edge("ChatInput-1", "message", "Memory-1", "message"),
        lf_edge("Memory-1", "stored_messages", "ChatOutput-1", "input_value"),
    ]
    flow = translate({"name": "Store", "data": {"nodes": nodes, "edges": edges}}, provider="echo").document
    assert validate(flow) == []
    assert node_of(flow, "ChatInput-1")["params"] == {"name": "input", "store_message": False}
    assert node_of(flow, "ChatOutput-1")["params"] == {"store_message": False, "sender_name": "Bot"}
    assert node_of(flow, "Memory-1")["params"] == {"mode": "store", "sender": "user", "sender_name": "Ada"}
    memory = InMemoryConversation("c")
    result = await compile_flow(flow).run({"input": "note this"}, conversation=memory)
    assert result.outputs == {"ChatOutput-1": "note this"}
    assert [(m.role, m.content, m.sender) for m in memory.commit()] == [("user", "note this", "Ada")]


def test_memory_base_as_a_session_scoped_tool_becomes_a_message_history_tool() -> None:
    doc = export()
    meta = [{"name": "retrieve_memory", "description": "Returns matching memory chunks.", "status": True}]
    add_tool(doc, "MemoryBase-1", "MemoryBase", {"filter_by_session": True, "tools_metadata": meta})
    conversion = translate(doc, provider="echo")
    flow = conversion.document
    assert validate(flow) == []
    assert "MemoryBase-1" in tool_edges(flow)
    node = node_of(flow, "MemoryBase-1")
    assert node["type"] == "MessageHistory"
    assert node["params"] == {"tool_name": "retrieve_memory", "tool_description": MEMORY_TOOL_DESCRIPTION}
    assert any(
        w.startswith("node MemoryBase-1: the Memory Base's semantic search") for w in conversion.warnings
    )


CROSS_SESSION = "recall across sessions (filter_by_session off) reads only the run's own conversation"


@pytest.mark.parametrize(
    ("value", "across"),
    [(False, True), ("false", True), (" Off ", True), (None, True), (True, False), ("True", False)],
)
def test_memory_base_filter_by_session_is_read_as_langflow_reads_it(value: Any, across: bool) -> None:
    doc = export()
    add_tool(doc, "MemoryBase-1", "MemoryBase", {"filter_by_session": value})
    conversion = translate(doc, provider="echo")
    assert node_of(conversion.document, "MemoryBase-1")["type"] == "MessageHistory"
    warned = [w for w in conversion.warnings if w.startswith("node MemoryBase-1: ")]
    assert any(CROSS_SESSION in w for w in warned) is across
    assert len(warned) == (2 if across else 1)


async def test_memory_base_across_sessions_reads_the_runs_conversation_else_nothing() -> None:
    doc = export()
    meta = [{"name": "retrieve_memory", "description": "Returns matching memory chunks.", "status": True}]
    add_tool(doc, "MemoryBase-1", "MemoryBase", {"filter_by_session": False, "tools_metadata": meta})
    conversion = translate(doc, provider="echo")
    [warning] = [w for w in conversion.warnings if CROSS_SESSION in w]
    assert "a run without a session_id has none" in warning
    flow = conversion.document
    assert validate(flow) == []
    assert node_of(flow, "MemoryBase-1")["params"] == {
        "tool_name": "retrieve_memory",
        "tool_description": MEMORY_TOOL_DESCRIPTION,
    }
    compiled = compile_flow(flow)
    # The offline agent calls every tool it can fill in, then lists each result on a line of its own.
    memory = InMemoryConversation("c", list(HISTORY))
    with_session = await compiled.run({"input": "what did I track?"}, conversation=memory)
    lines = str(with_session.outputs["ChatOutput-Lp0cZ"]).split("\n")
    assert lines[lines.index("retrieve_memory: User: hi") + 1] == "AI: hello"
    without = await compiled.run({"input": "what did I track?"})
    assert "retrieve_memory: " in str(without.outputs["ChatOutput-Lp0cZ"]).split("\n")


def test_memory_base_outside_tool_mode_is_refused() -> None:
    alone = {"name": "x", "data": {"nodes": [lf_node("MemoryBase-2", "MemoryBase", {})], "edges": []}}
    with pytest.raises(LangflowImportError, match="supported only in tool mode"):
        translate(alone, provider="echo")


@pytest.mark.parametrize(("value", "expected"), [(100, None), (10, 10), (0, 0), (5000, 1000), ("", None)])
def test_agent_n_messages(value: Any, expected: int | None) -> None:
    doc = export()
    set_value(doc, AGENT, "n_messages", value)
    params = node_of(translate(doc, provider="echo").document, AGENT)["params"]
    assert params.get("n_messages") == expected
