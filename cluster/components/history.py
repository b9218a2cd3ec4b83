"""MessageHistory: the run's conversation as text and as a list of messages (LangFlow's "Message History").

    {"id": "history", "type": "MessageHistory",
     "params": {"n_messages": 20, "sender": "all", "order": "ascending", "template": "{sender_name}: {text}"}}

Retrieve mode (default) reads the last `n_messages` messages of earlier turns (RunContext.conversation),
optionally only the user's or the assistant's (`sender`) or one sender name (`sender_name`), oldest first
(`order: "descending"` for newest first), and outputs them as `text` (each message rendered with the safe
`template`, whose only variables are `sender_name`, `text` and `role`, joined by newlines) and as
`messages` (a list of {role, content, sender}). Without a conversation it outputs "" and [].

Store mode remembers its `message` input in the conversation (role from `sender`: "user", or
"assistant" for "assistant" and "all") and passes it on as `text`.

In tool mode (wired to an agent's `tools`) a retrieve node takes no arguments and answers with `text`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.conversation import ChatMessage
from cluster.components.tools.common import arguments_schema, tool_params_schema
from cluster.errors import FlowValidationError, Problem
from cluster.flow.templates import check_template, parse_template, render, to_text

DEFAULT_TEMPLATE = "{sender_name}: {text}"  # LangFlow's default
TEMPLATE_VARIABLES = ("sender_name", "text", "role")
MAX_MESSAGES = 1000
DEFAULT_MESSAGES = 100
MAX_TEMPLATE_CHARS = 10_000
DEFAULT_SENDER_NAMES = {"user": "User", "assistant": "AI"}


def message_record(message: ChatMessage) -> dict[str, str]:
    """A message as the `messages` output lists it."""
    return {"role": message.role, "content": message.content, "sender": sender_name(message)}


def sender_name(message: ChatMessage) -> str:
    """The message's sender name, else the default for its role (ChatInput's "User", ChatOutput's "AI")."""
    return message.sender or DEFAULT_SENDER_NAMES.get(message.role, message.role)


class MessageHistory(Component):
    type_name = "MessageHistory"
    description = (
        "Returns the most recent messages of this conversation, oldest first, one per line "
        "(or stores its `message` input in store mode); outputs `text` and `messages`."
    )
    tool_mode = True
    uses_conversation = True
    params_schema = tool_params_schema(
        {
            "mode": {"enum": ["retrieve", "store"], "default": "retrieve"},
            "n_messages": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_MESSAGES,
                "default": DEFAULT_MESSAGES,
                "description": "retrieve: how many of the most recent messages",
            },
            "sender": {
                "enum": ["user", "assistant", "all"],
                "default": "all",
                "description": "retrieve: only this role's messages; store: the role of the stored message",
            },
            "sender_name": {
                "type": "string",
                "maxLength": 200,
                "description": "retrieve: only messages from this sender name; store: the name stored",
            },
            "order": {"enum": ["ascending", "descending"], "default": "ascending"},
            "template": {
                "type": "string",
                "maxLength": MAX_TEMPLATE_CHARS,
                "default": DEFAULT_TEMPLATE,
                "description": "how each message appears in `text`; variables: sender_name, text, role",
            },
        }
    )

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.store = params.get("mode", "retrieve") == "store"
        self.n_messages = int(params.get("n_messages", DEFAULT_MESSAGES))
        self.sender = params.get("sender", "all")
        self.sender_name = params.get("sender_name") or None
        self.descending = params.get("order", "ascending") == "descending"
        self.template = parse_template(params.get("template", DEFAULT_TEMPLATE))
        # A filter drops messages after they are read: read the most the component ever shows, then keep
        # the last n_messages that pass.
        filtered = self.sender != "all" or self.sender_name is not None
        self.read_limit = MAX_MESSAGES if filtered else self.n_messages

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        if params.get("mode", "retrieve") == "store":
            return Ports(
                inputs=("message",),
                required=frozenset({"message"}),
                default_input="message",
                outputs=("text", "messages"),
                default_output="text",
            )
        return Ports(outputs=("text", "messages"), default_output="text")

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        text = params.get("template", DEFAULT_TEMPLATE)
        problems = check_template(text, f"{path}/template")
        if problems:
            return problems
        try:
            names = parse_template(text).variables
        except FlowValidationError as e:  # pragma: no cover - checked just above
            return list(e.problems)
        unknown = [name for name in names if name not in TEMPLATE_VARIABLES]
        if unknown:
            message = (
                f"unknown template variable(s) {', '.join(repr(n) for n in unknown)}; "
                f"a message template may use only {', '.join(TEMPLATE_VARIABLES)}"
            )
            return [Problem(f"{path}/template", "unknown_variable", message)]
        return []

    @classmethod
    def tool_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        if params.get("mode", "retrieve") == "store":
            message = {"type": "string", "description": "the message to remember"}
            return arguments_schema({"message": message}, required=("message",))
        return arguments_schema({})

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        if self.store:
            return self._store(inputs["message"], ctx)
        conversation = ctx.conversation
        if conversation is None:
            return {"text": "", "messages": []}
        messages = await conversation.history(self.read_limit)
        if self.sender != "all":
            messages = [m for m in messages if m.role == self.sender]
        if self.sender_name is not None:
            messages = [m for m in messages if sender_name(m) == self.sender_name]
        messages = messages[-self.n_messages :]
        if self.descending:
            messages.reverse()
        lines = [
            render(self.template, {"sender_name": sender_name(m), "text": m.content, "role": m.role})
            for m in messages
        ]
        return {"text": "\n".join(lines), "messages": [message_record(m) for m in messages]}

    def _store(self, value: Any, ctx: RunContext) -> Mapping[str, Any]:
        text = to_text(value)
        role = "user" if self.sender == "user" else "assistant"
        message = ChatMessage(role, text, time.time(), self.sender_name or DEFAULT_SENDER_NAMES[role])
        if ctx.conversation is not None:
            ctx.conversation.remember(message)
        return {"text": text, "messages": [message_record(message)]}
