"""Every validation rule, each with a bad document asserting the exact JSON-pointer path and code."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cluster.errors import FlowValidationError, Problem
from cluster.flow.schemacheck import pointer
from cluster.flow.validation import Limits, check, parse_document, validate
from tests import engine_components
from tests.engine_components import edge, node

REGISTRY = engine_components.registry()


def problems(document: Any, **kwargs: Any) -> list[tuple[str, str]]:
    return [(p.path, p.code) for p in validate(document, registry=REGISTRY, **kwargs)]


def messages(document: Any) -> list[str]:
    return [str(p) for p in validate(document, registry=REGISTRY)]


CHAIN = {"nodes": [node("a"), node("b")], "edges": [edge("a", "b")]}


def test_valid_chain_has_no_problems() -> None:
    assert problems(CHAIN) == []
    check(CHAIN, registry=REGISTRY)


def test_minimal_form_from_the_issue_is_valid_with_builtin_components() -> None:
    document = {
        "nodes": [
            {"id": "prompt_1", "type": "PromptTemplate", "params": {"template": "Summarise: {input}"}},
            {"id": "llm_1", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
        ],
        "edges": [{"source": "prompt_1", "target": "llm_1"}],
    }
    assert validate(document) == []


# --- structure (JSON Schema) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ([], ""),
        ("flow", ""),
        (None, ""),
        ({}, ""),  # nodes is required
        ({"nodes": {}}, "/nodes"),
        ({"nodes": [{"id": "a"}]}, "/nodes/0"),
        ({"nodes": [{"id": "a b", "type": "Upper"}]}, "/nodes/0/id"),
        ({"nodes": [{"id": "a", "type": "Up per"}]}, "/nodes/0/type"),
        ({"nodes": [{"id": "a", "type": "Upper", "params": []}]}, "/nodes/0/params"),
        ({"nodes": [{"id": "a", "type": "Upper", "timeout_s": 0}]}, "/nodes/0/timeout_s"),
        ({"nodes": [{"id": "a", "type": "Upper", "timeout_s": True}]}, "/nodes/0/timeout_s"),
        ({"nodes": [{"id": "a", "type": "Upper", "colour": "red"}]}, "/nodes/0"),
        ({"nodes": [node("a")], "edges": [{"source": "a"}]}, "/edges/0"),
        ({"nodes": [node("a")], "edges": [{"source": "a", "target": "a", "weight": 1}]}, "/edges/0"),
        (
            {"nodes": [node("a")], "edges": [{"source": "a", "target": "a", "target_input": "1x"}]},
            "/edges/0/target_input",
        ),
        ({"nodes": [node("a")], "name": "has space"}, "/name"),
        ({"nodes": [node("a")], "description": 3}, "/description"),
        ({"nodes": [node("a")], "extra": 1}, ""),
        ({"nodes": [node("a")], "tests": [{"name": "t"}]}, "/tests/0"),
        (
            {"nodes": [node("a")], "tests": [{"name": "t", "inputs": {}, "expect": {"a": {}}}]},
            "/tests/0/expect/a",
        ),
        (
            {"nodes": [node("a")], "tests": [{"name": "t", "inputs": {}, "expect": {"a": {"like": "x"}}}]},
            "/tests/0/expect/a",
        ),
    ],
)
def test_schema_violations_are_located(document: Any, path: str) -> None:
    assert (path, "schema") in problems(document)
    assert {code for _, code in problems(document)} == {"schema"}


def test_schema_reports_every_violation_in_document_order() -> None:
    document = {"nodes": [{"id": "a"}, {"id": "b", "type": 3}, {"type": "Upper"}]}
    assert problems(document) == [("/nodes/0", "schema"), ("/nodes/1/type", "schema"), ("/nodes/2", "schema")]


def test_metadata_is_allowed_everywhere() -> None:
    document = {
        "metadata": {"editor": "x"},
        "nodes": [{**node("a"), "metadata": {"x": 1}}, node("b")],
        "edges": [{**edge("a", "b"), "metadata": {"colour": "red"}}],
    }
    assert problems(document) == []


# --- params -------------------------------------------------------------------------------------------


def test_params_are_checked_against_the_component_schema() -> None:
    document = {"nodes": [node("a", "Const"), node("b", count=3)], "edges": [edge("a", "b")]}
    assert problems(document) == [
        ("/nodes/0/params", "invalid_params"),
        ("/nodes/1/params/count", "invalid_params"),
    ]


def test_component_check_params_hook_reports_its_problems() -> None:
    assert problems({"nodes": [node("a", "Picky", word="bad")]}) == [("/nodes/0/params/word", "bad_word")]


@pytest.mark.parametrize("where", ["ports", "check", "defaults", "output", "required", "not_ports"])
def test_a_buggy_component_is_a_problem_not_a_crash(where: str) -> None:
    assert problems({"nodes": [node("a", "Broken", where=where)]}) == [("/nodes/0/params", "component_error")]


def test_a_component_with_an_invalid_params_schema_is_a_problem() -> None:
    assert problems({"nodes": [node("a", "BadSchema")]}) == [("/nodes/0/params", "component_error")]


class ExplodingRegistry:
    def get(self, type_name: str) -> None:
        raise RuntimeError("registry exploded")

    def names(self) -> list[str]:
        return []

    def suggest(self, name: str) -> None:
        return None


def test_an_unexpected_failure_is_a_problem_not_an_exception(caplog: pytest.LogCaptureFixture) -> None:
    found = validate({"nodes": [node("a")]}, registry=ExplodingRegistry())  # type: ignore[arg-type]
    assert [(p.path, p.code) for p in found] == [("", "internal_error")]
    assert "validation failed unexpectedly" in caplog.text


# --- ids, types, edges ---------------------------------------------------------------------------------


def test_duplicate_node_id() -> None:
    document = {"nodes": [node("a"), node("b"), node("a")], "edges": [edge("a", "b")]}
    assert problems(document) == [("/nodes/2/id", "duplicate_id")]
    assert messages(document) == ["/nodes/2/id: node id 'a' is already used by /nodes/0"]


def test_unknown_type_suggests_the_closest_name() -> None:
    document = {"nodes": [node("a", "Uper")]}
    assert problems(document) == [("/nodes/0/type", "unknown_type")]
    assert "did you mean 'Upper'?" in messages(document)[0]


def test_unknown_type_without_a_close_name_mentions_installation() -> None:
    (message,) = messages({"nodes": [node("a", "QuantumSolver")]})
    assert "unknown component type 'QuantumSolver'" in message and "installed" in message


def test_edges_must_name_existing_nodes() -> None:
    document = {"nodes": [node("alpha"), node("b")], "edges": [edge("alpah", "b"), edge("alpha", "zzz")]}
    assert problems(document) == [("/edges/0/source", "unknown_node"), ("/edges/1/target", "unknown_node")]
    assert "did you mean 'alpha'?" in messages(document)[0]


def test_edges_must_name_existing_ports() -> None:
    document = {
        "nodes": [node("a"), node("b")],
        "edges": [edge("a", "b", source_output="txt", target_input="texts")],
    }
    assert problems(document) == [
        ("/edges/0/source_output", "unknown_port"),
        ("/edges/0/target_input", "unknown_port"),
    ]
    assert messages(document)[1] == "/edges/0/target_input: node 'b' has no input 'texts' (inputs are: text)"


def test_edge_without_target_input_needs_a_default_input() -> None:
    document = {"nodes": [node("a"), node("j", "Join")], "edges": [edge("a", "j")]}
    assert problems(document) == [("/edges/0", "no_default_input")]


def test_duplicate_edge() -> None:
    document = {"nodes": [node("a"), node("b")], "edges": [edge("a", "b"), edge("a", "b", "text", "text")]}
    assert problems(document) == [("/edges/1", "duplicate_edge")]


def test_cycle_is_reported_with_its_node_ids_in_order() -> None:
    document = {
        "nodes": [node("in"), node("a"), node("b"), node("c"), node("out", "Out")],
        "edges": [edge("in", "a"), edge("c", "a"), edge("a", "b"), edge("b", "c"), edge("c", "out")],
    }
    assert problems(document) == [("/edges/2", "cycle")]
    assert messages(document) == ["/edges/2: cycle: a -> b -> c -> a"]


def test_self_loop_is_a_cycle() -> None:
    document = {"nodes": [node("a"), node("b")], "edges": [edge("a", "a"), edge("a", "b")]}
    assert problems(document) == [("/edges/0", "cycle")]
    assert messages(document) == ["/edges/0: cycle: a -> a"]


def test_every_cycle_is_reported() -> None:
    document = {
        "nodes": [node("a"), node("b"), node("c"), node("d"), node("e", "Join")],
        "edges": [
            edge("a", "b"),
            edge("b", "a"),
            edge("c", "d"),
            edge("d", "c"),
            edge("a", "e", None, "a"),
            edge("c", "e", None, "b"),
        ],
    }
    assert problems(document) == [("/edges/0", "cycle"), ("/edges/2", "cycle")]


# --- outputs and reachability -------------------------------------------------------------------------


def test_empty_flow() -> None:
    assert problems({"nodes": []}) == [("/nodes", "no_nodes")]


def test_a_flow_where_every_node_feeds_another_has_no_output() -> None:
    document = {"nodes": [node("a"), node("b")], "edges": [edge("a", "b"), edge("b", "a")]}
    assert problems(document) == [("/edges/0", "cycle"), ("/nodes", "no_outputs")]


def test_node_that_cannot_contribute_to_an_output() -> None:
    document = {
        "nodes": [node("a"), node("out", "Out"), node("stray"), node("stray2")],
        "edges": [edge("a", "out"), edge("stray", "stray2")],
    }
    assert problems(document) == [("/nodes/2", "dead_node"), ("/nodes/3", "dead_node")]


def test_without_output_nodes_every_sink_is_an_output() -> None:
    document = {"nodes": [node("a"), node("b"), node("c")], "edges": [edge("a", "b")]}
    assert problems(document) == []


def test_output_names_must_be_unique() -> None:
    document = {
        "nodes": [node("a"), node("o1", "Out", name="answer"), node("o2", "Out", name="answer")],
        "edges": [edge("a", "o1"), edge("a", "o2")],
    }
    assert problems(document) == [("/nodes/2/params/name", "duplicate_output")]


def test_output_name_defaults_to_node_id_and_may_clash_with_a_name() -> None:
    document = {
        "nodes": [node("a"), node("o1", "Out", name="o2"), node("o2", "Out")],
        "edges": [edge("a", "o1"), edge("a", "o2")],
    }
    assert problems(document) == [("/nodes/2/id", "duplicate_output")]


def test_output_node_without_incoming_edge() -> None:
    document = {"nodes": [node("a"), node("o", "Out"), node("lonely", "Out")], "edges": [edge("a", "o")]}
    assert problems(document) == [("/nodes/2", "unconnected_output")]


def test_unfed_required_inputs_become_run_inputs() -> None:
    # a.text, j.b are fed by nothing: they are read from the run's inputs, which is not a problem.
    document = {"nodes": [node("a"), node("j", "Join")], "edges": [edge("a", "j", None, "a")]}
    assert problems(document) == []


# --- examples (tests) ---------------------------------------------------------------------------------


def test_examples_are_checked() -> None:
    document = {
        "nodes": [node("a"), node("o", "Out", name="answer")],
        "edges": [edge("a", "o")],
        "tests": [
            {
                "name": "one",
                "inputs": {"text": "x"},
                "expect": {"answer": {"contains": "X"}, "a": {"present": True}},
            },
            {
                "name": "one",
                "inputs": {},
                "expect": {"answr": {"contains": "X"}, "answer": {"matches": "(("}},
            },
        ],
    }
    assert problems(document) == [
        ("/tests/1/name", "duplicate_test"),
        ("/tests/1/inputs", "missing_input"),
        ("/tests/1/expect/answr", "unknown_expect_target"),
        ("/tests/1/expect/answer/matches", "invalid_regex"),
    ]


# --- several problems at once ---------------------------------------------------------------------------


def test_every_problem_is_collected_not_only_the_first() -> None:
    document = {
        "nodes": [node("a"), node("a"), node("b", "Uper"), node("c", "Picky", word="bad")],
        "edges": [edge("a", "nowhere"), edge("a", "c", "nope")],
    }
    assert problems(document) == [
        ("/nodes/1/id", "duplicate_id"),
        ("/nodes/2/type", "unknown_type"),
        ("/nodes/3/params/word", "bad_word"),
        ("/edges/0/target", "unknown_node"),
    ]


def test_check_raises_with_every_problem() -> None:
    document = {"nodes": [node("a", "X1"), node("b", "X2")]}
    with pytest.raises(FlowValidationError) as info:
        check(document, registry=REGISTRY)
    assert [p.code for p in info.value.problems] == ["unknown_type", "unknown_type"]
    assert "(and 1 more)" in str(info.value)


# --- limits ---------------------------------------------------------------------------------------------


def test_document_size_limit() -> None:
    document = {"nodes": [node("a")], "description": "x" * 300}
    assert problems(document, limits=Limits(max_document_bytes=200)) == [("", "too_large")]


def test_node_count_limit() -> None:
    document = {"nodes": [node(f"n{i}") for i in range(4)]}
    assert problems(document, limits=Limits(max_nodes=3)) == [("/nodes", "too_many_nodes")]


def test_edge_count_limit() -> None:
    document = {"nodes": [node("a"), node("b")], "edges": [edge("a", "b")] * 3}
    assert problems(document, limits=Limits(max_edges=2)) == [("/edges", "too_many_edges")]


def test_test_count_limit() -> None:
    document = {"nodes": [node("a")], "tests": [{"name": f"t{i}", "inputs": {"text": ""}} for i in range(3)]}
    assert problems(document, limits=Limits(max_tests=2)) == [("/tests", "too_many_tests")]


def test_template_length_limit_applies_to_every_params_string() -> None:
    document = {"nodes": [node("a", "Const", value={"docs": ["short", "y" * 101]})]}
    assert problems(document, limits=Limits(max_template_chars=100)) == [
        ("/nodes/0/params/value/docs/1", "too_long")
    ]


def test_template_length_limit_counts_characters_not_json_bytes() -> None:
    # Escapes and multi-byte characters make the JSON longer than the limit; only the strings count.
    document = {
        "nodes": [
            node("a", "Const", value='"\\' * 50),
            node("b", "Const", value="é" * 100),
            node("c", "Const", value=["y" * 100]),
            node("d", "Const", value={"k": "z" * 101}),
        ]
    }
    assert problems(document, limits=Limits(max_template_chars=100)) == [
        ("/nodes/3/params/value/k", "too_long")
    ]


def test_default_template_limit_with_a_builtin_prompt() -> None:
    document = {
        "nodes": [{"id": "p", "type": "PromptTemplate", "params": {"template": "{x}" + "a" * 100_000}}]
    }
    assert [(p.path, p.code) for p in validate(document)] == [("/nodes/0/params/template", "too_long")]


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_depth_limit() -> None:
    # The document is depth 1, nodes 2, the node 3, params 4; 29 more lists make 33 > 32.
    document = {"nodes": [node("a", "Const", value=nested(29))]}
    assert problems(document) == [("", "too_deep")]
    document = {"nodes": [node("a", "Const", value=nested(28))]}
    assert problems(document) == []


def test_very_deep_in_memory_value_does_not_recurse() -> None:
    assert problems({"nodes": nested(200_000)}) == [("", "too_deep")]


def test_self_containing_value_is_refused_not_looped_over() -> None:
    loop: list[Any] = []
    loop.append(loop)
    loop.append(loop)
    assert problems({"nodes": loop}) in ([("", "too_deep")], [("", "too_large")])


@pytest.mark.parametrize("value", [{1, 2}, 2**70, b"bytes", {1: "int key"}])
def test_values_that_are_not_json(value: Any) -> None:
    assert problems({"nodes": [node("a", "Const", value=value)]}) == [("", "not_json")]


# --- templates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "code"),
    [
        ("{x.__class__}", "unsafe_template"),
        ("{x.__init__.__globals__}", "unsafe_template"),
        ("{x[0]}", "unsafe_template"),
        ("{x!r}", "unsafe_template"),
        ("{x:>10}", "unsafe_template"),
        ("{x:>{y}}", "unsafe_template"),
        ("{}", "template_syntax"),
        ("{0}", "template_syntax"),
        ("{ x }", "template_syntax"),
        ("{x", "template_syntax"),
        ("x}", "template_syntax"),
    ],
)
def test_template_injection_attempts_are_validation_errors(template: str, code: str) -> None:
    document = {"nodes": [{"id": "p", "type": "PromptTemplate", "params": {"template": "Say " + template}}]}
    found = [(p.path, p.code) for p in validate(document)]
    assert found and set(found) == {("/nodes/0/params/template", code)}


def test_escaped_braces_are_literal() -> None:
    document = {
        "nodes": [{"id": "p", "type": "PromptTemplate", "params": {"template": "{{x.__class__}} {q}"}}]
    }
    assert validate(document) == []


# --- parse_document --------------------------------------------------------------------------------------


def parse_problem(raw: bytes | str, limits: Limits | None = None) -> tuple[str, str]:
    with pytest.raises(FlowValidationError) as info:
        parse_document(raw, limits)
    (problem,) = info.value.problems
    return problem.path, problem.code


def test_parse_document_returns_the_value() -> None:
    assert parse_document(b'{"nodes": []}') == {"nodes": []}
    assert parse_document('{"nodes": []}') == {"nodes": []}
    assert parse_document(b'\xef\xbb\xbf{"nodes": []}') == {"nodes": []}


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"{'a': 1}", b"[1,]", b"\xff\xfe", b'{"a": NaN}', '{"a": "\ud800"}']
)
def test_parse_document_invalid_json(raw: bytes | str) -> None:
    assert parse_problem(raw) == ("", "invalid_json")


def test_parse_document_size_limit_bytes_and_text() -> None:
    limits = Limits(max_document_bytes=10)
    assert parse_problem(b'{"nodes": [1]}', limits) == ("", "too_large")
    assert parse_problem('{"nodes": [1]}', limits) == ("", "too_large")
    # Ten characters but more than ten bytes once encoded.
    assert parse_problem('"ééééééé"', limits) == ("", "too_large")


def test_parse_document_depth_limit() -> None:
    assert parse_problem(orjson.dumps(nested(40))) == ("", "too_deep")
    assert parse_problem(b"[" * 100_000 + b"]" * 100_000) == ("", "too_deep")


def test_default_limits_accept_a_full_size_flow() -> None:
    document = {
        "nodes": [node(f"n{i}") for i in range(5000)],
        "edges": [edge(f"n{i}", f"n{i + 1}") for i in range(4999)],
    }
    assert problems(document) == []


def test_pointer_escapes_per_rfc_6901() -> None:
    assert pointer("tests", 0, "expect", "a/b~c") == "/tests/0/expect/a~1b~0c"
    assert str(Problem("", "x", "m")) == "/: m"
