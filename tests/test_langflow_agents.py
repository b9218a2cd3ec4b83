"""LangFlow 1.13 agents and tool-mode components: conversion, refusals, and offline runs of the result.

The export in tests/langflow_113/ is written by hand in the shape LangFlow 1.13 saves (nodes with
`data.type` and `data.node.template`, tool edges from the `component_as_tool` output into the Agent's
`tools` field, handles as `œ` strings and as objects).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cluster.engine import compile_flow
from cluster.flow.validation import validate
from cluster.langflow import LangflowImportError, convert, translate
from cluster.langflow.agents import CURRENT_DATE_DESCRIPTION
from cluster.langflow.tools import tool_name
from control.cli import main

DATA = Path(__file__).parent / "langflow_113"
AGENT = "Agent-Xa7pL"
CALC = "CalculatorComponent-m2Rt8"


def export() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / "agent_calculator.json").read_text())
    return doc


def lf_data(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n["data"] for n in doc["data"]["nodes"] if n["id"] == node_id)


def template(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    fields: dict[str, Any] = lf_data(doc, node_id)["node"]["template"]
    return fields


def set_value(doc: dict[str, Any], node_id: str, name: str, value: Any, **extra: Any) -> None:
    template(doc, node_id)[name] = {"name": name, "value": value, **extra}


def node_of(flow: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in flow["nodes"] if n["id"] == node_id)


def tool_edges(flow: dict[str, Any], agent: str = AGENT) -> set[str]:
    return {e["source"] for e in flow["edges"] if e["target"] == agent and e.get("target_input") == "tools"}


def add_tool(
    doc: dict[str, Any], node_id: str, lf_type: str, fields: dict[str, Any], target: str = AGENT
) -> None:
    """A component in tool mode wired into `target`'s tools, as LangFlow 1.13 writes it."""
    tmpl = {"_type": "Component", "code": {"type": "code", "value": "class X: ..."}}
    tmpl.update({k: {"name": k, "value": v} for k, v in fields.items()})
    outputs = [{"name": "component_as_tool", "method": "to_toolkit", "types": ["Tool"]}]
    doc["data"]["nodes"].append(
        {
            "id": node_id,
            "type": "genericNode",
            "position": {"x": 0, "y": 0},
            "data": {
                "id": node_id,
                "type": lf_type,
                "node": {"template": tmpl, "outputs": outputs, "tool_mode": True, "description": ""},
            },
        }
    )
    source = {"dataType": lf_type, "id": node_id, "name": "component_as_tool", "output_types": ["Tool"]}
    target_handle = {"fieldName": "tools", "id": target, "inputTypes": ["Tool"], "type": "other"}
    doc["data"]["edges"].append(
        {
            "source": node_id,
            "target": target,
            "sourceHandle": json.dumps(source).replace('"', "œ"),
            "targetHandle": json.dumps(target_handle).replace('"', "œ"),
        }
    )


async def run(flow: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    result = await compile_flow(flow).run(inputs)
    return result.outputs


# -- the agent export: calculator tool + LangFlow's default current-date tool ---------------------------


def test_agent_with_calculator_and_current_date_tools_converts_and_validates():
    flow = convert(export())
    assert validate(flow) == []
    assert node_of(flow, AGENT) == {
        "id": AGENT,
        "type": "Agent",
        "params": {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "api_key_env": "OPENAI_API_KEY",
            "system_prompt": "You are a careful maths tutor. Use the calculator for every sum.",
            "max_iterations": 8,
        },
    }
    assert node_of(flow, CALC) == {
        "id": CALC,
        "type": "Calculator",
        "params": {
            "tool_name": "evaluate_expression",
            "tool_description": "Evaluates an arithmetic expression like 2 * (3 + 4).",
        },
    }
    assert node_of(flow, f"{AGENT}.current_date")["params"] == {
        "tool_name": "get_current_date",
        "tool_description": CURRENT_DATE_DESCRIPTION,
    }
    assert tool_edges(flow) == {CALC, f"{AGENT}.current_date"}
    # A tool edge carries no value, so it names no output.
    assert all("source_output" not in e for e in flow["edges"] if e["target_input"] == "tools")
    data_edges = {
        (e["source"], e.get("source_output"), e["target"], e["target_input"]) for e in flow["edges"]
    }
    assert ("ChatInput-Qk3v9", "message", AGENT, "input") in data_edges
    assert (AGENT, "text", "ChatOutput-Lp0cZ", "message") in data_edges


async def test_agent_export_runs_offline_with_echo_and_calls_both_tools():
    flow = convert(export(), provider="echo")
    assert validate(flow) == []
    assert node_of(flow, AGENT)["params"]["provider"] == "echo"
    outputs = await run(flow, {"input": "6 * 7"})
    answer = outputs["ChatOutput-Lp0cZ"]
    text = answer if isinstance(answer, str) else json.dumps(answer)
    assert "(system: You are a careful maths tutor. Use the calculator for every sum.) 6 * 7" in text
    assert "evaluate_expression: 42" in text
    assert re.search(r"get_current_date: \d{4}-\d{2}-\d{2}T", text)


def test_embedded_code_is_not_stored():
    assert "EMBEDDED-CODE-MARKER" not in json.dumps(convert(export()))


def test_echo_conversion_needs_no_key_and_cli_lists_the_secret(capsys, tmp_path):
    assert "api_key_env" not in node_of(convert(export(), provider="echo"), AGENT)["params"]
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(export()))
    code = main(["import", "langflow", str(path)])
    out, err = capsys.readouterr()
    assert code == 0
    assert "OPENAI_API_KEY" in err
    assert node_of(json.loads(out), AGENT)["type"] == "Agent"


# -- the Agent's own fields ----------------------------------------------------------------------------


def test_older_agent_fields_and_current_date_tool_switched_off():
    doc = export()
    tmpl = template(doc, AGENT)
    del tmpl["model"]
    set_value(doc, AGENT, "agent_llm", "OpenAI")
    set_value(doc, AGENT, "model_name", "gpt-4.1")
    set_value(doc, AGENT, "temperature", 0.2)
    set_value(doc, AGENT, "add_current_date_tool", False)
    set_value(doc, AGENT, "max_iterations", 500)
    conversion = translate(doc)
    flow = conversion.document
    params = node_of(flow, AGENT)["params"]
    assert (params["model"], params["provider"], params["temperature"]) == ("gpt-4.1", "openai", 0.2)
    assert params["max_iterations"] == 50
    assert any("max_iterations 500 clamped to 50" in w for w in conversion.warnings)
    assert tool_edges(flow) == {CALC}
    assert validate(flow) == []


@pytest.mark.parametrize("value, expected", [(0, 1), ("3", 3), (None, None), ("", None)])
def test_max_iterations_is_clamped_or_left_unset(value, expected):
    doc = export()
    set_value(doc, AGENT, "max_iterations", value)
    assert node_of(convert(doc), AGENT)["params"].get("max_iterations") == expected


def test_missing_add_current_date_tool_field_means_langflow_default_on():
    doc = export()
    del template(doc, AGENT)["add_current_date_tool"]
    assert f"{AGENT}.current_date" in tool_edges(convert(doc))


def test_other_model_providers_are_refused_unless_echo():
    doc = export()
    template(doc, AGENT)["model"]["value"] = [{"name": "claude-sonnet-4", "provider": "Anthropic"}]
    with pytest.raises(LangflowImportError) as caught:
        convert(doc)
    [entry] = caught.value.details["unsupported"]
    assert (entry["id"], entry["type"]) == (AGENT, "Agent")
    assert "'Anthropic' is not supported" in entry["reason"]
    flow = convert(doc, provider="echo")
    assert node_of(flow, AGENT)["params"]["provider"] == "echo"


def test_connected_custom_model_is_refused():
    doc = export()
    del template(doc, AGENT)["model"]
    set_value(doc, AGENT, "agent_llm", "Custom")
    with pytest.raises(LangflowImportError, match="connected language model"):
        convert(doc)


async def test_typed_input_and_empty_instructions_keep_flowfleet_defaults():
    doc = export()
    doc["data"]["edges"] = [e for e in doc["data"]["edges"] if e["source"] != "ChatInput-Qk3v9"]
    doc["data"]["nodes"] = [n for n in doc["data"]["nodes"] if n["id"] != "ChatInput-Qk3v9"]
    set_value(doc, AGENT, "input_value", "2 + 3")
    set_value(doc, AGENT, "system_prompt", "")
    flow = convert(doc, provider="echo")
    assert "system_prompt" not in node_of(flow, AGENT)["params"]
    assert validate(flow) == []
    text = str((await run(flow, {}))["ChatOutput-Lp0cZ"])
    assert "helpful assistant that can use tools" in text  # flowfleet's default is LangFlow's
    assert "evaluate_expression: 5" in text


def add_prompt_into_system_prompt(doc: dict[str, Any], prompt_id: str, text: str) -> None:
    """A Prompt Template whose output feeds the Agent's `system_prompt`, as LangFlow 1.13 writes it."""
    tmpl = {"_type": "Component", "template": {"name": "template", "value": text, "type": "prompt"}}
    node = {"template": tmpl, "outputs": [{"name": "prompt", "types": ["Message"]}]}
    doc["data"]["nodes"].append(
        {
            "id": prompt_id,
            "type": "genericNode",
            "data": {"id": prompt_id, "type": "Prompt Template", "node": node},
        }
    )
    source = {"dataType": "Prompt Template", "id": prompt_id, "name": "prompt", "output_types": ["Message"]}
    target = {"fieldName": "system_prompt", "id": AGENT, "inputTypes": ["Message"], "type": "str"}
    doc["data"]["edges"].append(
        {"source": prompt_id, "target": AGENT, "data": {"sourceHandle": source, "targetHandle": target}}
    )


async def test_an_edge_into_system_prompt_feeds_the_agents_port_and_drops_the_typed_value():
    doc = export()
    add_prompt_into_system_prompt(doc, "Prompt-Sy5tm", "You are a terse tutor of {subject}.")
    flow = convert(doc, provider="echo")
    assert "system_prompt" not in node_of(flow, AGENT)["params"]
    assert {
        "source": "Prompt-Sy5tm",
        "source_output": "text",
        "target": AGENT,
        "target_input": "system_prompt",
    } in flow["edges"]
    assert validate(flow) == []
    text = str((await run(flow, {"input": "6 * 7", "subject": "maths"}))["ChatOutput-Lp0cZ"])
    assert "(system: You are a terse tutor of maths.) 6 * 7" in text
    assert "careful maths tutor" not in text


# -- tool components -----------------------------------------------------------------------------------


async def test_url_component_without_urls_may_fetch_any_host_with_a_warning():
    doc = export()
    add_tool(doc, "URLComponent-Fq1aa", "URLComponent", {"urls": [], "max_depth": 1})
    conversion = translate(doc, provider="echo")
    flow = conversion.document
    assert node_of(flow, "URLComponent-Fq1aa")["params"]["allowed_domains"] == ["*"]
    [warning] = [w for w in conversion.warnings if "URLComponent-Fq1aa" in w]
    assert "any host the egress policy allows" in warning and "narrow allowed_domains" in warning
    assert "URLComponent-Fq1aa" in tool_edges(flow)
    assert validate(flow) == []
    compile_flow(flow)  # builds without a runtime: dry runs fetch nothing


def test_url_component_urls_become_allowed_domains():
    doc = export()
    urls = ["https://docs.python.org/3/library/", "docs.python.org/3/", "http://Example.COM:8080/x", ""]
    add_tool(doc, "URLComponent-Fq1aa", "URLComponent", {"urls": urls, "max_depth": 2, "timeout": 300})
    conversion = translate(doc)
    params = node_of(conversion.document, "URLComponent-Fq1aa")["params"]
    assert params["allowed_domains"] == ["docs.python.org", "example.com"]
    assert params["timeout_s"] == 120
    assert params["tool_name"] == "URLComponent-Fq1aa"
    assert any("max_depth 2 ignored" in w for w in conversion.warnings)
    assert "URLComponent-Fq1aa" in tool_edges(conversion.document)


def test_url_with_a_bad_host_and_url_outside_tool_mode_are_refused():
    doc = export()
    add_tool(doc, "URLComponent-Fq1aa", "URLComponent", {"urls": ["https://"]})
    doc["data"]["nodes"].append(
        {"id": "URLComponent-zz", "data": {"type": "URLComponent", "node": {"template": {}}}}
    )
    with pytest.raises(LangflowImportError) as caught:
        convert(doc)
    reasons = {u["id"]: u["reason"] for u in caught.value.details["unsupported"]}
    assert "without a valid host name" in reasons["URLComponent-Fq1aa"]
    assert "only in tool mode" in reasons["URLComponent-zz"]


@pytest.mark.parametrize(
    "lf_type", ["TavilySearchComponent", "DuckDuckGoSearchComponent", "SearchAPIComponent"]
)
def test_search_components_become_web_search(lf_type):
    doc = export()
    add_tool(doc, "Search-1", lf_type, {"max_results": 25, "api_key": "sk-typed-in"})
    conversion = translate(doc)
    params = node_of(conversion.document, "Search-1")["params"]
    assert params == {"tool_name": "Search-1", "max_results": 10}
    assert node_of(conversion.document, "Search-1")["type"] == "WebSearch"
    assert "sk-typed-in" not in json.dumps(conversion.document)
    assert any("FLOWFLEET_SEARCH_PROVIDER" in w for w in conversion.warnings)


def test_current_date_component_as_a_tool_keeps_its_timezone():
    doc = export()
    set_value(doc, AGENT, "add_current_date_tool", False)
    meta = [{"name": "now in Paris!", "description": "The time in Paris.", "status": True}]
    add_tool(doc, "CurrentDate-p1", "CurrentDate", {"timezone": "Europe/Paris", "tools_metadata": meta})
    flow = convert(doc)
    assert node_of(flow, "CurrentDate-p1") == {
        "id": "CurrentDate-p1",
        "type": "CurrentDate",
        "params": {
            "tool_name": "now_in_Paris",
            "tool_description": "The time in Paris.",
            "timezone": "Europe/Paris",
        },
    }
    assert validate(flow) == []


async def test_an_agent_as_a_tool_of_another_agent():
    doc = export()
    inner = copy.deepcopy(next(n for n in doc["data"]["nodes"] if n["id"] == AGENT))
    inner["id"] = inner["data"]["id"] = "Agent-inner"
    inner["data"]["node"]["template"]["tools_metadata"] = {
        "name": "tools_metadata",
        "value": [{"name": "maths helper", "description": "Delegates sums.", "status": True}],
    }
    inner["data"]["node"]["template"]["add_current_date_tool"]["value"] = False
    doc["data"]["nodes"].append(inner)
    source = {"dataType": "Agent", "id": "Agent-inner", "name": "component_as_tool", "output_types": ["Tool"]}
    doc["data"]["edges"].append(
        {
            "source": "Agent-inner",
            "target": AGENT,
            "data": {"sourceHandle": source, "targetHandle": {"fieldName": "tools", "id": AGENT}},
        }
    )
    flow = convert(doc, provider="echo")
    assert validate(flow) == []
    assert tool_edges(flow) == {CALC, f"{AGENT}.current_date", "Agent-inner"}
    params = node_of(flow, "Agent-inner")["params"]
    assert (params["tool_name"], params["tool_description"]) == ("maths_helper", "Delegates sums.")
    text = str((await run(flow, {"input": "6 * 7"}))["ChatOutput-Lp0cZ"])
    assert "maths_helper:" in text


def test_unknown_tool_components_are_all_listed_as_unsupported():
    doc = export()
    add_tool(doc, "PythonREPLComponent-aa", "PythonREPLComponent", {"global_imports": "os"})
    add_tool(doc, "URLComponent-Fq1aa", "URLComponent", {"urls": ["https://"]})
    with pytest.raises(LangflowImportError) as caught:
        convert(doc)
    unsupported = {u["id"]: (u["type"], u["reason"]) for u in caught.value.details["unsupported"]}
    assert unsupported["PythonREPLComponent-aa"] == ("PythonREPLComponent", "no flowfleet equivalent")
    assert unsupported["URLComponent-Fq1aa"][0] == "URLComponent"


def test_tools_port_takes_only_component_as_tool_edges():
    doc = export()
    # A value wired into `tools`, and a toolset wired into a value field: both are refused.
    chat_edge = doc["data"]["edges"][0]
    chat_edge["data"]["targetHandle"]["fieldName"] = "tools"
    calc_edge = doc["data"]["edges"][1]
    calc_edge["data"]["targetHandle"]["fieldName"] = "input_value"
    with pytest.raises(LangflowImportError) as caught:
        convert(doc)
    problems = caught.value.details["problems"]
    assert len(problems) == 2
    assert all("'component_as_tool' output may feed an Agent's tools" in p for p in problems)


def test_calculator_outside_tool_mode_is_an_ordinary_node():
    doc = {
        "data": {
            "nodes": [{"id": "Calc-1", "data": {"type": "CalculatorComponent", "node": {"template": {}}}}],
            "edges": [],
        }
    }
    assert convert(doc)["nodes"] == [{"id": "Calc-1", "type": "Calculator", "params": {}}]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("evaluate expression", "evaluate_expression"),
        ("x" * 80, "x" * 64),
        ("ünïcode-ok", "n_code-ok"),
        ("!!", ""),
    ],
)
def test_tool_names_are_sanitised(raw, expected):
    assert tool_name(raw) == expected
