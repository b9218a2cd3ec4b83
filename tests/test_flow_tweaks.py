"""The flow document's `api` block: schema, model, allow-list validation, and checking and applying tweaks."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from cluster.components.base import Component, Ports
from cluster.components.registry import Registry, builtin_components
from cluster.egress.policy import Outbound
from cluster.errors import InvalidTweaks, TweakNotAllowed
from cluster.flow.hashing import content_address
from cluster.flow.model import FlowApi, parse_flow
from cluster.flow.tweaks import apply_tweaks, check_tweaks, source_document
from cluster.flow.validation import validate


class Reach(Component):
    """Params whose names say nothing: `outbound` alone declares what they are."""

    type_name = "Reach"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "vault_slot": {"type": "string"},
            "target": {"type": "string"},
            "engine": {"type": "string"},
            "callback": {"type": "string", "format": "uri"},
            "feed": {"type": "string", "pattern": "^https?://"},
            "mirror_host": {"type": "string"},
            "auth_token": {"type": "string"},
            "apiKey": {"type": "string"},
            "level": {"type": "integer"},
        },
    }

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(inputs=("text",), default_input="text", outputs=("text",), default_output="text")

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        uses = []
        if "vault_slot" in params:
            uses.append(Outbound("secret", "vault_slot", params["vault_slot"]))
        if "target" in params:
            uses.append(Outbound("url", "target", params["target"]))
        if "engine" in params:
            uses.append(Outbound("service", "engine", "web_search"))
        return tuple(uses)

    async def run(self, inputs: Mapping[str, Any], ctx: Any) -> Mapping[str, Any]:
        return {"text": inputs.get("text")}


REGISTRY = Registry([*builtin_components(), Reach])


def flow(api: Any, *extra: dict[str, Any], **reach_params: Any) -> dict[str, Any]:
    """prompt -> llm -> answer, plus `extra` nodes and a Reach node when given params; with `api`."""
    nodes: list[dict[str, Any]] = [
        {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Q: {question}"}},
        {"id": "llm", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
        {"id": "answer", "type": "ChatOutput", "params": {"name": "answer"}},
        *extra,
    ]
    edges = [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}]
    if reach_params:
        nodes.append({"id": "reach", "type": "Reach", "params": reach_params})
        edges.append({"source": "prompt", "target": "reach"})
        nodes.append({"id": "reached", "type": "ChatOutput", "params": {"name": "reached"}})
        edges.append({"source": "reach", "target": "reached"})
    document: dict[str, Any] = {"name": "qa", "nodes": nodes, "edges": edges}
    if api is not None:
        document["api"] = api
    return document


def problems(document: Any) -> list[tuple[str, str]]:
    return [(p.path, p.code) for p in validate(document, registry=REGISTRY)]


# --- schema and model ------------------------------------------------------------------------------------


def test_an_allow_list_of_real_params_is_valid_and_parsed() -> None:
    document = flow({"tweaks": {"prompt": ["template"], "llm": ["temperature", "system"]}})
    assert problems(document) == []
    api = parse_flow(document).api
    assert dict(api.tweaks) == {"prompt": {"template"}, "llm": {"temperature", "system"}}
    assert api.tweaks_on and api.version_selection is False


def test_no_api_means_tweaks_off_and_no_version_selection() -> None:
    api = parse_flow(flow(None)).api
    assert api == FlowApi() and not api.tweaks_on and dict(api.tweaks) == {}
    assert parse_flow(flow({"version_selection": True})).api.version_selection is True
    assert problems(flow({"version_selection": True})) == []


def test_a_node_listing_no_params_takes_no_tweaks() -> None:
    document = flow({"tweaks": {"llm": []}})
    assert problems(document) == []
    assert not parse_flow(document).api.tweaks_on


@pytest.mark.parametrize(
    ("api", "path"),
    [
        ([], "/api"),
        ({"tweak": {}}, "/api"),  # a misspelt field is refused, as everywhere in the document
        ({"version_selection": "yes"}, "/api/version_selection"),
        ({"tweaks": []}, "/api/tweaks"),
        ({"tweaks": {"llm": "temperature"}}, "/api/tweaks/llm"),
        ({"tweaks": {"llm": ["temperature", "temperature"]}}, "/api/tweaks/llm"),
        ({"tweaks": {"llm": [""]}}, "/api/tweaks/llm/0"),
        ({"tweaks": {"llm": [3]}}, "/api/tweaks/llm/0"),
        ({"tweaks": {"bad id": ["x"]}}, "/api/tweaks"),
    ],
)
def test_schema_refuses_malformed_api(api: Any, path: str) -> None:
    assert problems(flow(api)) == [(path, "schema")]


def test_the_hash_covers_api() -> None:
    plain = content_address(flow(None))[1]
    tweakable = content_address(flow({"tweaks": {"llm": ["temperature"]}}))[1]
    selectable = content_address(flow({"version_selection": True}))[1]
    assert len({plain, tweakable, selectable}) == 3


# --- allow-list validation --------------------------------------------------------------------------------


def test_unknown_node_and_unknown_param() -> None:
    document = flow({"tweaks": {"lm": ["temperature"], "llm": ["temprature", "temperature"]}})
    found = validate(document, registry=REGISTRY)
    assert [(p.path, p.code) for p in found] == [
        ("/api/tweaks/lm", "unknown_node"),
        ("/api/tweaks/llm/0", "unknown_param"),
    ]
    assert "did you mean 'llm'?" in found[0].message
    assert "no param 'temprature'" in found[1].message and "temperature" in found[1].message


def test_a_node_of_unknown_type_reports_only_its_type() -> None:
    document = flow({"tweaks": {"x": ["anything"]}}, {"id": "x", "type": "Nope"})
    assert ("/api/tweaks/x/0", "unknown_param") not in problems(document)
    assert ("/nodes/3/type", "unknown_type") in problems(document)


@pytest.mark.parametrize("param", ["provider", "base_url", "api_key_env"])
def test_llm_provider_address_and_secret_are_never_tweakable(param: str) -> None:
    found = validate(flow({"tweaks": {"llm": ["temperature", param]}}), registry=REGISTRY)
    assert [(p.path, p.code) for p in found] == [("/api/tweaks/llm/1", "tweak_not_allowed")]
    assert "never tweakable" in found[0].message


def test_huggingface_secret_and_url_fetch_domains_are_never_tweakable() -> None:
    hf = {"id": "hf", "type": "HuggingFaceLLM", "params": {"model_name": "m"}}
    fetch = {"id": "fetch", "type": "URLFetch", "params": {"allowed_domains": ["*"]}}
    extra = [hf, fetch, {"id": "agent", "type": "Agent", "params": {"provider": "echo"}}]
    document = flow({"tweaks": {"hf": ["api_key_env", "base_url"], "fetch": ["allowed_domains"]}}, *extra)
    document["edges"] += [
        {"source": "prompt", "target": "hf"},
        {"source": "hf", "target": "agent", "target_input": "input"},
        {"source": "fetch", "target": "agent", "target_input": "tools"},
        {"source": "agent", "target": "answer2"},
    ]
    document["nodes"].append({"id": "answer2", "type": "ChatOutput", "params": {"name": "answer2"}})
    assert problems(document) == [
        ("/api/tweaks/hf/0", "tweak_not_allowed"),
        ("/api/tweaks/hf/1", "tweak_not_allowed"),
        ("/api/tweaks/fetch/0", "tweak_not_allowed"),
    ]


@pytest.mark.parametrize(
    ("param", "reason"),
    [
        ("vault_slot", "names a secret"),  # declared a secret by outbound()
        ("target", "address"),  # declared a URL by outbound()
        ("engine", "service"),  # declared an operator service by outbound()
        ("callback", "address"),  # schema format: uri
        ("feed", "address"),  # schema pattern ^https?://
        ("mirror_host", "address"),  # by name
        ("auth_token", "names a secret"),  # by name
        ("apiKey", "names a secret"),  # by name, camelCase
    ],
)
def test_secret_address_and_service_params_of_any_component_are_never_tweakable(
    param: str, reason: str
) -> None:
    document = flow(
        {"tweaks": {"reach": ["level", param]}},
        vault_slot="OPENAI_API_KEY",
        target="https://x.example/",
        engine="e",
    )
    found = validate(document, registry=REGISTRY)
    assert [(p.path, p.code) for p in found] == [("/api/tweaks/reach/1", "tweak_not_allowed")]
    assert reason in found[0].message and repr(param) in found[0].message


def test_pointers_escape_node_ids() -> None:
    found = problems(flow({"tweaks": {"a:b.c-d": ["x"]}}))
    assert found == [("/api/tweaks/a:b.c-d", "unknown_node")]


# --- check_tweaks -----------------------------------------------------------------------------------------

API = parse_flow(flow({"tweaks": {"prompt": ["template"], "llm": ["temperature", "system"]}})).api
OFF = parse_flow(flow(None)).api


def test_no_tweaks_pass_anywhere() -> None:
    for api in (API, OFF):
        assert check_tweaks(api, None) == {}
        assert check_tweaks(api, {}) == {}
        assert check_tweaks(api, {"llm": {}}) == {}


def test_allowed_tweaks_come_back_as_plain_dicts() -> None:
    tweaks = {"llm": {"temperature": 0.3}, "prompt": {"template": "T {question}"}, "other": {}}
    assert check_tweaks(API, tweaks) == {"llm": {"temperature": 0.3}, "prompt": {"template": "T {question}"}}


def test_tweaks_are_off_without_an_allow_list() -> None:
    with pytest.raises(TweakNotAllowed) as info:
        check_tweaks(OFF, {"llm": {"temperature": 0.3}})
    error = info.value
    assert (error.code, error.http_status) == ("tweak_not_allowed", 422)
    assert "tweaks are off for this flow" in error.message
    assert error.details == {"node": "llm", "param": "temperature", "tweakable": {}}


@pytest.mark.parametrize(
    ("tweaks", "node", "param", "words"),
    [
        ({"llm": {"model": "gpt-5"}}, "llm", "model", "not allowed;"),
        ({"llm": {"base_url": "http://10.0.0.1"}}, "llm", "base_url", "not allowed;"),
        ({"answer": {"name": "x"}}, "answer", "name", "the node takes no tweaks"),
    ],
)
def test_a_param_outside_the_allow_list_is_refused(tweaks: Any, node: str, param: str, words: str) -> None:
    with pytest.raises(TweakNotAllowed) as info:
        check_tweaks(API, tweaks)
    error = info.value
    assert error.http_status == 422 and words in error.message
    assert "llm.system, llm.temperature, prompt.template" in error.message
    assert error.details == {
        "node": node,
        "param": param,
        "tweakable": {"llm": ["system", "temperature"], "prompt": ["template"]},
    }


@pytest.mark.parametrize(
    "tweaks",
    [
        [],
        "llm.temperature=1",
        {"llm": 0.5},
        {"llm": ["temperature"]},
        {"llm": None},
        {1: {"temperature": 1}},
        {"llm": {1: 2}},
        {"llm": {"temperature": {1, 2}}},
        {"llm": {"temperature": 2**70}},
    ],
)
def test_malformed_tweaks_are_a_422(tweaks: Any) -> None:
    with pytest.raises(InvalidTweaks) as info:
        check_tweaks(API, tweaks)
    assert type(info.value) is InvalidTweaks
    assert (info.value.code, info.value.http_status) == ("invalid_tweaks", 422)


# --- apply_tweaks -----------------------------------------------------------------------------------------


def test_apply_replaces_and_adds_params_in_a_copy() -> None:
    document = flow(None)
    before = copy.deepcopy(document)
    tweaks = {"llm": {"model": "echo-2", "system": "S"}, "prompt": {"template": "T {q}"}}
    tweaked = apply_tweaks(document, tweaks)
    assert document == before
    assert tweaked["nodes"][0]["params"] == {"template": "T {q}"}
    assert tweaked["nodes"][1]["params"] == {"provider": "echo", "model": "echo-2", "system": "S"}
    assert tweaked["nodes"][2] == document["nodes"][2] and tweaked["edges"] == document["edges"]
    tweaks["llm"]["system"] = "changed"
    assert tweaked["nodes"][1]["params"]["system"] == "S"  # shares nothing with the tweaks either


def test_apply_to_a_node_without_params() -> None:
    document = {"nodes": [{"id": "a", "type": "ChatOutput"}]}
    assert apply_tweaks(document, {"a": {"name": "x"}}) == {
        "nodes": [{"id": "a", "type": "ChatOutput", "params": {"name": "x"}}]
    }


def test_apply_refuses_an_unknown_node() -> None:
    with pytest.raises(InvalidTweaks):
        apply_tweaks(flow(None), {"nope": {"x": 1}})


def test_source_document_rebuilds_a_valid_runnable_document() -> None:
    document = flow({"tweaks": {"llm": ["temperature"]}, "version_selection": True})
    document["nodes"][1]["timeout_s"] = 5
    document["edges"][0] |= {"source_output": "text", "target_input": "prompt"}
    document["tests"] = [{"name": "t", "inputs": {"question": "q"}}]
    document["metadata"] = {"x": 1}
    rebuilt = source_document(parse_flow(document))
    assert problems(rebuilt) == []
    assert "tests" not in rebuilt and "metadata" not in rebuilt
    assert parse_flow(rebuilt) == parse_flow(
        {k: v for k, v in document.items() if k not in ("tests", "metadata")}
    )
