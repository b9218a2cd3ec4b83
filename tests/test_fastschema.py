"""The fast schema predicate agrees with jsonschema on every value, for every schema flowfleet uses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator

from cluster.components.registry import default_registry
from cluster.flow.fastschema import compile_schema, json_equal
from cluster.flow.schema import DOCUMENT_SCHEMA, EDGE_SCHEMA, NODE_SCHEMA, TEST_SCHEMA
from tests.test_validation_properties import JSON, mutated_flows

KEYWORD_CASES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "integer"}, [1, 1.0, 1.5, True, "1", None, -(2**70)]),
    ({"type": "number"}, [1, 1.5, True, "1"]),
    ({"type": ["string", "null"]}, ["a", None, 0]),
    (
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        [[], ["a"], ["a", 1], ["a", "b", "c"], {}],
    ),
    (
        {
            "type": "object",
            "required": ["a"],
            "additionalProperties": False,
            "properties": {"a": {"const": 1}},
        },
        [{"a": 1}, {"a": 1.0}, {"a": True}, {"a": 1, "b": 2}, {}, []],
    ),
    (
        {"additionalProperties": {"type": "string"}, "properties": {"n": {"type": "integer"}}},
        [{"n": 1, "x": "y"}, {"x": 1}, 3],
    ),
    (
        {"propertyNames": {"pattern": "^[a-z]+$"}, "minProperties": 1, "maxProperties": 2},
        [{"ab": 1}, {"Ab": 1}, {}, {"a": 1, "b": 2, "c": 3}],
    ),
    ({"minLength": 2, "maxLength": 3, "pattern": "b"}, ["ab", "a", "abcd", "xy", 5, "ab\U0001f642"]),
    ({"minimum": 0, "exclusiveMaximum": 10}, [0, -1, 9.99, 10, True, "5"]),
    ({"exclusiveMinimum": 0, "maximum": 1}, [0, 0.5, 1, 1.01]),
    ({"enum": ["a", "b"]}, ["a", "c", 1]),
    ({"enum": [1, False, [1], {"k": None}]}, [1, 1.0, True, 0, False, [1.0], [True], {"k": None}, {"k": 0}]),
    ({"oneOf": [{"type": "string"}, {"maxLength": 1}]}, ["ab", "a", 3]),
    ({"anyOf": [{"type": "string"}, {"type": "null"}]}, ["x", None, 0]),
    ({"allOf": [{"minimum": 1}, {"maximum": 2}]}, [0, 1, 3]),
    ({"not": {"type": "string"}}, ["x", 1]),
    (True, [1, None]),
    (False, [1, None]),
    ({"description": "annotations only", "default": 3}, [1, "x"]),
    # One declared type folds the type check into that type's own keywords.
    ({"type": "string"}, ["", 1, None]),
    ({"type": "string", "pattern": "^a"}, ["a", "ba", 1, None]),
    ({"type": "string", "minLength": 1, "maxLength": 2, "pattern": "a"}, ["a", "", "aaa", "b", 1]),
    ({"type": "object"}, [{}, [], "x"]),
    (
        {"type": "object", "minProperties": 1, "propertyNames": {"maxLength": 1}},
        [{}, {"a": 1}, {"ab": 1}, []],
    ),
    ({"type": "object", "properties": {"a": True}, "additionalProperties": False}, [{"a": 1}, {"b": 1}, {}]),
    ({"type": "array"}, [[], {}, "x"]),
    ({"type": "array", "minItems": 1}, [[], [1], {}]),
    ({"type": "array", "items": {"type": "integer"}}, [[1], [1.5], [True], {}]),
    ({"items": {"type": "integer"}, "maxItems": 1}, [[1], [1, 2], "not a list"]),
    ({"type": ["string", "array"], "minLength": 2, "minItems": 1}, ["ab", "a", [], [1], 3]),
    ({"type": "integer", "minimum": 1, "maximum": 3, "not": {"const": 2}}, [1, 2, 3, 4, 1.0, True]),
]


@pytest.mark.parametrize(("schema", "values"), KEYWORD_CASES)
def test_each_keyword_matches_jsonschema(schema: dict[str, Any], values: list[Any]) -> None:
    check = compile_schema(schema)
    assert check is not None
    validator = Draft202012Validator(schema)
    for value in values:
        assert check(value) == validator.is_valid(value), value


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/x"},
        {"patternProperties": {}},
        {"type": "decimal"},
        {"minLength": "3"},
        {"pattern": "("},
        [],
        {"if": {}},
    ],
)
def test_schemas_outside_the_subset_compile_to_none(schema: Any) -> None:
    assert compile_schema(schema) is None


def test_json_equal_tells_booleans_from_numbers() -> None:
    assert json_equal(1, 1.0) and json_equal([1, {"a": 2}], [1.0, {"a": 2.0}])
    assert not json_equal(True, 1) and not json_equal([0], [False]) and not json_equal({"a": 1}, {"b": 1})


SCHEMAS = [DOCUMENT_SCHEMA, NODE_SCHEMA, EDGE_SCHEMA, TEST_SCHEMA] + [
    default_registry().get(name).params_schema
    for name in default_registry().names()  # type: ignore[union-attr]
]


def test_every_builtin_schema_is_inside_the_subset() -> None:
    assert all(compile_schema(schema) is not None for schema in SCHEMAS)


PAIRS = [(compile_schema(schema), Draft202012Validator(schema)) for schema in SCHEMAS]


def agree(value: Any) -> None:
    for check, validator in PAIRS:
        assert check is not None
        assert check(value) == validator.is_valid(value), (validator.schema, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_agrees_with_jsonschema_on_arbitrary_values(value: Any) -> None:
    agree(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_flows())
def test_agrees_with_jsonschema_on_mutated_flows_and_their_parts(document: Any) -> None:
    agree(document)
    nodes = document.get("nodes") if isinstance(document, dict) else None
    for item in nodes if isinstance(nodes, list) else []:
        agree(item)
        if isinstance(item, dict):
            agree(item.get("params"))
