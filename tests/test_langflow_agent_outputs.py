"""LangFlow 1.13's Agent beyond its answer: the tools it adds itself (current date, calculator) and its
`structured_response` output (`output_schema`, `format_instructions`), converted and run offline."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.engine import compile_flow
from cluster.flow.validation import validate
from cluster.langflow import LangflowImportError, translate
from cluster.langflow.agents import CALCULATOR_DESCRIPTION, CALCULATOR_TOOL_NAME
from tests.test_langflow_agents import (
    AGENT,
    CALC,
    add_tool,
    export,
    node_of,
    set_value,
    template,
    tool_edges,
)

OUTPUT = "ChatOutput-Lp0cZ"
ROWS = [
    {"name": "store", "type": "str", "description": "The shop.", "multiple": "False"},
    {"name": "prices", "type": "float", "description": "", "multiple": "True"},
]
SCHEMA = {
    "type": "object",
    "properties": {
        "store": {"type": "string", "description": "The shop."},
        "prices": {"type": "array", "items": {"type": "number"}},
    },
    "required": ["store", "prices"],
    "additionalProperties": False,
}
INSTRUCTIONS = "Extract ALL relevant instances that match the schema."


def without_calculator() -> dict[str, Any]:
    doc = export()
    doc["data"]["nodes"] = [n for n in doc["data"]["nodes"] if n["id"] != CALC]
    doc["data"]["edges"] = [e for e in doc["data"]["edges"] if e["source"] != CALC]
    return doc


def structured(doc: dict[str, Any], rows: Any = ROWS) -> dict[str, Any]:
    """The Agent's `structured_response` (instead of `response`) feeds the Chat Output."""
    [edge] = [e for e in doc["data"]["edges"] if e["source"] == AGENT]
    edge["data"]["sourceHandle"]["name"] = "structured_response"
    set_value(doc, AGENT, "output_schema", rows)
    set_value(doc, AGENT, "format_instructions", INSTRUCTIONS)
    return doc


# -- the tools LangFlow's Agent adds itself ------------------------------------------------------------


@pytest.mark.parametrize(("value", "added"), [(True, True), ("True", True), (False, False), (None, False)])
def test_add_calculator_tool_adds_langflows_calculator(value: Any, added: bool) -> None:
    doc = without_calculator()
    set_value(doc, AGENT, "add_calculator_tool", value)
    flow = translate(doc).document
    assert validate(flow) == []
    assert (f"{AGENT}.calculator" in tool_edges(flow)) is added
    if added:
        assert node_of(flow, f"{AGENT}.calculator") == {
            "id": f"{AGENT}.calculator",
            "type": "Calculator",
            "params": {"tool_name": CALCULATOR_TOOL_NAME, "tool_description": CALCULATOR_DESCRIPTION},
        }


def test_exports_that_predate_the_calculator_option_get_no_calculator() -> None:
    doc = without_calculator()
    assert "add_calculator_tool" not in template(doc, AGENT)
    assert tool_edges(translate(doc).document) == {f"{AGENT}.current_date"}


def test_a_built_in_tool_is_not_added_when_a_wired_tool_has_its_name() -> None:
    # The export wires a calculator named "evaluate expression" (-> evaluate_expression), and here a
    # current-date component named get_current_date: LangFlow then skips its own, and so does the import.
    doc = export()
    set_value(doc, AGENT, "add_calculator_tool", True)
    meta = [{"name": "get_current_date", "description": "The date.", "status": True}]
    add_tool(doc, "CurrentDate-1", "CurrentDate", {"tools_metadata": meta})
    flow = translate(doc).document
    assert validate(flow) == []
    assert tool_edges(flow) == {CALC, "CurrentDate-1"}
    assert not [n for n in flow["nodes"] if n["id"].startswith(f"{AGENT}.")]


# -- structured_response -------------------------------------------------------------------------------


async def test_structured_response_becomes_output_schema_and_runs_offline() -> None:
    conversion = translate(structured(export()), provider="echo")
    flow = conversion.document
    assert validate(flow) == []
    params = node_of(flow, AGENT)["params"]
    assert params["output_schema"] == SCHEMA
    assert params["format_instructions"] == INSTRUCTIONS
    [edge] = [e for e in flow["edges"] if e["source"] == AGENT]
    assert (edge["source_output"], edge["target"], edge["target_input"]) == ("data", OUTPUT, "message")
    [warning] = [w for w in conversion.warnings if "structured_response" in w]
    assert warning.startswith(f"node {AGENT}: structured_response must be JSON that fits output_schema")
    assert "fails the node, where LangFlow passes it on with a validation_error" in warning
    result = await compile_flow(flow).run({"input": "6 * 7"})
    assert result.outputs == {OUTPUT: {"store": "", "prices": []}}  # offline: the minimal instance


def test_only_response_read_leaves_the_schema_out_as_langflow_does() -> None:
    doc = export()
    set_value(doc, AGENT, "output_schema", ROWS)
    conversion = translate(doc)
    assert "output_schema" not in node_of(conversion.document, AGENT)["params"]
    assert not [w for w in conversion.warnings if "output_schema" in w]


def test_both_outputs_read_are_one_run_with_a_warning() -> None:
    doc = structured(export())
    doc["data"]["nodes"].append(
        {"id": "ChatOutput-2", "data": {"type": "ChatOutput", "node": {"template": {}}}}
    )
    handles = {"sourceHandle": {"name": "response"}, "targetHandle": {"fieldName": "input_value"}}
    doc["data"]["edges"].append({"source": AGENT, "target": "ChatOutput-2", "data": handles})
    conversion = translate(doc, provider="echo")
    assert validate(conversion.document) == []
    outputs = {
        (e["source_output"], e["target"]) for e in conversion.document["edges"] if e["source"] == AGENT
    }
    assert outputs == {("data", OUTPUT), ("text", "ChatOutput-2")}
    assert any("response and structured_response are both used" in w for w in conversion.warnings)


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([], "its structured_response output needs an output schema: output_schema is empty"),
        ([{"name": "x", "type": "datetime"}], "output_schema field 'x' has type 'datetime'"),
    ],
)
def test_structured_response_without_a_usable_schema_is_refused(rows: Any, reason: str) -> None:
    with pytest.raises(LangflowImportError) as caught:
        translate(structured(export(), rows), provider="echo")
    [unsupported] = caught.value.unsupported
    assert unsupported.id == AGENT and reason in unsupported.reason


def test_an_edge_into_format_instructions_is_refused() -> None:
    doc = structured(export())
    handles = {"sourceHandle": {"name": "message"}, "targetHandle": {"fieldName": "format_instructions"}}
    doc["data"]["edges"].append({"source": "ChatInput-Qk3v9", "target": AGENT, "data": handles})
    with pytest.raises(LangflowImportError, match="field 'format_instructions' of Agent cannot be fed"):
        translate(doc, provider="echo")
