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
from collections.abc import Callable, Mapping, Sequence
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


def _always(value: Any) -> bool:
    return True


def _object_check(schema: Mapping[str, Any], typed: bool) -> Check | None:
    """One check for every object keyword; `typed` (the schema's type is exactly "object") makes it
    refuse non-objects, so no separate type check is needed. None when nothing would be checked."""
    properties = {name: _compile(sub) for name, sub in schema.get("properties", {}).items()}
    # None: the property is always valid.
    table = {name: None if check is _always else check for name, check in properties.items()}
    additional = schema.get("additionalProperties", True)
    extra = None if additional is True else _compile(additional)
    extra = None if extra is _always else extra
    scan = extra is not None or any(c is not None for c in table.values())
    required = frozenset(schema.get("required", ()))
    names = _compile(schema["propertyNames"]) if "propertyNames" in schema else None
    least, most = _bounds(schema, "minProperties", "maxProperties")
    if not (scan or required or names is not None or least or most is not None):
        return None  # at most the type check, which the caller keeps
    get = table.get

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return not typed
        if required and not v.keys() >= required:
            return False
        if (least and len(v) < least) or (most is not None and len(v) > most):
            return False
        if scan:
            for key, value in v.items():
                sub = get(key, extra)
                if sub is not None and not sub(value):
                    return False
        return names is None or all(map(names, v))

    return check


def _array_check(schema: Mapping[str, Any], typed: bool) -> Check | None:
    item = _compile(schema["items"]) if "items" in schema else _always
    least, most = _bounds(schema, "minItems", "maxItems")
    if item is _always and not least and most is None:
        return None  # at most the type check, which the caller keeps

    def check(v: Any) -> bool:
        if not isinstance(v, list):
            return not typed
        if (least and len(v) < least) or (most is not None and len(v) > most):
            return False
        return item is _always or all(map(item, v))

    return check


def _string_check(schema: Mapping[str, Any], typed: bool) -> Check | None:
    least, most = _bounds(schema, "minLength", "maxLength")
    search = re.compile(schema["pattern"]).search if "pattern" in schema else None
    if not least and most is None:
        if search is None:
            return None  # at most the type check, which the caller keeps
        if typed:  # the most common string schema: a typed identifier
            return lambda v: isinstance(v, str) and search(v) is not None
        return lambda v: not isinstance(v, str) or search(v) is not None

    def check(v: Any) -> bool:
        if not isinstance(v, str):
            return not typed
        if (least and len(v) < least) or (most is not None and len(v) > most):
            return False
        return search is None or search(v) is not None

    return check


def _number_checks(schema: Mapping[str, Any]) -> list[Check]:
    return [_number_check(compare, schema[k]) for k, compare in _NUMBER_BOUNDS.items() if k in schema]


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


def _bounds(schema: Mapping[str, Any], low: str, high: str) -> tuple[int, int | None]:
    least, most = schema.get(low, 0), schema.get(high)
    if not isinstance(least, int) or not (most is None or isinstance(most, int)):
        raise Unsupported(f"{low}/{high} that are not integers")
    return least, most


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


_SHAPES = (("object", _object_check), ("array", _array_check), ("string", _string_check))


def _compile(schema: Any) -> Check:
    if schema is True:
        return _always
    if schema is False:
        return lambda v: False
    if not isinstance(schema, Mapping):
        raise Unsupported(f"schema {schema!r}")
    unknown = set(schema) - _SUPPORTED
    if unknown:
        raise Unsupported(", ".join(sorted(unknown)))
    type_check = _type_check(schema["type"]) if "type" in schema else None
    checks: list[Check] = []
    for name, shape_check in _SHAPES:
        # With one declared type, that type's check also does the type check.
        typed = schema.get("type") == name
        check = shape_check(schema, typed)
        if check is not None:
            checks.append(check)
            if typed:
                type_check = None
    if type_check is not None:
        checks.insert(0, type_check)
    checks += _number_checks(schema) + _combinator_checks(schema)
    return _all(checks)


def _all(checks: list[Check]) -> Check:
    # Fixed-arity closures: cheaper per call than all() over a generator, and no chain of nested calls.
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)
    if len(checks) == 3:
        first, second, third = checks
        return lambda v: first(v) and second(v) and third(v)
    return functools.reduce(_both, checks)


def _both(first: Check, second: Check) -> Check:
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
