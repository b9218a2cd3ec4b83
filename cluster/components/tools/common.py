"""What the tool components share: the shape of their params schema, argument schemas, text arguments
and time budgets.

>>> arguments_schema({"q": {"type": "string"}}, required=("q",))["additionalProperties"]
False
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cluster.components.base import TOOL_PARAMS, RunContext
from cluster.errors import ComponentError
from cluster.flow.templates import to_text

DESCRIPTION_PARAM: dict[str, Any] = {"type": "string", "maxLength": 1000}


def tool_params_schema(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    """A tool component's params schema: its own params plus `tool_name`, `tool_description` and
    `description`; unknown params are refused."""
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**properties, **TOOL_PARAMS, "description": DESCRIPTION_PARAM},
    }
    names = list(required)
    if names:
        schema["required"] = names
    return schema


def arguments_schema(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON schema (an object) of what a model passes: one property per input port."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
    }


def text_argument(inputs: Mapping[str, Any], name: str, max_chars: int) -> str:
    """Input `name` as stripped, non-empty text of at most `max_chars` characters, else ComponentError."""
    text = to_text(inputs.get(name)).strip()
    if not text:
        raise ComponentError(f"{name} is empty")
    if len(text) > max_chars:
        raise ComponentError(f"{name} is longer than {max_chars:,} characters")
    return text


def time_budget(timeout_s: float, ctx: RunContext) -> float:
    """Seconds one call may take: `timeout_s`, never past the run's deadline (ComponentError once it
    has passed)."""
    remaining = ctx.remaining()
    if remaining is None:
        return timeout_s
    if remaining <= 0:
        raise ComponentError("run deadline reached")
    return min(timeout_s, remaining)
