"""StructuredOutput: request shapes against a fake OpenAI server, validation of the model's JSON, the
schema bounds at their pointers, and the offline answers (minimal instance, recorded reply)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from cluster.components.base import BuildContext, RunContext
from cluster.components.jsonschemas import MAX_SCHEMA_BYTES, BoundedSchema, minimal_instance
from cluster.components.meter import NoMeter
from cluster.components.structured import DEFAULT_SYSTEM, StructuredOutput
from cluster.engine import compile_flow, run_examples
from cluster.errors import ComponentError
from tests.component_helpers import build, problems_of, run
from tests.egress_support import loopback_runtime
from tests.openai_server import FakeOpenAI, Reply, completion, run_fake_openai, tool_call_completion

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
RUNTIME = loopback_runtime({"OPENAI_API_KEY": "sk-structured-1"})


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


def online(fake: FakeOpenAI, **params: Any) -> Any:
    base = {"provider": "openai", "model": "gpt-x", "base_url": fake.url, "schema": PERSON, "retries": 0}
    return build(StructuredOutput, {**base, **params}, RUNTIME)


async def test_response_format_request_and_validated_object(fake: FakeOpenAI) -> None:
    fake.script = [Reply(body=completion('{"name": "Ada", "age": 36}'))]
    node = online(fake, temperature=0)
    result = await run(node, {"input": "Ada is 36."})
    assert result == {"data": {"name": "Ada", "age": 36}, "text": '{"name":"Ada","age":36}'}
    (request,) = fake.requests
    assert request.headers["authorization"] == "Bearer sk-structured-1"
    assert request.body["model"] == "gpt-x" and request.body["temperature"] == 0
    assert request.body["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM},
        {"role": "user", "content": "Ada is 36."},
    ]
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": PERSON, "strict": True},
    }
    assert "tools" not in request.body
    # A model that wraps its JSON in a Markdown fence is understood too.
    fake.script = [Reply(body=completion('```json\n{"name": "Ada", "age": 36}\n```'))]
    assert (await run(node, {"input": "Ada is 36."}))["data"] == {"name": "Ada", "age": 36}
    await node.aclose()


class Tokens(NoMeter):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, int]] = []

    def tokens(self, flow: str, model: str, kind: str, count: int) -> None:
        self.seen.append((flow, model, kind, count))


async def test_tokens_the_provider_used_are_reported(fake: FakeOpenAI) -> None:
    fake.script = [Reply(body={**completion('{"name": "A", "age": 1}'), "usage": {"prompt_tokens": 9}})]
    meter = Tokens()
    params = {"provider": "openai", "model": "gpt-x", "base_url": fake.url, "schema": PERSON}
    node = StructuredOutput("n", params, BuildContext(flow_name="f", runtime=replace(RUNTIME, meter=meter)))
    await run(node, {"input": "x"})
    assert meter.seen == [("f", "gpt-x", "prompt", 9)]
    await node.aclose()


async def test_tool_mode_forces_one_tool_and_reads_its_arguments(fake: FakeOpenAI) -> None:
    fake.script = [Reply(body=tool_call_completion("person", '{"name": "Bo", "age": 4, "tags": ["x"]}'))]
    node = online(fake, mode="tool", schema_name="person", system="Extract the person.")
    result = await run(node, {"input": "Bo, four"})
    assert result["data"] == {"name": "Bo", "age": 4, "tags": ["x"]}
    body = fake.requests[0].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "person",
                "description": "Record the extracted object.",
                "parameters": PERSON,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "person"}}
    assert "response_format" not in body
    assert body["messages"][0] == {"role": "system", "content": "Extract the person."}
    # A server that sends the arguments as an object works too.
    fake.script = [Reply(body=tool_call_completion("person", {"name": "Cy", "age": 1}))]
    assert (await run(node, {"input": "Cy"}))["data"] == {"name": "Cy", "age": 1}
    await node.aclose()


async def test_system_input_replaces_the_default_instructions(fake: FakeOpenAI) -> None:
    fake.script = [Reply(body=completion('{"name": "A", "age": 1}'))]
    node = online(fake)
    await run(node, {"input": "x", "system": "Only names."})
    assert fake.requests[0].body["messages"][0] == {"role": "system", "content": "Only names."}
    assert StructuredOutput.ports({"schema": PERSON}).inputs == ("input", "system")
    assert StructuredOutput.ports({"schema": PERSON, "system": "s"}).inputs == ("input",)
    await node.aclose()


BAD_OUTPUTS = [
    (completion("Sure! Here it is: {"), "the model's output is not JSON (at line 1, column 1)"),
    (completion('{"name": "A"}'), "does not fit the schema: /: 'age' is a required property"),
    (completion('{"name": "A", "age": "secret-ish-value"}'), 'schema: /age fails type "integer"'),
    (completion('{"name": "A", "age": -1}'), "schema: /age fails minimum 0"),
    (completion('{"name": "A", "age": 1, "x": 2}'), "/ has a property the schema does not allow"),
    (completion('{"name": "A", "age": 1, "tags": [1]}'), 'schema: /tags/0 fails type "string"'),
    (tool_call_completion("output", "{}"), "answered with tool calls, not JSON text"),
]


async def test_bad_output_is_a_short_clear_error(fake: FakeOpenAI) -> None:
    node = online(fake)
    for reply, message in BAD_OUTPUTS:
        fake.script = [Reply(body=reply)]
        with pytest.raises(ComponentError) as info:
            await run(node, {"input": "x"})
        assert message in str(info.value)
        assert "secret-ish-value" not in str(info.value)  # the model's reply is never repeated
    await node.aclose()


async def test_tool_mode_without_the_tool_call_fails(fake: FakeOpenAI) -> None:
    fake.script = [Reply(body=completion('{"name": "A", "age": 1}'))]
    node = online(fake, mode="tool")
    with pytest.raises(ComponentError, match="the model did not call the tool 'output'"):
        await run(node, {"input": "x"})
    await node.aclose()


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


LONG = "a" * 201


@pytest.mark.parametrize(
    ("schema", "path", "code"),
    [
        (
            {"type": "object", "description": "x" * MAX_SCHEMA_BYTES},
            "/nodes/0/params/schema",
            "schema_too_large",
        ),
        (
            nested(6),
            "/nodes/0/params/schema/properties/a/properties/a/properties/a/properties/a/properties/a/properties/a",
            "schema_too_deep",
        ),
        (
            {"type": "object", "properties": {"s": {"type": "string", "pattern": LONG}}},
            "/nodes/0/params/schema/properties/s/pattern",
            "pattern_too_long",
        ),
        (
            {"type": "object", "properties": {"s": {"propertyNames": {"pattern": LONG}}}},
            "/nodes/0/params/schema/properties/s/propertyNames/pattern",
            "pattern_too_long",
        ),
        (
            {"type": "object", "patternProperties": {LONG: {}}},
            f"/nodes/0/params/schema/patternProperties/{LONG}",
            "pattern_too_long",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}},
            "/nodes/0/params/schema/properties/a/$ref",
            "invalid_schema",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}},
            "/nodes/0/params/schema/properties/a/$ref",
            "invalid_schema",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
            "/nodes/0/params/schema/properties/a/$ref",
            "invalid_schema",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "strin"}}},
            "/nodes/0/params/schema/properties/a/type",
            "invalid_schema",
        ),
        (
            {"type": "object", "properties": {"a": {"pattern": "("}}},
            "/nodes/0/params/schema/properties/a/pattern",
            "invalid_schema",
        ),
        ({"type": "object", "minProperties": -1}, "/nodes/0/params/schema/minProperties", "invalid_schema"),
        ({"type": "array"}, "/nodes/0/params/schema/type", "invalid_params"),
        ({"properties": {}}, "/nodes/0/params/schema", "invalid_params"),
    ],
)
def test_schema_bounds_are_refused_at_their_pointer(schema: dict[str, Any], path: str, code: str) -> None:
    problems = problems_of(StructuredOutput, {"schema": schema})
    assert [(p.path, p.code) for p in problems] == [(path, code)], problems


def test_schemas_within_the_bounds_are_accepted() -> None:
    recursive = {
        "type": "object",
        "$defs": {"node": {"type": "object", "properties": {"kids": {"items": {"$ref": "#/$defs/node"}}}}},
        "properties": {"root": {"$ref": "#/$defs/node"}, "self": {"$ref": "#"}},
        "patternProperties": {"^x-": {"type": "string", "pattern": "^[a-z]{1,200}$"}},
    }
    assert problems_of(StructuredOutput, {"schema": recursive}) == []
    assert problems_of(StructuredOutput, {"schema": nested(5)}) == []  # 11 levels of JSON
    assert problems_of(StructuredOutput, {"schema": PERSON, "mode": "sideways"})[0].code == "invalid_params"
    assert problems_of(StructuredOutput, {"schema": PERSON, "provider": "openai"})[0].code == "missing_param"


def test_a_schema_that_loops_or_explodes_stops_within_budget() -> None:
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)}
    exploding = {
        "type": "object",
        "$defs": {**defs, "d30": {"type": "string"}},
        "properties": {"a": {"$ref": "#/$defs/d0"}},
    }
    looping = {"type": "object", "allOf": [{"$ref": "#"}]}
    for schema in (exploding, looping):
        assert problems_of(StructuredOutput, {"schema": schema}) == []
        with pytest.raises(ComponentError, match="took too many steps"):
            BoundedSchema(schema).first_error({"a": 1})


async def test_offline_answers_with_the_minimal_instance() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "mood": {"enum": ["calm", "angry"]},
            "kind": {"const": "person"},
            "n": {"type": ["null", "number"]},
            "lang": {"type": "string", "default": "en"},
            "ok": {"type": "boolean"},
            "items": {"type": "array"},
            "address": {"$ref": "#/$defs/address"},
            "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "optional": {"type": "string"},
        },
        "required": ["name", "mood", "kind", "n", "lang", "ok", "items", "address", "either"],
        "$defs": {
            "address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
    }
    expected = {
        "name": "",
        "mood": "calm",
        "kind": "person",
        "n": 0,
        "lang": "en",
        "ok": False,
        "items": [],
        "address": {"city": ""},
        "either": 0,
    }
    # No runtime (dry runs), or provider echo: nothing is called.
    for params in ({"provider": "openai", "model": "gpt-x"}, {}):
        node = build(StructuredOutput, {**params, "schema": schema})
        result = await run(node, {"input": "anything"})
        assert result == {"data": expected, "text": orjson.dumps(expected).decode()}
    assert minimal_instance({"type": "object"}) == {}
    # Two required references to itself would double at every level: the instance stays bounded.
    pair = {"type": "object", "properties": {"a": {"$ref": "#"}, "b": {"$ref": "#"}}, "required": ["a", "b"]}
    assert len(orjson.dumps(minimal_instance(pair))) < 200_000


async def test_an_examples_recorded_reply_is_parsed_and_checked() -> None:
    flow = {
        "nodes": [
            {
                "id": "extract",
                "type": "StructuredOutput",
                "params": {"provider": "openai", "model": "m", "schema": PERSON},
            }
        ],
        "tests": [
            {
                "name": "recorded",
                "inputs": {"input": "Ada is 36"},
                "replies": {"extract": '{"name": "Ada", "age": 36}'},
                "expect": {"extract": {"equals": {"name": "Ada", "age": 36}}},
            },
            {"name": "bad", "inputs": {"input": "x"}, "replies": {"extract": '{"name": "Ada"}'}},
        ],
    }
    compiled = compile_flow(flow)
    problems = await run_examples(compiled)
    assert [(p.path, p.code) for p in problems] == [("/tests/1", "example_failed")]
    assert "'age' is a required property" in problems[0].message
    node = compiled.steps[0].component
    ctx = RunContext(inputs={}, replies={"extract": '{"name": "B", "age": 2}'})
    assert (await node.run({"input": "x"}, ctx))["data"] == {"name": "B", "age": 2}
