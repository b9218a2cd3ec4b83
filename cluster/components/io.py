"""The edges of a flow: input nodes that read the run's inputs and output nodes that name its outputs.

`ChatInput` / `TextInput` read the run input `params.name` (default "input"). They do so through an input
port of that name which no edge feeds, so the engine's ordinary rule ("an unfed input is read from the
run's inputs under the same name") applies: a missing value is a run input error, unless `params.default`
is given. They emit it on `message` (ChatInput) or `text` (TextInput).

`ChatOutput` / `TextOutput` take one input (`message` / `text`) and write it to the run's outputs under
`params.name` (default: the node id).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from cluster.components.base import Component, Ports, RunContext
from cluster.components.conversation import ChatMessage
from cluster.errors import RunInputError
from cluster.flow.templates import to_text

_INPUT_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 128}


class _Input(Component):
    is_input = True
    port: ClassVar[str]
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {**_INPUT_NAME, "default": "input", "description": "the run input to read"},
            "default": {"description": "used when the run has no such input; makes the input optional"},
            "description": {"type": "string", "maxLength": 1000},
        },
    }

    @staticmethod
    def input_name(params: Mapping[str, Any]) -> str:
        name = params.get("name", "input")
        return name if isinstance(name, str) else "input"

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        name = cls.input_name(params)
        required = frozenset() if "default" in params else frozenset({name})
        # No default input: an edge must name the port explicitly, so a stray edge is a validation error.
        return Ports(inputs=(name,), required=required, outputs=(cls.port,), default_output=cls.port)

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        name = self.input_name(self.params)
        if name in inputs:
            return {self.port: inputs[name]}
        if "default" in self.params:
            return {self.port: self.params["default"]}
        raise RunInputError(f"missing run input {name!r}", input=name)


_STORE_PARAMS: dict[str, Any] = {
    "store_message": {
        "type": "boolean",
        "default": True,
        "description": "add the message to the run's conversation (when the run names one)",
    },
    "sender_name": {"type": "string", "maxLength": 200},
}


def _remember(ctx: RunContext, params: Mapping[str, Any], role: str, value: Any) -> None:
    if ctx.conversation is not None and params.get("store_message", True):
        sender = params.get("sender_name") or ("User" if role == "user" else "AI")
        ctx.conversation.remember(ChatMessage(role, to_text(value), time.time(), sender))


class ChatInput(_Input):
    type_name = "ChatInput"
    description = (
        "Reads a chat message from the run's inputs (params.name, default 'input'); output `message`. "
        "The message joins the run's conversation, if any."
    )
    port = "message"
    uses_conversation = True
    params_schema: ClassVar[dict[str, Any]] = {
        **_Input.params_schema,
        "properties": {**_Input.params_schema["properties"], **_STORE_PARAMS},
    }

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        produced = await super().run(inputs, ctx)
        _remember(ctx, self.params, "user", produced[self.port])
        return produced


class TextInput(_Input):
    type_name = "TextInput"
    description = "Reads a text value from the run's inputs (params.name, default 'input'); output `text`."
    port = "text"


class _Output(Component):
    is_output = True
    port: ClassVar[str]
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {**_INPUT_NAME, "description": "key in the run's outputs (default: the node id)"},
            "description": {"type": "string", "maxLength": 1000},
        },
    }

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(
            inputs=(cls.port,),
            required=frozenset({cls.port}),
            default_input=cls.port,
            outputs=(cls.port,),
            default_output=cls.port,
        )

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        return {self.port: inputs[self.port]}


class ChatOutput(_Output):
    type_name = "ChatOutput"
    description = (
        "Writes its `message` input to the run's outputs under params.name (default: node id); the "
        "message joins the run's conversation, if any."
    )
    port = "message"
    uses_conversation = True
    params_schema: ClassVar[dict[str, Any]] = {
        **_Output.params_schema,
        "properties": {**_Output.params_schema["properties"], **_STORE_PARAMS},
    }

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        _remember(ctx, self.params, "assistant", inputs[self.port])
        return {self.port: inputs[self.port]}


class TextOutput(_Output):
    type_name = "TextOutput"
    description = "Writes its `text` input to the run's outputs under params.name (default: node id)."
    port = "text"
