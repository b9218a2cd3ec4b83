"""Chat-completions messages as flowfleet reads them: the assistant's text, its tool calls and usage.

>>> reply = parse_reply(b'{"choices": [{"message": {"role": "assistant", "content": "hi"}}],'
...                     b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}')
>>> reply.content, reply.tool_calls, reply.usage
('hi', (), {'prompt_tokens': 3, 'completion_tokens': 1})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cluster.errors import ComponentError

Message = dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for; `arguments` is the JSON text the model wrote (maybe malformed)."""

    id: str
    name: str
    arguments: str

    def as_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ChatReply:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Mapping[str, int] = field(default_factory=dict)

    def as_message(self) -> Message:
        """The assistant message to send back in the next round."""
        message: Message = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.as_message() for call in self.tool_calls]
        return message


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ComponentError("malformed response: tool_calls is not a list")
    calls = []
    for i, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ComponentError(f"malformed response: tool call {i} has no function name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send an object instead of JSON text
            arguments = orjson.dumps(arguments).decode()
        call_id = item.get("id") if isinstance(item.get("id"), str) else f"call_{i}"
        calls.append(ToolCall(call_id, function["name"], arguments if isinstance(arguments, str) else ""))
    return tuple(calls)


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k in ("prompt_tokens", "completion_tokens") and type(v) is int}


def parse_reply(body: bytes) -> ChatReply:
    """The assistant's message from a chat-completions body; raises ComponentError when it has neither
    text nor tool calls."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ComponentError("malformed response: body is not JSON") from e
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as e:
        raise ComponentError("malformed response: no choices[0].message") from e
    if not isinstance(message, dict):
        raise ComponentError("malformed response: choices[0].message is not an object")
    content = message.get("content")
    calls = _tool_calls(message.get("tool_calls"))
    if content is not None and not isinstance(content, str):
        raise ComponentError("malformed response: message content is not text")
    if content is None and not calls:
        raise ComponentError("malformed response: message content is null, not text")
    return ChatReply(content, calls, _usage(data.get("usage")))
