"""JSON pointers, short messages, and JSON Schema checks that report problems at their pointer.

Shared by document validation and the semantic analysis (which must not import each other).
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from cluster.errors import Problem
from cluster.flow.fastschema import compile_schema

MESSAGE_CHARS = 300


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) from path parts.

    >>> pointer("nodes", 3, "params", "a/b~c")
    '/nodes/3/params/a~1b~0c'
    """
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def shorten(text: str, limit: int = MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path_key(error: ValidationError) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in error.absolute_path)


class SchemaChecker:
    """A JSON Schema, checked fast when the value is valid and by `jsonschema` (for its messages) when
    it is not; see `cluster.flow.fastschema`. Raises jsonschema's SchemaError for a malformed schema."""

    def __init__(self, schema: Any, code: str) -> None:
        Draft202012Validator.check_schema(schema)
        self.validator = Draft202012Validator(schema)
        self.fast = compile_schema(schema)
        self.code = code

    def problems(self, instance: Any, *prefix: str | int) -> list[Problem]:
        """Every violation as a Problem located under `prefix`, in document order."""
        if self.fast is not None and self.fast(instance):
            return []
        errors = sorted(self.validator.iter_errors(instance), key=_path_key)
        return [Problem(pointer(*prefix, *e.absolute_path), self.code, shorten(e.message)) for e in errors]
