"""An Agent's structured response (LangFlow's `structured_response`): JSON that fits `output_schema`.

    {"id": "agent", "type": "Agent", "params": {"provider": "openai", "model": "gpt-4o-mini",
     "output_schema": {"type": "object", "properties": {"price": {"type": "string"}},
                       "required": ["price"], "additionalProperties": false}}}

As LangFlow's Agent does it: with tools, the agent runs its tool loop with instructions that ask for JSON
(`instructions`: the system prompt, `Format instructions: ...` when `format_instructions` is set, then
the schema) and its final answer is parsed; without tools, one model call asks for the schema directly
(`request_fields`, OpenAI's structured outputs) with the system prompt and the input only. The answer's
JSON (a ```json block, else the first JSON object or array in the text) must be an object that fits the
schema, or a list of such objects: the `data` output is the object, or `{"results": [...]}` for a list
of several (LangFlow's shape). Unlike LangFlow, which passes a misfit on with a `validation_error`, an
answer that holds no JSON or does not fit fails the node.

>>> schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
>>> StructuredResponse(schema).parse('Here: [{"n": 1}, {"n": 2}]')
{'results': [{'n': 1}, {'n': 2}]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

from cluster.components.jsonschemas import BoundedSchema, minimal_instance, schema_problems
from cluster.components.parser import extract_json
from cluster.components.structured import request_fields
from cluster.errors import ComponentError, Problem

SCHEMA_NAME = "structured_response"
# LangFlow's words (its structured-output orchestrator), so the model is asked the same thing.
JSON_ONLY = (
    "You must respond ONLY with a JSON object matching this schema. "
    "Do not include explanations, markdown, or any text outside the JSON.\nSchema:\n"
)
MAX_ITEMS = 1000

# The Agent params of a structured response.
RESPONSE_PARAMS: dict[str, Any] = {
    "output_schema": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"const": "object"}},
        "description": "JSON Schema (Draft 2020-12) of the structured response (`data`); `type: object`",
    },
    "format_instructions": {
        "type": "string",
        "maxLength": 20_000,
        "description": "with output_schema: how to format the answer, added to the instructions",
    },
}


class StructuredResponse:
    """What an Agent with `output_schema` asks for and how it reads the answer (shared by runs)."""

    def __init__(self, schema: dict[str, Any], format_instructions: str = "", offline: bool = False) -> None:
        self.schema = schema
        self.format_instructions = format_instructions
        self.checker = BoundedSchema(schema)
        # Offline (echo) models write no JSON: the answer is then the schema's minimal instance.
        self.offline = offline

    def instructions(self, system: str) -> str:
        """The system prompt of a tool loop whose final answer must be the JSON."""
        parts = [system] if system else []
        if self.format_instructions:
            parts.append(f"Format instructions: {self.format_instructions}")
        parts.append(JSON_ONLY + json.dumps(self.schema, indent=2, ensure_ascii=False))
        return "\n\n".join(parts)

    def request_fields(self) -> dict[str, Any]:
        """What a tool-less agent's one request adds to get JSON that fits the schema."""
        return request_fields("response_format", SCHEMA_NAME, self.schema)

    def outputs(self, answer: str, recorded: bool = False) -> dict[str, Any]:
        """The Agent's outputs for its final answer: `data` and `text` (the JSON text of `data`). An
        example's `recorded` answer is parsed even offline."""
        data = minimal_instance(self.schema) if self.offline and not recorded else self.parse(answer)
        data = orjson.loads(orjson.dumps(data))  # a fresh copy per run
        return {"data": data, "text": orjson.dumps(data).decode()}

    def parse(self, answer: str) -> Any:
        """The object (or `{"results": [...]}`) the answer's JSON holds; ComponentError when there is
        none or it does not fit. Errors say where, never repeat the answer."""
        try:
            value, _ = extract_json(answer)
        except ComponentError as e:
            raise ComponentError("the agent's answer holds no JSON object for its output_schema") from e
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ComponentError("the agent answered with an empty JSON list")
        if len(items) > MAX_ITEMS:
            raise ComponentError(f"the agent answered with {len(items)} objects; at most {MAX_ITEMS}")
        for position, item in enumerate(items):
            violation = self.checker.first_error(item)
            if violation is not None:
                where = f"item {position}: " if isinstance(value, list) else ""
                raise ComponentError(f"the agent's answer does not fit output_schema: {where}{violation}")
        return items[0] if len(items) == 1 else {"results": items}


def response_problems(params: Mapping[str, Any], path: str) -> list[Problem]:
    """The bounds an Agent's `output_schema` breaks (cluster.components.jsonschemas), at its pointer."""
    if "output_schema" not in params:
        return []
    return schema_problems(params["output_schema"], f"{path}/output_schema")


def structured_response(params: Mapping[str, Any], offline: bool) -> StructuredResponse | None:
    """The structured response of an Agent's (valid) params; None without `output_schema`."""
    schema = params.get("output_schema")
    if schema is None:
        return None
    return StructuredResponse(schema, params.get("format_instructions", ""), offline)
