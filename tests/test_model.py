"""Parsing a schema-valid document into the frozen model, and binding edge ports."""

from __future__ import annotations

import dataclasses

import pytest

from cluster.components.base import Ports
from cluster.flow.model import Edge, UnboundPort, bind_ports, parse_flow

FULL = {
    "name": "support_qa",
    "description": "answers questions",
    "nodes": [
        {"id": "p", "type": "PromptTemplate", "params": {"template": "Q: {question}"}, "timeout_s": 2},
        {"id": "l", "type": "LLM"},
    ],
    "edges": [{"source": "p", "target": "l", "source_output": "text", "target_input": "prompt"}],
    "tests": [{"name": "smoke", "inputs": {"question": "hi"}, "expect": {"l": {"contains": "hi"}}}],
}


def test_parse_full_document() -> None:
    flow = parse_flow(FULL)
    assert flow.name == "support_qa"
    assert flow.description == "answers questions"
    assert [(n.index, n.id, n.type) for n in flow.nodes] == [(0, "p", "PromptTemplate"), (1, "l", "LLM")]
    assert flow.nodes[0].params == {"template": "Q: {question}"}
    assert flow.nodes[0].timeout_s == 2.0
    assert flow.nodes[1].params == {} and flow.nodes[1].timeout_s is None
    assert flow.edges == (Edge(0, "p", "l", "text", "prompt"),)
    (test,) = flow.tests
    assert (test.index, test.name, dict(test.inputs)) == (0, "smoke", {"question": "hi"})
    assert [(e.key, dict(e.checks)) for e in test.expect] == [("l", {"contains": "hi"})]


def test_minimal_document_defaults() -> None:
    flow = parse_flow({"nodes": [{"id": "a", "type": "T"}]})
    assert flow.name is None and flow.description == "" and flow.edges == () and flow.tests == ()


def test_model_is_frozen_and_independent_of_the_document() -> None:
    document = {"nodes": [{"id": "a", "type": "T", "params": {"deep": {"list": [1]}}}]}
    flow = parse_flow(document)
    document["nodes"][0]["params"]["deep"]["list"].append(2)
    assert flow.nodes[0].params == {"deep": {"list": [1]}}
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow.nodes[0].id = "b"  # type: ignore[misc]


PROMPT = Ports(
    inputs=("question",),
    required=frozenset({"question"}),
    default_input="question",
    outputs=("text",),
    default_output="text",
)
JOIN = Ports(inputs=("a", "b"), outputs=("text",), default_output="text")


def test_bind_ports_uses_defaults_for_missing_ports() -> None:
    assert bind_ports(Edge(0, "x", "y"), PROMPT, PROMPT) == ("text", "question")


def test_bind_ports_keeps_explicit_ports() -> None:
    assert bind_ports(Edge(0, "x", "y", "other", "b"), PROMPT, JOIN) == ("other", "b")


def test_bind_ports_without_default_input_raises() -> None:
    with pytest.raises(UnboundPort, match="node 'y' has no default input"):
        bind_ports(Edge(0, "x", "y"), PROMPT, JOIN)
