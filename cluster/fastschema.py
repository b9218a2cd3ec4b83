"""A fast yes/no check for the subset of JSON Schema that flowfleet's schemas use.

`jsonschema` re-interprets the schema for every value, which costs ~100 µs per flow node; validating a
1,000-node flow must take milliseconds. `compile_schema` turns a schema into nested closures once. They
answer only "valid or not": when the answer is "not", the caller asks `jsonschema` for the messages, so
errors read the same either way. A schema using any keyword outside the subset compiles to None, and the
caller uses `jsonschema` alone. Semantics follow Draft 2020-12 as `jsonschema` implements it (a bool is
not a number, 1.0 is an integer, `pattern` is a search, `enum` tells True from 1); the property tests
compare both on generated values.

>>> check = compile_schema({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}})
>>> check({"a": 1}), check({"a": True}), check({})
(True, False, False)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any

Check = Callable[[Any], bool]

# Keywords that never affect validity (format is an annotation unless a format checker is enabled).
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated", "readOnly",
     "writeOnly", "format"}
)  # fmt: skip


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not implement."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def json_equal(one: Any, two: Any) -> bool:
    """Equality as JSON Schema's `enum` and `const` see it: True is not 1, [1] equals [1.0]."""
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, list | tuple) and isinstance(two, list | tuple):
        return len(one) == len(two) and all(json_equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return one.keys() == two.keys() and all(json_equal(one[k], two[k]) for k in one)
    if isinstance(one, bool) or isinstance(two, bool):
        return one is two
    return bool(one == two)


def _type_check(spec: Any) -> Check:
    names = [spec] if isinstance(spec, str) else spec
    if not isinstance(names, list) or not all(isinstance(n, str) and n in _TYPES for n in names):
        raise Unsupported(f"type {spec!r}")
    checks = [_TYPES[n] for n in names]
    return checks[0] if len(checks) == 1 else lambda v: any(c(v) for c in checks)


def _object_checks(schema: Mapping[str, Any]) -> list[Check]:
    checks: list[Check] = []
    properties = {name: _compile(sub) for name, sub in schema.get("properties", {}).items()}
    additional = schema.get("additionalProperties", True)
    extra = None if additional is True else _compile(additional)
    if properties or extra is not None:

        def check_properties(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for key, value in v.items():
                check = properties.get(key, extra)
                if check is not None and not check(value):
                    return False
            return True

        checks.append(check_properties)
    if "required" in schema:
        required = frozenset(schema["required"])
        checks.append(lambda v: not isinstance(v, dict) or v.keys() >= required)
    if "propertyNames" in schema:
        names = _compile(schema["propertyNames"])
        checks.append(lambda v: not isinstance(v, dict) or all(map(names, v)))
    checks += _length_checks(schema, "minProperties", "maxProperties", dict)
    return checks


def _array_checks(schema: Mapping[str, Any]) -> list[Check]:
    checks: list[Check] = []
    if "items" in schema:
        item = _compile(schema["items"])
        checks.append(lambda v: not isinstance(v, list) or all(map(item, v)))
    checks += _length_checks(schema, "minItems", "maxItems", list)
    return checks


def _scalar_checks(schema: Mapping[str, Any]) -> list[Check]:
    checks = _length_checks(schema, "minLength", "maxLength", str)
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        checks.append(lambda v: not isinstance(v, str) or search(v) is not None)
    for keyword, compare in _NUMBER_BOUNDS.items():
        if keyword in schema:
            checks.append(_number_check(compare, schema[keyword]))
    return checks


_NUMBER_BOUNDS: dict[str, Callable[[Any, Any], bool]] = {
    "minimum": lambda v, b: v >= b,
    "maximum": lambda v, b: v <= b,
    "exclusiveMinimum": lambda v, b: v > b,
    "exclusiveMaximum": lambda v, b: v < b,
}


def _number_check(compare: Callable[[Any, Any], bool], bound: Any) -> Check:
    if not _is_number(bound):
        raise Unsupported(f"bound {bound!r}")
    return lambda v: not _is_number(v) or compare(v, bound)


def _length_checks(schema: Mapping[str, Any], low: str, high: str, kind: type[Sized]) -> list[Check]:
    checks: list[Check] = []
    least, most = schema.get(low, 0), schema.get(high)
    if not isinstance(least, int) or not (most is None or isinstance(most, int)):
        raise Unsupported(f"{low}/{high} that are not integers")
    if least > 0:
        checks.append(lambda v: not isinstance(v, kind) or len(v) >= least)
    if most is not None:
        checks.append(lambda v: not isinstance(v, kind) or len(v) <= most)
    return checks


def _combinator_checks(schema: Mapping[str, Any]) -> list[Check]:
    checks: list[Check] = []
    if "enum" in schema:
        options = list(schema["enum"])
        if all(isinstance(o, str) for o in options):
            names = frozenset(options)
            checks.append(lambda v: isinstance(v, str) and v in names)
        else:
            checks.append(lambda v: any(json_equal(v, o) for o in options))
    if "const" in schema:
        constant = schema["const"]
        checks.append(lambda v: json_equal(v, constant))
    if "allOf" in schema:
        every = [_compile(s) for s in schema["allOf"]]
        checks.append(lambda v: all(c(v) for c in every))
    if "anyOf" in schema:
        some = [_compile(s) for s in schema["anyOf"]]
        checks.append(lambda v: any(c(v) for c in some))
    if "oneOf" in schema:
        exactly = [_compile(s) for s in schema["oneOf"]]
        checks.append(lambda v: sum(1 for c in exactly if c(v)) == 1)
    if "not" in schema:
        negated = _compile(schema["not"])
        checks.append(lambda v: not negated(v))
    return checks


_SUPPORTED = _ANNOTATIONS | {
    "type", "properties", "additionalProperties", "required", "propertyNames", "minProperties",
    "maxProperties", "items", "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "const", "allOf", "anyOf", "oneOf", "not",
}  # fmt: skip


def _compile(schema: Any) -> Check:
    if schema is True:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, Mapping):
        raise Unsupported(f"schema {schema!r}")
    unknown = set(schema) - _SUPPORTED
    if unknown:
        raise Unsupported(", ".join(sorted(unknown)))
    checks: list[Check] = []
    if "type" in schema:
        checks.append(_type_check(schema["type"]))
    checks += (
        _object_checks(schema) + _array_checks(schema) + _scalar_checks(schema) + _combinator_checks(schema)
    )
    if not checks:
        return lambda v: True
    return functools.reduce(_both, checks)


def _both(first: Check, second: Check) -> Check:
    # Chained closures: cheaper per call than all() over a generator.
    return lambda v: first(v) and second(v)


def compile_schema(schema: Any) -> Check | None:
    """A predicate equivalent to validating against `schema`, or None if the schema is outside the
    subset (or malformed: `jsonschema` then reports it)."""
    try:
        return _compile(schema)
    except (Unsupported, re.error, TypeError, AttributeError):
        return None


def all_valid(check: Check | None, values: Sequence[Any]) -> bool:
    return check is not None and all(check(v) for v in values)
