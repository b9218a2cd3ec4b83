"""OutputParser: JSON from fences or raw text, regex captures, strip, and every failure path."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.components.parser import OutputParser, extract_json
from cluster.errors import ComponentError
from tests.component_helpers import build, problems_of, run


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ("Here:\n```JSON\n[1, 2]\n```\nbye", [1, 2]),
        ('```\n{"plain": true}\n```', {"plain": True}),
        ('```python\n{"skip": 1}\n```\n```json\n{"take": 2}\n```', {"take": 2}),
        ('```json\nnot json\n```\n```json\n{"second": 1}\n```', {"second": 1}),
        ('Sure! {"answer": "yes", "n": [1]} Anything else?', {"answer": "yes", "n": [1]}),
        ('[echo-1] the model says {"x": "}{"}', {"x": "}{"}),
        ("[echo-1] numbers [1, 2, 3] then {}", [1, 2, 3]),
    ],
)
async def test_json_mode(text: str, value: object) -> None:
    out = await run(build(OutputParser, {}), {"text": text})
    assert out["parsed"] == value


async def test_json_text_output_is_the_source_fragment() -> None:
    out = await run(build(OutputParser, {"mode": "json"}), {"text": 'x {"a":  1} y'})
    assert out == {"parsed": {"a": 1}, "text": '{"a":  1}'}


@pytest.mark.parametrize("text", ["no json here", "{broken", "```json\n{nope}\n```", ""])
async def test_json_mode_without_json_fails_clearly(text: str) -> None:
    with pytest.raises(ComponentError, match="no JSON object or array found"):
        await run(build(OutputParser, {}), {"text": text})


def test_json_scan_is_bounded_on_hostile_text() -> None:
    with pytest.raises(ComponentError):
        extract_json('{"a' * 200_000)
    with pytest.raises(ComponentError):
        extract_json("[" * 100_000)


async def test_regex_single_group() -> None:
    component = build(OutputParser, {"mode": "regex", "pattern": r"Answer:\s*(\w+)"})
    assert await run(component, {"text": "x Answer: yes."}) == {"parsed": "yes", "text": "Answer: yes"}


async def test_regex_named_groups_give_a_dict() -> None:
    component = build(OutputParser, {"mode": "regex", "pattern": r"(?P<k>\w+)=(?P<v>\d+)"})
    assert (await run(component, {"text": "a=1"}))["parsed"] == {"k": "a", "v": "1"}


async def test_regex_explicit_group_and_flags() -> None:
    component = build(
        OutputParser,
        {
            "mode": "regex",
            "pattern": r"^score: (?P<n>\d+)$",
            "group": "n",
            "ignore_case": True,
            "multiline": True,
        },
    )
    assert (await run(component, {"text": "intro\nSCORE: 7\n"}))["parsed"] == "7"
    zero = build(OutputParser, {"mode": "regex", "pattern": r"(\d+)-(\d+)", "group": 0})
    assert (await run(zero, {"text": "1-2"}))["parsed"] == "1-2"


async def test_regex_without_groups_gives_the_match() -> None:
    component = build(OutputParser, {"mode": "regex", "pattern": r"\d+"})
    assert (await run(component, {"text": "abc 123"}))["parsed"] == "123"


async def test_regex_no_match_fails_clearly() -> None:
    with pytest.raises(ComponentError, match="does not match"):
        await run(build(OutputParser, {"mode": "regex", "pattern": "x(y)"}), {"text": "abc"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("  hello \n", "hello"),
        ("```text\nhello\n```", "hello"),
        ("```\n a \n```", "a"),
        ("a ``` b", "a ``` b"),
    ],
)
async def test_strip_mode(text: str, value: str) -> None:
    assert await run(build(OutputParser, {"mode": "strip"}), {"text": text}) == {
        "parsed": value,
        "text": value,
    }


async def test_max_chars_bounds_what_is_examined() -> None:
    component = build(OutputParser, {"max_chars": 10})
    with pytest.raises(ComponentError):
        await run(component, {"text": "x" * 20 + '{"a": 1}'})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([{"name": "a", "n": 1}, {"name": "b", "n": [1, 2]}], "a=1|b=[1,2]"),
        ({"name": "solo", "n": None}, "solo="),
        ('[{"name": "from json"}]', "from json="),
        ("just text", "="),
        ([{"n": 3}, "loose"], "=3|="),
        ([], ""),
    ],
)
async def test_format_mode_fills_the_template_per_record(value: object, expected: str) -> None:
    parser = build(OutputParser, {"mode": "format", "template": "{name}={n}", "sep": "|"})
    assert await run(parser, {"text": value}) == {"parsed": expected, "text": expected}


async def test_format_mode_text_records_and_default_separator() -> None:
    parser = build(OutputParser, {"mode": "format", "template": "- {text} {{kept}}"})
    out = await run(parser, {"text": ["one", {"text": "two"}]})
    assert out["text"] == "- one {kept}\n- two {kept}"
    # Braces inside a value stay literal: nothing is formatted twice.
    assert (await run(parser, {"text": "x {y}"}))["text"] == "- x {y} {kept}"


def test_ports() -> None:
    ports = OutputParser.ports({})
    assert ports.inputs == ("text",) and ports.default_input == "text"
    assert ports.outputs == ("parsed", "text") and ports.default_output == "parsed"


@pytest.mark.parametrize(
    ("params", "path", "code"),
    [
        ({"mode": "regex"}, "/nodes/0/params/pattern", "missing_param"),
        ({"mode": "regex", "pattern": "("}, "/nodes/0/params/pattern", "invalid_regex"),
        ({"mode": "regex", "pattern": "(a*)*"}, "/nodes/0/params/pattern", "unsafe_regex"),
        ({"mode": "regex", "pattern": "(a)", "group": 2}, "/nodes/0/params/group", "unknown_group"),
        ({"mode": "regex", "pattern": "(?P<x>a)", "group": "y"}, "/nodes/0/params/group", "unknown_group"),
        ({"pattern": "a"}, "/nodes/0/params/pattern", "unused_param"),
        ({"mode": "strip", "group": 1}, "/nodes/0/params/group", "unused_param"),
        ({"mode": "yaml"}, "/nodes/0/params/mode", "invalid_params"),
        ({"mode": "format"}, "/nodes/0/params/template", "missing_param"),
        ({"mode": "format", "template": "{a.b}"}, "/nodes/0/params/template", "unsafe_template"),
        ({"mode": "format", "template": "{a}", "pattern": "x"}, "/nodes/0/params/pattern", "unused_param"),
        ({"template": "{a}"}, "/nodes/0/params/template", "unused_param"),
        ({"mode": "strip", "sep": ","}, "/nodes/0/params/sep", "unused_param"),
    ],
)
def test_bad_params(params: dict[str, object], path: str, code: str) -> None:
    problems = problems_of(OutputParser, params)
    assert [(p.path, p.code) for p in problems] == [(path, code)]


@given(st.text(alphabet='{}[]"`json:,0123456789 \nabc\\', max_size=120))
@settings(max_examples=300, deadline=None)
def test_extract_json_only_ever_raises_component_error(text: str) -> None:
    try:
        value, fragment = extract_json(text)
    except ComponentError:
        return
    assert fragment in text
    assert json.loads(fragment) == value


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
def test_json_survives_surrounding_prose(value: object) -> None:
    if not isinstance(value, dict | list):
        value = {"v": value}
    text = "Sure, here it is: " + json.dumps(value) + " Hope this helps."
    assert extract_json(text)[0] == value
