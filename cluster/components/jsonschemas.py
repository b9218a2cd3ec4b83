"""JSON Schemas that come from flows: bounded at validation, applied by the pure-Python `jsonschema`.

A StructuredOutput node's `schema` is written by a deployer, so it is data with limits, never code:
`schema_problems` refuses one over 20,000 bytes of JSON, nested deeper than 12, with a `pattern` (or a
`patternProperties` key) over 200 characters, a `$ref` that is not local (`#` or `#/...`) or does not
resolve, or one Draft 2020-12's meta-schema rejects. `BoundedSchema` validates values with
`jsonschema`'s interpreter (no code generation, no fast path that compiles the schema) and stops after
a fixed number of keyword evaluations, so `$ref` chains cannot make one check take exponential time.

>>> schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
>>> schema_problems(schema, "/params/schema"), minimal_instance(schema)
([], {'n': 0})
>>> BoundedSchema(schema).first_error({"n": "two"})
'/n fails type "integer"'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote

import orjson
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing.exceptions import Unresolvable

from cluster.errors import ComponentError, Problem
from cluster.flow.schemacheck import pointer, shorten

MAX_SCHEMA_BYTES = 20_000
MAX_SCHEMA_DEPTH = 12  # objects and arrays; the schema itself is level 1
MAX_PATTERN_CHARS = 200
# Work allowed per validation: one step per keyword evaluated, ten per reference followed (a `$ref`
# costs about ten times as much): about 0.2 s of CPU at worst.
MAX_STEPS = 100_000
REF_STEPS = 10
REF_KEYWORDS = ("$ref", "$dynamicRef")


def _walk(
    value: Any, parts: tuple[str | int, ...], depth: int
) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    """(problem code, location) of every bound broken anywhere in the JSON value, in document order."""
    if isinstance(value, list | dict) and depth > MAX_SCHEMA_DEPTH:
        yield "schema_too_deep", parts
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, (*parts, i), depth + 1)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key == "pattern" and isinstance(item, str) and len(item) > MAX_PATTERN_CHARS:
            yield "pattern_too_long", (*parts, key)
        elif key == "patternProperties" and isinstance(item, dict):
            yield from (("pattern_too_long", (*parts, key, p)) for p in item if len(p) > MAX_PATTERN_CHARS)
        elif key in REF_KEYWORDS and isinstance(item, str) and not (item == "#" or item.startswith("#/")):
            yield "invalid_schema", (*parts, key)
        yield from _walk(item, (*parts, key), depth + 1)


_MESSAGES = {
    "schema_too_deep": f"the schema nests objects and arrays deeper than {MAX_SCHEMA_DEPTH} levels",
    "pattern_too_long": f"a pattern longer than {MAX_PATTERN_CHARS} characters",
    "invalid_schema": "only local references are allowed ($ref: '#' or '#/...')",
}


def resolve_local(schema: Any, ref: str) -> tuple[bool, Any]:
    """(found, target) of a local reference `#/a/b` (RFC 6901 escapes and percent-encoding undone)."""
    target = schema
    for raw in unquote(ref[2:]).split("/") if ref.startswith("#/") else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return False, None
    return True, target


def _refs(value: Any, parts: tuple[str | int, ...] = ()) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in REF_KEYWORDS and isinstance(item, str):
                yield item, (*parts, key)
            yield from _refs(item, (*parts, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _refs(item, (*parts, i))


def schema_problems(schema: Any, path: str) -> list[Problem]:
    """Every bound the schema breaks, each at its JSON pointer under `path`; [] for a usable schema."""
    size = len(orjson.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        message = f"the schema is {size:,} bytes of JSON; at most {MAX_SCHEMA_BYTES:,} are allowed"
        return [Problem(path, "schema_too_large", message)]
    broken = [Problem(path + pointer(*at), code, _MESSAGES[code]) for code, at in _walk(schema, (), 1)]
    if broken:
        return broken
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        where = path + pointer(*e.absolute_path)
        return [Problem(where, "invalid_schema", shorten(f"not a valid JSON Schema: {e.message}", 200))]
    return [
        Problem(path + pointer(*at), "invalid_schema", f"{ref} points at nothing in the schema")
        for ref, at in _refs(schema)
        if not resolve_local(schema, ref)[0]
    ]


class _TooMuchWork(Exception):
    pass


_budget: ContextVar[list[int]] = ContextVar("jsonschema_budget")
Keyword = Callable[..., Any]


def _counted(keyword: Keyword, steps: int) -> Keyword:
    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        left = _budget.get()
        left[0] -= steps
        if left[0] < 0:
            raise _TooMuchWork
        errors = keyword(validator, value, instance, schema)
        if errors is not None:
            yield from errors

    return counted


# Every keyword of Draft 2020-12, each counting against the budget (`extend` is untyped in the stubs).
_Bounded = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        name: _counted(fn, REF_STEPS if name in REF_KEYWORDS else 1)
        for name, fn in Draft202012Validator.VALIDATORS.items()
    },
)


def _path_key(error: ValidationError) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in error.absolute_path)


def describe(error: ValidationError) -> str:
    """Where and which keyword, from the schema's side only: no value of the instance is repeated."""
    where = shorten(pointer(*error.absolute_path), 100) or "/"
    if error.validator in ("required", "dependentRequired"):
        return f"{where}: {error.message}"  # the names come from the schema
    if error.validator is None:  # a `false` subschema
        return f"{where} is not allowed by the schema"
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        return f"{where} has a property the schema does not allow"
    expected = shorten(orjson.dumps(error.validator_value).decode(), 80)
    return f"{where} fails {error.validator} {expected}"


class BoundedSchema:
    """A schema `schema_problems` accepted, ready to check values (shared by concurrent runs)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.validator = _Bounded(schema)

    def first_error(self, instance: Any) -> str | None:
        """The first violation in document order, described by `describe`, or None for a valid value.
        Raises ComponentError when the check runs out of budget or a reference cannot be followed."""
        token = _budget.set([MAX_STEPS])
        try:
            errors = list(self.validator.iter_errors(instance))
        except (_TooMuchWork, RecursionError) as e:
            raise ComponentError("checking the output against the schema took too many steps") from e
        except Unresolvable as e:
            raise ComponentError(f"the schema has a reference that cannot be followed: {e.ref}") from e
        finally:
            _budget.reset(token)
        return describe(min(errors, key=_path_key)) if errors else None


_SCALARS: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False}
MAX_INSTANCE_VALUES = 10_000  # a recursive schema with several required references grows exponentially


def minimal_instance(schema: Any) -> Any:
    """A deterministic small value for the schema: its `default`, `const` or first `enum` value, else
    "" / 0 / false / [] / null, or an object with its required properties filled in the same way. Local
    `$ref`s and the first branch of `anyOf` / `oneOf` / `allOf` are followed (beyond 24 levels or 10,000
    values, null). It is not checked against the schema: `minLength`, `pattern` ... may not hold."""
    return _minimal(schema, schema, 0, [MAX_INSTANCE_VALUES])


def _minimal(schema: Any, root: Any, depth: int, left: list[int]) -> Any:
    left[0] -= 1
    if not isinstance(schema, dict) or depth > 2 * MAX_SCHEMA_DEPTH or left[0] < 0:
        return None
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("$ref"), str):
        return _minimal(resolve_local(root, schema["$ref"])[1], root, depth + 1, left)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        branches = next((schema[k] for k in ("anyOf", "oneOf", "allOf") if schema.get(k)), None)
        if isinstance(branches, list):
            return _minimal(branches[0], root, depth + 1, left)
        kind = "object" if "properties" in schema or "required" in schema else None
    if kind == "object":
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        return {name: _minimal(properties.get(name), root, depth + 1, left) for name in required}
    return [] if kind == "array" else _SCALARS.get(str(kind))
