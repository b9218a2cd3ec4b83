"""PromptTemplate: variables become ports, unsafe templates are problems, rendering is literal."""

from __future__ import annotations

import pytest

from cluster.components.prompt import MAX_TEMPLATE_CHARS, PromptTemplate
from cluster.engine import compile_flow
from cluster.errors import ComponentError
from cluster.flow.validation import validate
from tests.component_helpers import build, problems_of, run


def test_variables_are_required_inputs_in_order() -> None:
    ports = PromptTemplate.ports({"template": "{context} then {question} and {context}"})
    assert ports.inputs == ("context", "question")
    assert ports.required == {"context", "question"}
    assert ports.default_input is None
    assert ports.outputs == ("text",) and ports.default_output == "text"


def test_single_variable_is_the_default_input() -> None:
    assert PromptTemplate.ports({"template": "Summarise: {input}"}).default_input == "input"


def test_no_variables_no_inputs() -> None:
    ports = PromptTemplate.ports({"template": "constant"})
    assert ports.inputs == () and ports.default_input is None


async def test_renders_values_literally() -> None:
    component = build(PromptTemplate, {"template": "Q: {q} / {{q}}"})
    assert await run(component, {"q": "{__import__}"}) == {"text": "Q: {__import__} / {q}"}


async def test_non_string_values_render_as_json() -> None:
    component = build(PromptTemplate, {"template": "docs={docs}"})
    assert await run(component, {"docs": [{"id": "1"}]}) == {"text": 'docs=[{"id":"1"}]'}


async def test_missing_value_is_a_component_error() -> None:
    with pytest.raises(ComponentError, match="'b'"):
        await run(build(PromptTemplate, {"template": "{a} {b}"}), {"a": "x"})


@pytest.mark.parametrize(
    ("template", "code"),
    [
        ("{x.__class__}", "unsafe_template"),
        ("{x[0]}", "unsafe_template"),
        ("{x!r}", "unsafe_template"),
        ("{x:>9}", "unsafe_template"),
        ("{}", "template_syntax"),
        ("{0}", "template_syntax"),
        ("oops {", "template_syntax"),
        ("oops }", "template_syntax"),
    ],
)
def test_unsafe_templates_are_validation_problems(template: str, code: str) -> None:
    problems = problems_of(PromptTemplate, {"template": template})
    assert [(p.path, p.code) for p in problems] == [("/nodes/0/params/template", code)]


def test_template_length_is_bounded() -> None:
    problems = problems_of(PromptTemplate, {"template": "x" * (MAX_TEMPLATE_CHARS + 1)})
    assert problems and problems[0].path == "/nodes/0/params/template"


def test_template_is_required() -> None:
    assert [p.code for p in problems_of(PromptTemplate, {})] == ["invalid_params"]


def test_unknown_variable_on_an_edge_names_the_known_ones() -> None:
    document = {
        "nodes": [
            {"id": "q", "type": "ChatInput", "params": {"name": "question"}},
            {"id": "p", "type": "PromptTemplate", "params": {"template": "{question} {context}"}},
        ],
        "edges": [{"source": "q", "target": "p", "target_input": "qustion"}],
    }
    (problem,) = [p for p in validate(document) if p.code == "unknown_port"]
    assert problem.path == "/edges/0/target_input"
    assert "question" in problem.message and "context" in problem.message


async def test_minimal_flow_reads_the_variable_from_run_inputs() -> None:
    flow = compile_flow(
        {
            "nodes": [
                {"id": "prompt_1", "type": "PromptTemplate", "params": {"template": "Summarise: {input}"}},
                {"id": "llm_1", "type": "LLM", "params": {}},
            ],
            "edges": [{"source": "prompt_1", "target": "llm_1"}],
        }
    )
    assert flow.required_inputs == {"input"}
    assert (await flow.run({"input": "hi"})).outputs == {"llm_1": "[echo-1] Summarise: hi"}
