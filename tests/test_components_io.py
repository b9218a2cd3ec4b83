"""ChatInput / TextInput / ChatOutput / TextOutput."""

from __future__ import annotations

import pytest

from cluster.components.io import ChatInput, ChatOutput, TextInput, TextOutput
from cluster.engine import compile_flow
from cluster.errors import RunInputError
from tests.component_helpers import build, problems_of, run


@pytest.mark.parametrize(("cls", "port"), [(ChatInput, "message"), (TextInput, "text")])
async def test_input_reads_named_run_input(cls: type[ChatInput], port: str) -> None:
    component = build(cls, {"name": "question"})
    ports = cls.ports({"name": "question"})
    assert ports.inputs == ("question",) and ports.required == {"question"} and ports.default_input is None
    assert ports.outputs == (port,) and ports.default_output == port
    assert await run(component, {"question": "hi"}) == {port: "hi"}


async def test_input_name_defaults_to_input() -> None:
    assert ChatInput.ports({}).inputs == ("input",)
    assert await run(build(ChatInput, {}), {"input": 5}) == {"message": 5}


async def test_default_makes_input_optional() -> None:
    params = {"name": "lang", "default": "en"}
    assert TextInput.ports(params).required == frozenset()
    component = build(TextInput, params)
    assert await run(component, {}) == {"text": "en"}
    assert await run(component, {"lang": "fr"}) == {"text": "fr"}


async def test_missing_input_without_default_is_an_input_error() -> None:
    with pytest.raises(RunInputError, match="'question'"):
        await run(build(ChatInput, {"name": "question"}), {})


@pytest.mark.parametrize(("cls", "port"), [(ChatOutput, "message"), (TextOutput, "text")])
async def test_output_passes_value_on(cls: type[ChatOutput], port: str) -> None:
    assert cls.is_output
    ports = cls.ports({})
    assert ports.inputs == (port,) and ports.default_input == port and ports.required == {port}
    component = build(cls, {"name": "answer"})
    assert component.output_name() == "answer"
    assert await run(component, {port: {"a": 1}}) == {port: {"a": 1}}


def test_output_name_defaults_to_node_id() -> None:
    assert build(TextOutput, {}).output_name() == "node"


@pytest.mark.parametrize(
    ("cls", "params", "path"),
    [
        (ChatInput, {"name": "not a name"}, "/nodes/0/params/name"),
        (ChatInput, {"nme": "x"}, "/nodes/0/params"),
        (TextOutput, {"name": 3}, "/nodes/0/params/name"),
    ],
)
def test_bad_params(cls: type[ChatInput], params: dict[str, object], path: str) -> None:
    problems = problems_of(cls, params)
    assert [(p.path, p.code) for p in problems] == [(path, "invalid_params")]


async def test_in_a_flow_the_input_is_a_required_run_input() -> None:
    flow = compile_flow(
        {
            "nodes": [
                {"id": "q", "type": "ChatInput", "params": {"name": "question"}},
                {"id": "lang", "type": "TextInput", "params": {"name": "lang", "default": "en"}},
                {"id": "out", "type": "ChatOutput", "params": {"name": "answer"}},
                {"id": "out2", "type": "TextOutput", "params": {"name": "language"}},
            ],
            "edges": [{"source": "q", "target": "out"}, {"source": "lang", "target": "out2"}],
        }
    )
    assert flow.input_names == {"question", "lang"}
    assert flow.required_inputs == {"question"}
    assert (await flow.run({"question": "hi"})).outputs == {"answer": "hi", "language": "en"}
    with pytest.raises(RunInputError, match="question"):
        await flow.run({})
