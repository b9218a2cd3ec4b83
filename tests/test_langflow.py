"""LangFlow import: detection, conversion of real-format exports, errors, and offline runs of the result."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cluster.engine import compile_flow
from cluster.errors import FlowfleetError
from cluster.flow.validation import validate
from cluster.langflow import (
    DEFAULT_MODEL,
    LangflowImportError,
    convert,
    flow_name,
    is_langflow_export,
    translate,
)
from cluster.langflow.export import parse_handle, read_export
from cluster.names import InvalidName

DATA = Path(__file__).parent / "data" / "langflow"
CODE_MARKER = "EMBEDDED-CODE-MARKER-7f3a"
LLM = "LanguageModelComponent-UcEoU"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return doc


def lf_node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    """The `data.node` of a LangFlow node in a full export."""
    return next(n["data"]["node"] for n in doc["data"]["nodes"] if n["id"] == node_id)


def node_of(flow: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in flow["nodes"] if n["id"] == node_id)


def ports(flow: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(e["source"], e["source_output"], e["target"], e["target_input"]) for e in flow["edges"]}


async def run(flow: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    compiled = compile_flow(flow)
    result = await compiled.run(inputs)
    return result.outputs


# -- detection -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["basic_prompting", "two_edges_notes", "unsupported", "slim"])
def test_exports_are_detected(name):
    assert is_langflow_export(load(name))


@pytest.mark.parametrize(
    "doc",
    [
        {"nodes": [{"id": "p", "type": "PromptTemplate", "params": {"template": "{x}"}}], "edges": []},
        {"nodes": []},
        {"name": "x"},
        {"data": {"nodes": "not a list"}},
        [],
        "text",
        None,
    ],
)
def test_other_documents_are_not_detected(doc):
    assert not is_langflow_export(doc)


def test_converted_document_is_not_detected_again():
    assert not is_langflow_export(convert(load("basic_prompting")))


# -- basic prompting: ChatInput -> Prompt -> Language Model -> ChatOutput --------------------------------


def test_basic_prompting_maps_components_fields_and_ports():
    flow = convert(load("basic_prompting"))
    assert flow["name"] == "basic_prompting"
    assert flow["description"] == "Perform basic prompting with an OpenAI model."
    types = {n["id"]: n["type"] for n in flow["nodes"]}
    assert types == {
        "ChatInput-9e2tW": "ChatInput",
        "Prompt-Z1IXr": "PromptTemplate",
        "LanguageModelComponent-UcEoU": "LLM",
        "ChatOutput-7q74v": "ChatOutput",
    }
    assert node_of(flow, "ChatInput-9e2tW")["params"] == {"name": "input", "default": "Hello"}
    assert node_of(flow, "LanguageModelComponent-UcEoU")["params"] == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "api_key_env": "OPENAI_API_KEY",
        "temperature": 0.3,
    }
    assert ports(flow) == {
        ("ChatInput-9e2tW", "message", "Prompt-Z1IXr", "question"),
        ("Prompt-Z1IXr", "text", "LanguageModelComponent-UcEoU", "prompt"),
        ("LanguageModelComponent-UcEoU", "text", "ChatOutput-7q74v", "message"),
    }
    assert validate(flow) == []


async def test_basic_prompting_runs_offline_and_builds_langflow_prompt_text():
    export = load("basic_prompting")
    prompt = lf_node(export, "Prompt-Z1IXr")["template"]
    question = "How do I roll back a flow? {not a variable}"
    # What LangFlow builds: its Prompt formats the template like str.format, with the value typed into
    # the `product` field and the others supplied at run time (tone as a tweak, question by the edge).
    expected = prompt["template"]["value"].format(
        product=prompt["product"]["value"], question=question, tone="fifty"
    )

    flow = convert(export, provider="echo")

    assert node_of(flow, "LanguageModelComponent-UcEoU")["params"]["provider"] == "echo"
    outputs = await run(flow, {"input": question, "tone": "fifty"})
    reply = outputs["ChatOutput-7q74v"]
    assert reply.startswith("[gpt-4o-mini] ")
    assert reply.endswith(expected)
    assert '{"answer": "..."}' in reply and "support assistant for flowfleet" in reply


async def test_chat_input_uses_the_value_typed_into_langflow_when_the_run_has_none():
    flow = convert(load("basic_prompting"), provider="echo")
    outputs = await run(flow, {"tone": "ten"})
    assert "Question: Hello\n" in outputs["ChatOutput-7q74v"]


# -- two edges into one LLM (prompt and system message), with notes --------------------------------------


async def test_two_edges_feed_the_model_prompt_and_system_message():
    export = load("two_edges_notes")
    prompt = lf_node(export, "Prompt-3SM2g")["template"]
    expected_system = prompt["template"]["value"].format(topic=prompt["topic"]["value"])

    flow = convert(export, provider="echo")

    assert ports(flow) >= {
        ("ChatInput-jFwUm", "message", "OpenAIModel-OcXkl", "prompt"),
        ("Prompt-3SM2g", "text", "OpenAIModel-OcXkl", "system"),
    }
    assert validate(flow) == []
    outputs = await run(flow, {"input": "What should I build first?"})
    reply = outputs["ChatOutput-gDYiJ"]
    assert reply.startswith("[gpt-4.1-mini] ")
    assert f"(system: {expected_system})" in reply
    assert reply.endswith("What should I build first?")


def test_openai_model_fields_become_llm_params():
    params = node_of(convert(load("two_edges_notes")), "OpenAIModel-OcXkl")["params"]
    assert params == {
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "api_key_env": "OPENAI_API_KEY",
        "temperature": 0.1,
        "max_tokens": 256,
        # LangFlow's default 700 s is above flowfleet's limit.
        "timeout_s": 600.0,
        "retries": 5,
    }


def test_note_nodes_are_dropped_and_optionally_kept_in_the_description():
    export = load("two_edges_notes")
    flow = convert(export)
    ids = {n["id"] for n in flow["nodes"]}
    assert not ids & {"undefined-kVLkG", "note-WrEGM"}
    assert "README" not in flow["description"]

    with_notes = convert(export, keep_notes=True)
    assert with_notes["nodes"] == flow["nodes"]
    assert with_notes["description"].startswith("Perform basic prompting with an OpenAI model.")
    assert "#### Quick Start" in with_notes["description"]
    assert "Add your OpenAI API key here" in with_notes["description"]


# -- unsupported components ------------------------------------------------------------------------------


def test_every_unsupported_component_is_listed():
    with pytest.raises(LangflowImportError) as caught:
        convert(load("unsupported"))
    error = caught.value
    listed = {(u["id"], u["type"]) for u in error.details["unsupported"]}
    # The Agent has no model set: it gets the default OpenAI model (with a warning), not a refusal.
    assert listed == {
        ("CustomComponent-Qd9zT", "CustomComponent"),
        ("Prompt-eD1t3", "Prompt"),
        ("LanguageModelComponent-An7hr", "LanguageModelComponent"),
    }
    for node_id, node_type in listed:
        assert f"{node_id} ({node_type})" in str(error)
    reasons = {u["id"]: u["reason"] for u in error.details["unsupported"]}
    assert "edited" in reasons["Prompt-eD1t3"]
    assert "Anthropic" in reasons["LanguageModelComponent-An7hr"]
    assert (error.code, error.http_status, error.exit_code) == ("unsupported_langflow", 422, 1)
    assert isinstance(error, FlowfleetError)
    assert "\n" not in str(error)


def test_echo_provider_accepts_any_model_provider_but_not_other_components():
    with pytest.raises(LangflowImportError) as caught:
        convert(load("unsupported"), provider="echo")
    ids = {u["id"] for u in caught.value.details["unsupported"]}
    # The Agent has no model set: gpt-4o-mini for openai (with a warning), echo-1 with echo.
    assert ids == {"CustomComponent-Qd9zT", "Prompt-eD1t3"}


def test_edges_that_cannot_be_mapped_are_all_reported():
    export = load("basic_prompting")
    edges = export["data"]["edges"]
    model_object = copy.deepcopy(edges[2])  # LLM -> ChatOutput, rewired below
    model_object["data"]["sourceHandle"]["name"] = "model_output"
    model_object["data"]["targetHandle"]["fieldName"] = "sender_name"
    twice = copy.deepcopy(edges[0])  # a second edge into Prompt.question
    dangling = copy.deepcopy(edges[1])
    dangling["target"] = "Missing-123"
    dangling["data"]["targetHandle"]["id"] = "Missing-123"
    edges.extend([model_object, twice, dangling])

    with pytest.raises(LangflowImportError) as caught:
        convert(export)

    problems = caught.value.details["problems"]
    assert caught.value.details["unsupported"] == []
    assert len(problems) == 3
    assert "'model_output'" in problems[0]
    assert "already fed by edge 0" in problems[1]
    assert "'Missing-123'" in problems[2]
    assert "(and 2 more)" in str(caught.value)


def test_an_edge_into_a_field_flowfleet_cannot_feed_is_reported():
    export = load("basic_prompting")
    edge = export["data"]["edges"][2]
    edge["data"]["targetHandle"]["fieldName"] = "sender_name"
    with pytest.raises(LangflowImportError, match="field 'sender_name' of ChatOutput cannot be fed"):
        convert(export)


# -- embedded code ---------------------------------------------------------------------------------------


async def test_embedded_code_is_neither_executed_nor_stored(tmp_path):
    export = load("embedded_code")
    # Each component's code would raise SystemExit (ending this test) if anything executed it.
    assert CODE_MARKER in lf_node(export, "ChatInput-c0De1")["template"]["code"]["value"]

    conversion = translate(export, provider="echo")

    text = json.dumps(conversion.document)
    assert CODE_MARKER not in text
    assert "import os" not in text
    assert all("code" not in n["params"] for n in conversion.document["nodes"])
    assert validate(conversion.document) == []
    outputs = await run(conversion.document, {"input": "still data"})
    assert outputs["ChatOutput-c0De4"].endswith("Echo this: still data")


def test_a_typed_api_key_is_never_copied():
    conversion = translate(load("embedded_code"))
    params = node_of(conversion.document, "LanguageModelComponent-c0De3")["params"]
    assert "api_key_env" not in params  # the LLM falls back to OPENAI_API_KEY
    assert "sk-live" not in json.dumps(conversion.document)
    assert any("API key" in w and "OPENAI_API_KEY" in w for w in conversion.warnings)


def test_unsupported_component_code_does_not_leak_into_the_error():
    with pytest.raises(LangflowImportError) as caught:
        convert(load("unsupported"))
    assert "LCToolsAgentComponent" not in json.dumps(caught.value.details) + str(caught.value)


# -- slim form -------------------------------------------------------------------------------------------


async def test_slim_form_with_string_handles_converts_and_runs():
    export = load("slim")
    assert "data" not in export and all("node" in n for n in export["nodes"])
    assert "data" not in export["edges"][0] and "œ" in export["edges"][0]["sourceHandle"]
    assert "source" not in export["edges"][2]

    flow = convert(export, provider="echo")

    assert "name" not in flow
    assert [n["type"] for n in flow["nodes"]] == [
        "TextInput",
        "PromptTemplate",
        "LLM",
        "OutputParser",
        "TextOutput",
    ]
    assert ports(flow) == {
        ("TextInput-t1", "text", "parser-q0Q9L", "text"),
        ("parser-q0Q9L", "text", "LanguageModelComponent-m3", "prompt"),
        ("LanguageModelComponent-m3", "text", "JSONCleaner-j5", "text"),
        ("JSONCleaner-j5", "text", "TextOutput-o6", "text"),
    }
    assert validate(flow) == []
    outputs = await run(flow, {"input": '{"order": 42, "status": "late"}'})
    # Parser wraps the text, echo replies with it, the JSON cleaner keeps only the JSON.
    assert outputs == {"TextOutput-o6": '{"order": 42, "status": "late"}'}


def test_full_and_slim_forms_of_the_same_flow_convert_alike():
    full = load("basic_prompting")
    slim = {
        "nodes": [n["data"] for n in full["data"]["nodes"]],
        "edges": [{"data": e["data"]} for e in full["data"]["edges"]],
    }
    expected = convert(full)
    del expected["name"], expected["description"]
    assert convert(slim) == expected


def test_string_handles_alone_give_the_ports():
    export = load("basic_prompting")
    for edge in export["data"]["edges"]:
        del edge["data"]
    assert convert(export) == convert(load("basic_prompting"))


def test_parse_handle_reads_langflow_strings():
    assert parse_handle("{œfieldNameœ: œsystem_messageœ, œidœ: œLLM-1œ, œinputTypesœ: [œMessageœ]}") == {
        "fieldName": "system_message",
        "id": "LLM-1",
        "inputTypes": ["Message"],
    }
    assert parse_handle({"name": "message"}) == {"name": "message"}
    assert parse_handle("{œbrokenœ") == {}
    assert parse_handle("[1, 2]") == {}
    assert parse_handle(None) == {}


# -- prompts and parsers ---------------------------------------------------------------------------------


def _single_prompt_export(template: str, variables: dict[str, Any]) -> dict[str, Any]:
    export = load("basic_prompting")
    node = lf_node(export, "Prompt-Z1IXr")
    node["template"]["template"]["value"] = template
    for name in ("product", "question", "tone"):
        node["template"].pop(name)
    for name, value in variables.items():
        node["template"][name] = {"name": name, "type": "str", "value": value}
    return export


async def test_a_typed_variable_value_with_braces_stays_literal():
    export = _single_prompt_export("{question} -- {style}", {"question": "", "style": "use {braces} {{x}}"})
    flow = convert(export, provider="echo")
    assert node_of(flow, "Prompt-Z1IXr")["params"]["template"] == "{question} -- use {{braces}} {{{{x}}}}"
    expected = "{question} -- {style}".format(question="hi", style="use {braces} {{x}}")
    outputs = await run(flow, {"input": "hi"})
    assert outputs["ChatOutput-7q74v"].endswith(expected)
    assert expected == "hi -- use {braces} {{x}}"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Hello {user.name}", "not a plain variable name"),
        ("Hello {items[0]}", "not a plain variable name"),
        ("Hello {name!r}", "conversion or format spec"),
        ("Hello {name:>10}", "conversion or format spec"),
        ("Hello {}", "not a plain variable name"),
        ("Hello {name", "malformed template"),
        ("Hello name}", "malformed template"),
    ],
)
def test_prompt_templates_beyond_plain_variables_are_refused(template, message):
    export = _single_prompt_export(template, {})
    with pytest.raises(LangflowImportError) as caught:
        convert(export)
    (unsupported,) = caught.value.details["unsupported"]
    assert unsupported["id"] == "Prompt-Z1IXr"
    assert message in unsupported["reason"]


def _parser_export(fields: dict[str, str]) -> dict[str, Any]:
    export = load("slim")
    parser = next(n for n in export["nodes"] if n["id"] == "parser-q0Q9L")
    for name, value in fields.items():
        parser["node"]["template"][name]["value"] = value
    return export


async def test_parser_stringify_mode_passes_the_text_on():
    flow = convert(_parser_export({"mode": "Stringify"}), provider="echo")
    assert node_of(flow, "parser-q0Q9L")["params"] == {"template": "{text}"}
    outputs = await run(flow, {"input": "[1, 2]"})
    assert outputs == {"TextOutput-o6": "[1, 2]"}


async def test_parser_templates_with_fields_format_each_record():
    flow = convert(_parser_export({"format": "Name: {name}, Text: {text}"}), provider="echo")
    assert node_of(flow, "parser-q0Q9L") == {
        "id": "parser-q0Q9L",
        "type": "OutputParser",
        "params": {"mode": "format", "template": "Name: {name}, Text: {text}"},
    }
    assert validate(flow) == []
    # Run the parser alone: its input straight from the TextInput, its text straight to the output.
    kept = {"TextInput-t1", "parser-q0Q9L", "TextOutput-o6"}
    flow["nodes"] = [n for n in flow["nodes"] if n["id"] in kept]
    flow["edges"] = [e for e in flow["edges"] if e["source"] in kept and e["target"] in kept]
    flow["edges"].append({"source": "parser-q0Q9L", "source_output": "text", "target": "TextOutput-o6"})
    assert validate(flow) == []
    # A JSON table reaching the parser is formatted row by row; a missing field is left empty.
    outputs = await run(flow, {"input": '[{"name": "a", "text": "x"}, {"name": "b"}]'})
    assert outputs == {"TextOutput-o6": "Name: a, Text: x\nName: b, Text: "}
    # A plain message is the record {"text": ...}.
    assert await run(flow, {"input": "hi"}) == {"TextOutput-o6": "Name: , Text: hi"}


def test_parser_separator_is_kept_and_a_template_without_fields_is_refused():
    export = _parser_export({"format": "{title}"})
    parser = next(n for n in export["nodes"] if n["id"] == "parser-q0Q9L")
    parser["node"]["template"]["sep"] = {"name": "sep", "value": "\n---\n"}
    assert node_of(convert(export), "parser-q0Q9L")["params"]["sep"] == "\n---\n"
    with pytest.raises(LangflowImportError, match="uses no"):
        convert(_parser_export({"format": "constant"}))


# -- language model fields -------------------------------------------------------------------------------


def _model_fields(**values: Any) -> dict[str, Any]:
    export = load("basic_prompting")
    template = lf_node(export, LLM)["template"]
    for name, value in values.items():
        if value is None:
            template.pop(name, None)
        else:
            template.setdefault(name, {"name": name})["value"] = value
    return export


def test_model_picker_of_newer_langflow_gives_model_and_provider():
    export = _model_fields(model_name=None, provider=None, model=[{"name": "gpt-4.1", "provider": "OpenAI"}])
    assert node_of(convert(export), LLM)["params"]["model"] == "gpt-4.1"
    anthropic = _model_fields(
        model_name=None, provider=None, model=[{"name": "claude", "provider": "Anthropic"}]
    )
    with pytest.raises(LangflowImportError, match=LLM):
        convert(anthropic)


def test_typed_system_message_and_prompt_become_params_and_a_fixed_prompt():
    export = _model_fields(system_message="Be terse.", input_value="Say {hi}")
    export["data"]["edges"].pop(1)  # Prompt -> LLM.input_value: the typed input is used instead
    export["data"]["nodes"] = [n for n in export["data"]["nodes"] if n["id"] != "Prompt-Z1IXr"]
    export["data"]["edges"].pop(0)
    flow = convert(export)
    llm = node_of(flow, LLM)
    assert llm["params"]["system"] == "Be terse."
    helper = node_of(flow, f"{LLM}.prompt")
    assert helper == {
        "id": f"{LLM}.prompt",
        "type": "PromptTemplate",
        "params": {"template": "Say {{hi}}"},
    }
    assert (f"{LLM}.prompt", "text", LLM, "prompt") in ports(flow)


def test_out_of_range_and_unset_numbers_are_left_out():
    conversion = translate(_model_fields(temperature=7, max_tokens=0))
    params = node_of(conversion.document, LLM)["params"]
    assert "temperature" not in params and "max_tokens" not in params
    assert any("temperature 7.0 is out of range" in w for w in conversion.warnings)
    strings = node_of(convert(_model_fields(temperature="0.5", max_tokens="128")), LLM)
    assert (strings["params"]["temperature"], strings["params"]["max_tokens"]) == (0.5, 128)


def test_model_without_a_name_gets_the_default_model_with_a_warning():
    export = _model_fields(model_name="")
    conversion = translate(export)
    assert node_of(conversion.document, LLM)["params"]["model"] == DEFAULT_MODEL == "gpt-4o-mini"
    assert f"node {LLM}: no model is set (LangFlow asks when the flow is opened); using 'gpt-4o-mini'" in (
        conversion.warnings
    )
    chosen = translate(export, model="gpt-4.1")
    assert node_of(chosen.document, LLM)["params"]["model"] == "gpt-4.1"
    assert any("using 'gpt-4.1'" in w for w in chosen.warnings)
    assert node_of(convert(export, provider="echo"), LLM)["params"]["model"] == "echo-1"
    # LangFlow 1.13's empty picker: `model` [] or "", `provider` "".
    pickers: tuple[Any, ...] = ([], "")
    for picker in pickers:
        empty = translate(_model_fields(model_name=None, provider="", model=picker), model="gpt-4o")
        assert node_of(empty.document, LLM)["params"]["model"] == "gpt-4o"
        assert any(LLM in w and "'gpt-4o'" in w for w in empty.warnings)
    with pytest.raises(ValueError, match="model"):
        translate(export, model=" ")


def test_a_set_model_is_kept_and_other_providers_are_still_refused_without_a_model():
    named = translate(_model_fields(model_name="gpt-4.1"), model="gpt-4o")
    assert node_of(named.document, LLM)["params"]["model"] == "gpt-4.1"
    assert not any("no model is set" in w for w in named.warnings)
    other = _model_fields(model_name="", provider="Anthropic")
    with pytest.raises(LangflowImportError, match="Anthropic"):
        convert(other)


# -- names and malformed exports -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Basic Prompting", "basic_prompting"),
        ("Pokédex Agent", "pokedex_agent"),
        ("Document Q&A", "document_q_a"),
        ("  -- ", None),
        ("日本語", None),
    ],
)
def test_flow_names_are_derived_from_the_title(title, name):
    assert flow_name(title) == name


def test_name_option_overrides_and_is_checked():
    assert convert(load("basic_prompting"), name="support-qa")["name"] == "support-qa"
    with pytest.raises(InvalidName):
        convert(load("basic_prompting"), name="not ok")


def test_unknown_provider_option_is_refused():
    with pytest.raises(ValueError, match="provider"):
        convert(load("basic_prompting"), provider="anthropic")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"nodes": [{"id": "p", "type": "PromptTemplate", "params": {}}]}, "not a LangFlow export"),
        ({"data": {"nodes": [], "edges": []}}, "no components"),
        (
            {"data": {"nodes": [{"data": {"type": "ChatInput", "node": {}}}], "edges": []}},
            "nodes[0] has no id",
        ),
        (
            {"data": {"nodes": [{"id": "a", "data": {"type": "ChatInput"}}], "edges": {}}},
            "`edges` must be a list",
        ),
        (
            {"data": {"nodes": [{"id": "a", "data": {"type": "ChatInput"}}], "edges": [{"data": {}}]}},
            "edges[0] does not name its source and target",
        ),
    ],
)
def test_malformed_exports_are_refused_with_the_reason(doc, message):
    with pytest.raises(LangflowImportError, match=re.escape(message)):
        convert(doc)


def test_duplicate_ids_and_several_inputs():
    export = load("basic_prompting")
    extra = copy.deepcopy(export["data"]["nodes"][0])
    export["data"]["nodes"].append(extra)
    with pytest.raises(LangflowImportError, match="used more than once"):
        convert(export)
    extra["id"] = extra["data"]["id"] = "ChatInput-second"
    flow = convert(export)
    assert node_of(flow, "ChatInput-9e2tW")["params"]["name"] == "ChatInput_9e2tW"
    assert node_of(flow, "ChatInput-second")["params"]["name"] == "ChatInput_second"


def test_read_export_keeps_field_values_but_never_code():
    flow = read_export(load("embedded_code"))
    for node in flow.nodes:
        assert "code" not in node.fields
        assert CODE_MARKER not in json.dumps(node.fields)


def test_unreadable_nodes_and_edges_and_untyped_components_are_all_reported():
    export = load("basic_prompting")
    untyped = copy.deepcopy(export["data"]["nodes"][1])
    untyped["id"] = "Mystery-1"
    del untyped["data"]["type"]
    export["data"]["nodes"] += ["not a node", untyped]
    export["data"]["edges"].append(42)
    with pytest.raises(LangflowImportError) as caught:
        convert(export)
    assert caught.value.details["unsupported"] == [
        {"id": "Mystery-1", "type": "(no type)", "reason": "no flowfleet equivalent"}
    ]
    assert caught.value.details["problems"] == ["nodes[4] is not an object", "edges[3] is not an object"]


def test_an_edge_without_field_name_feeds_the_default_input():
    export = load("basic_prompting")
    edge = export["data"]["edges"][2]  # LLM -> ChatOutput
    del edge["data"]["targetHandle"]["fieldName"], edge["targetHandle"]
    flow = convert(export)
    assert {"source": LLM, "target": "ChatOutput-7q74v", "source_output": "text"} in flow["edges"]
    assert validate(flow) == []


def test_openai_model_endpoint_and_ignored_settings():
    export = load("two_edges_notes")
    template = lf_node(export, "OpenAIModel-OcXkl")["template"]
    template["openai_api_base"]["value"] = "http://127.0.0.1:8080/v1"
    template["json_mode"]["value"] = True
    template["stream"]["value"] = True
    template["model_kwargs"]["value"] = {"top_p": 0.5}
    conversion = translate(export)
    params = node_of(conversion.document, "OpenAIModel-OcXkl")["params"]
    assert params["base_url"] == "http://127.0.0.1:8080/v1"
    assert "top_p" not in json.dumps(params)
    assert [w.split(": ", 1)[1] for w in conversion.warnings] == [
        "json_mode is not supported and was ignored",
        "stream is not supported and was ignored",
        "model_kwargs are not supported and were ignored",
    ]
    template["openai_api_base"]["value"] = "file:///etc/passwd"
    conversion = translate(export)
    assert "base_url" not in node_of(conversion.document, "OpenAIModel-OcXkl")["params"]
    assert any("is not an http(s) URL" in w for w in conversion.warnings)


def test_model_given_as_plain_string_and_numbers_that_are_not_numbers():
    export = _model_fields(model_name=None, model="gpt-4o", temperature="warm", max_tokens=True)
    params = node_of(convert(export), LLM)["params"]
    assert params["model"] == "gpt-4o"
    assert "temperature" not in params and "max_tokens" not in params


def test_parser_with_unknown_mode_or_bad_template_is_unsupported():
    with pytest.raises(LangflowImportError, match="unknown parser mode 'Tabulate'"):
        convert(_parser_export({"mode": "Tabulate"}))
    with pytest.raises(LangflowImportError, match="not a plain variable name"):
        convert(_parser_export({"format": "Row: {row[0]}"}))


def test_numeric_typed_values_are_used_as_text():
    export = _single_prompt_export("{question} x{count}", {"question": "", "count": 3})
    flow = convert(export)
    assert node_of(flow, "Prompt-Z1IXr")["params"]["template"] == "{question} x3"


def test_ids_that_do_not_fit_flowfleet_are_rewritten_consistently():
    export = load("basic_prompting")
    output = export["data"]["nodes"][3]
    output["id"] = output["data"]["id"] = "-chat output/1"
    edge = export["data"]["edges"][2]
    edge["target"] = "-chat output/1"
    flow = convert(export)
    assert node_of(flow, "_-chat_output_1")["type"] == "ChatOutput"
    assert (LLM, "text", "_-chat_output_1", "message") in ports(flow)
    assert validate(flow) == []


# -- StructuredOutput and a Parser over its table ---------------------------------------------------------


def _lf(node_id: str, lf_type: str, **values: Any) -> dict[str, Any]:
    template = {k: {"name": k, "value": v} for k, v in values.items()}
    return {"id": node_id, "data": {"type": lf_type, "node": {"template": template}}}


def _lf_edge(source: str, output: str, target: str, field: str) -> dict[str, Any]:
    handles = {"sourceHandle": {"name": output}, "targetHandle": {"fieldName": field}}
    return {"source": source, "target": target, "data": handles}


OUTPUT_SCHEMA = [
    {"name": "company", "type": "str", "multiple": "False", "description": "Company name"},
    {"name": "public", "type": "bool", "multiple": False},
    {"name": "tags", "type": "str", "multiple": "True"},
    {"name": "revenue", "type": "float"},
]


def _structured_export(**fields: Any) -> dict[str, Any]:
    values = {"output_schema": OUTPUT_SCHEMA, "schema_name": "Company Profile", **fields}
    nodes = [
        _lf("ChatInput-a", "ChatInput"),
        _lf("StructuredOutput-s", "StructuredOutput", **values),
        _lf("ParserComponent-p", "ParserComponent", mode="Parser", pattern="{company}: {tags}", sep="\n"),
        _lf("ChatOutput-o", "ChatOutput"),
    ]
    edges = [
        _lf_edge("ChatInput-a", "message", "StructuredOutput-s", "input_value"),
        _lf_edge("StructuredOutput-s", "dataframe_output", "ParserComponent-p", "input_data"),
        _lf_edge("ParserComponent-p", "parsed_text", "ChatOutput-o", "input_value"),
    ]
    return {"name": "Structured", "data": {"nodes": nodes, "edges": edges}}


async def test_structured_output_table_becomes_a_json_schema_and_runs_offline():
    model = [{"name": "gpt-4o-mini", "provider": "OpenAI"}]
    conversion = translate(_structured_export(model=model, system_prompt="Extract it."))
    params = node_of(conversion.document, "StructuredOutput-s")["params"]
    assert params["model"] == "gpt-4o-mini" and params["provider"] == "openai"
    assert params["system"] == "Extract it." and params["schema_name"] == "Company_Profile"
    assert params["schema"] == {
        "type": "object",
        "properties": {
            "company": {"type": "string", "description": "Company name"},
            "public": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "revenue": {"type": "number"},
        },
        "required": ["company", "public", "tags", "revenue"],
        "additionalProperties": False,
    }
    assert any("list of objects" in w for w in conversion.warnings)
    assert validate(conversion.document) == []
    flow = convert(_structured_export(), provider="echo")
    assert validate(flow) == []
    # Offline the node answers with the schema's minimal instance, which the parser formats.
    assert await run(flow, {"input": "ACME sells anvils"}) == {"ChatOutput-o": ": []"}


def test_structured_output_without_a_schema_or_with_an_unknown_type_is_refused():
    with pytest.raises(LangflowImportError, match="output_schema is empty"):
        convert(_structured_export(output_schema=[]), provider="echo")
    with pytest.raises(LangflowImportError, match="has type 'date'"):
        convert(_structured_export(output_schema=[{"name": "d", "type": "date"}]), provider="echo")


def test_structured_output_system_prompt_fed_by_an_edge_uses_the_system_port():
    doc = _structured_export(system_prompt="typed, then replaced")
    doc["data"]["nodes"].append(_lf("Prompt-x", "Prompt Template", template="Be precise."))
    doc["data"]["edges"].append(_lf_edge("Prompt-x", "prompt", "StructuredOutput-s", "system_prompt"))
    flow = convert(doc, provider="echo")
    assert "system" not in node_of(flow, "StructuredOutput-s")["params"]
    assert {
        "source": "Prompt-x",
        "source_output": "text",
        "target": "StructuredOutput-s",
        "target_input": "system",
    } in flow["edges"]
    assert validate(flow) == []
