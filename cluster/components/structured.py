"""StructuredOutput: asks a model for a JSON object that fits a JSON Schema, and outputs it validated.

    {"id": "extract", "type": "StructuredOutput", "params": {"provider": "openai", "model": "gpt-4o-mini",
     "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}

Inputs: `input` (default, required: the text to extract from) and, unless `params.system` fixes the
instructions, `system`. Outputs: `data` (default: the object) and `text` (its JSON text).
The model params and the provider are the LLM component's (`build_provider`: the same secrets, egress
and retries). `mode` `response_format` asks for `{"type": "json_schema", ...}`; `tool` forces one tool
whose parameters are the schema and takes the call's arguments. Either way the result is parsed and
checked against the schema (cluster.components.jsonschemas: bounded at validation, never compiled).
Offline (no runtime, or provider `echo`) the node calls nothing: it answers with the reply an example
records for it, checked the same way, else with the schema's minimal instance (`minimal_instance`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from cluster.components.base import TOOL_NAME_PATTERN, BuildContext, Component, Ports, RunContext
from cluster.components.jsonschemas import BoundedSchema, minimal_instance, schema_problems
from cluster.components.llm import LLM, build_provider
from cluster.components.meter import NO_METER
from cluster.components.providers.chat import ChatReply
from cluster.components.providers.echo import EchoProvider
from cluster.egress.policy import Outbound
from cluster.errors import ComponentError, Problem
from cluster.flow.templates import to_text

MODEL_PARAMS = (
    "provider",
    "model",
    "base_url",
    "api_key_env",
    "temperature",
    "max_tokens",
    "timeout_s",
    "retries",
    "backoff_s",
    "description",
)
DEFAULT_SYSTEM = (
    "You are an AI that extracts structured JSON objects from unstructured text. Read the user's text "
    "and answer with one JSON object that fits the given schema exactly: every required property, the "
    "expected types, no other text. Do not invent values the text does not support."
)


def request_fields(mode: str, name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """What a chat-completions request adds to get JSON that fits `schema` (OpenAI's structured outputs)."""
    if mode == "tool":
        function = {"name": name, "description": "Record the extracted object.", "parameters": schema}
        return {
            "tools": [{"type": "function", "function": function}],
            "tool_choice": {"type": "function", "function": {"name": name}},
        }
    json_schema = {"name": name, "schema": schema, "strict": True}
    return {"response_format": {"type": "json_schema", "json_schema": json_schema}}


def _unfenced(text: str) -> str:
    """The JSON inside a Markdown code fence (```json ... ```), as models without structured outputs
    often write it; any other text as is.

    >>> _unfenced('```json\\n{"a": 1}\\n```')
    '{"a": 1}'
    """
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        return stripped[stripped.index("\n") + 1 : -3].strip()
    return text


class StructuredOutput(Component):
    type_name = "StructuredOutput"
    description = (
        "Extracts a JSON object that fits `params.schema` from the `input` text with a model; "
        "outputs `data` (default) and `text`."
    )
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["schema"],
        "properties": {
            **{name: LLM.params_schema["properties"][name] for name in MODEL_PARAMS},
            "schema": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"const": "object"}},
                "description": "JSON Schema (Draft 2020-12) of the output; `type: object` at the top",
            },
            "schema_name": {"type": "string", "pattern": TOOL_NAME_PATTERN, "default": "output"},
            "mode": {"enum": ["response_format", "tool"], "default": "response_format"},
            "system": {"type": "string", "description": "instructions, unless the `system` input is fed"},
        },
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.provider = build_provider(params, build)
        self.offline = isinstance(self.provider, EchoProvider)
        self.schema: dict[str, Any] = params["schema"]
        self.checker = BoundedSchema(self.schema)
        self.mode: str = params.get("mode", "response_format")
        self.name: str = params.get("schema_name", "output")
        self.extra = request_fields(self.mode, self.name, self.schema)
        # Tool arguments are not redacted by the provider (only message text is): do it here.
        self.redact = build.runtime.redact if build.runtime is not None else None
        self.flow, self.model = build.flow_name, params.get("model", "echo-1")
        self.meter = build.runtime.meter if build.runtime is not None else NO_METER

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        # Fixed instructions cannot be replaced by an edge or a run input (as with LLM's system).
        inputs = ("input",) if "system" in params else ("input", "system")
        return Ports(
            inputs=inputs,
            required=frozenset({"input"}),
            default_input="input",
            outputs=("data", "text"),
            default_output="data",
        )

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        return [*LLM.check_params(params, path), *schema_problems(params["schema"], f"{path}/schema")]

    @classmethod
    def outbound(cls, params: Mapping[str, Any]) -> tuple[Outbound, ...]:
        return LLM.outbound(params)

    def _result(self, text: str) -> dict[str, Any]:
        """Parse and check the model's JSON text; errors say where, never repeat the reply."""
        try:
            data = orjson.loads(_unfenced(text))
        except orjson.JSONDecodeError as e:
            where = f"line {e.lineno}, column {e.colno}"
            raise ComponentError(f"the model's output is not JSON (at {where})") from e
        violation = self.checker.first_error(data)
        if violation is not None:
            raise ComponentError(f"the model's output does not fit the schema: {violation}")
        return {"data": data, "text": orjson.dumps(data).decode()}

    def _answer(self, reply: ChatReply) -> str:
        if self.mode == "response_format":
            if reply.content is None:
                raise ComponentError("the model answered with tool calls, not JSON text")
            return reply.content
        call = next((c for c in reply.tool_calls if c.name == self.name), None)
        if call is None:
            raise ComponentError(f"the model did not call the tool {self.name!r}")
        return self.redact(call.arguments) if self.redact is not None else call.arguments

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        if ctx.replies and self.node_id in ctx.replies:  # an example's recorded reply (offline dry run)
            return self._result(ctx.replies[self.node_id])
        if self.offline:
            data = orjson.loads(orjson.dumps(minimal_instance(self.schema)))  # a fresh copy per run
            return {"data": data, "text": orjson.dumps(data).decode()}
        system = inputs.get("system")
        messages = [
            {"role": "system", "content": to_text(system) if system is not None else self._system()},
            {"role": "user", "content": to_text(inputs["input"])},
        ]
        reply = await self.provider.chat(messages, ctx.remaining, self.extra)
        for kind in ("prompt", "completion"):
            count = reply.usage.get(f"{kind}_tokens")
            if count:
                self.meter.tokens(self.flow, self.model, kind, count)
        return self._result(self._answer(reply))

    def _system(self) -> str:
        system: str = self.params.get("system", DEFAULT_SYSTEM)
        return system

    @property
    def holds_resources(self) -> bool:
        held: bool = getattr(self.provider, "holds_resources", True)
        return held

    async def aclose(self) -> None:
        await self.provider.aclose()
