"""Property tests: no value, however odd, makes validation raise anything but FlowValidationError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.engine import compile_flow
from cluster.errors import FlowValidationError
from cluster.flow.validation import check, parse_document, validate

FLOWS = [
    orjson.loads(p.read_bytes())
    for p in sorted(Path(__file__).parent.parent.joinpath("flows").glob("*.json"))
]

NAMES = st.sampled_from(
    [
        "nodes",
        "edges",
        "tests",
        "id",
        "type",
        "params",
        "source",
        "target",
        "source_output",
        "target_input",
        "template",
        "name",
        "expect",
        "inputs",
        "timeout_s",
        "question",
        "text",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS | NAMES,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(NAMES | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)
# Strings that stress templates, ids and ports.
TRICKY = st.sampled_from(
    [
        "{x.__class__}",
        "{x[0]}",
        "{x!r}",
        "{x:>{y}}",
        "{",
        "}",
        "{}",
        "",
        "a/b~c",
        "🙂",
        "\x00",
        "question",
        "llm",
        "answer",
        "Router",
        "LLM",
        "PromptTemplate",
        "ChatOutput",
        "x" * 200,
    ]
)


def never_raises_other_errors(document: Any) -> None:
    problems = validate(document)
    try:
        check(document)
    except FlowValidationError as e:
        assert list(e.problems) == problems
    else:
        assert problems == []
    try:
        compile_flow(document)
    except FlowValidationError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_arbitrary_json_values(document: Any) -> None:
    never_raises_other_errors(document)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(NAMES, JSON, max_size=4))
def test_arbitrary_objects_with_flow_like_keys(document: Any) -> None:
    never_raises_other_errors(document)


def _containers(value: Any, out: list[Any]) -> list[Any]:
    if isinstance(value, dict):
        out.append(value)
        for child in value.values():
            _containers(child, out)
    elif isinstance(value, list):
        out.append(value)
        for child in value:
            _containers(child, out)
    return out


@st.composite
def mutated_flows(draw: st.DrawFn) -> Any:
    document = copy.deepcopy(draw(st.sampled_from(FLOWS)))
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(_containers(document, [])))
        replacement = draw(JSON | TRICKY)
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)))
            action = draw(st.sampled_from(["delete", "replace", "add"]))
            if action == "delete":
                del target[key]
            elif action == "replace":
                target[key] = replacement
            else:
                target[draw(NAMES | TRICKY)] = replacement
        elif isinstance(target, list) and target:
            index = draw(st.integers(0, len(target) - 1))
            action = draw(st.sampled_from(["delete", "replace", "duplicate"]))
            if action == "delete":
                del target[index]
            elif action == "replace":
                target[index] = replacement
            else:
                target.append(copy.deepcopy(target[index]))
    return document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_flows())
def test_mutated_valid_flows(document: Any) -> None:
    never_raises_other_errors(document)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_parse_document_of_arbitrary_input(raw: bytes | str) -> None:
    try:
        document = parse_document(raw)
    except FlowValidationError:
        return
    never_raises_other_errors(document)


def test_example_flows_are_valid() -> None:
    assert FLOWS
    for document in FLOWS:
        assert validate(document) == []
