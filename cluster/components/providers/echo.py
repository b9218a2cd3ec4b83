"""The `echo` provider: deterministic and offline, for demos, tests and dry runs.

>>> import asyncio
>>> asyncio.run(EchoProvider("echo-1").complete("hi", None, lambda: None))
'[echo-1] hi'
>>> asyncio.run(EchoProvider("echo-1").complete("hi", "be brief", lambda: None))
'[echo-1] (system: be brief) hi'

As a chat model with tools (an offline agent), echo works in two rounds. First it calls every tool it
can fill in, each once: a tool whose required arguments are all strings gets the user's last message as
each of them. Then it answers with the model name, the user's message and each tool's result, one per
line (`<tool>: <result>`). A tool it cannot fill in is never called. Streamed (`on_delta`), the answer
arrives word by word, each word with the whitespace after it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from cluster.components.providers import OnDelta, Remaining
from cluster.components.providers.chat import ChatReply, Message, ToolCall


def _text(content: Any) -> str:
    return content if isinstance(content, str) else orjson.dumps(content).decode()


_WORD = re.compile(r"\s*\S+\s*|\s+")


def words(text: str) -> list[str]:
    """`text` in pieces that join back to it, one word (and the whitespace after it) each.

    >>> words("[echo-1] hi there\\n")
    ['[echo-1] ', 'hi ', 'there\\n']
    """
    return _WORD.findall(text)


def _fillable(tool: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(name, required argument names) of a tool whose required arguments are all strings."""
    function = tool.get("function", {})
    parameters = function.get("parameters", {})
    properties = parameters.get("properties", {})
    required = list(parameters.get("required", []))
    if not all(properties.get(name, {}).get("type") == "string" for name in required):
        return None
    return function.get("name", ""), required


class EchoProvider:
    """Replies with the model name, then the system message (if any), then the prompt, verbatim."""

    holds_resources = False  # nothing to close

    def __init__(self, model: str) -> None:
        self.model = model

    async def complete(self, prompt: str, system: str | None, remaining: Remaining) -> str:
        if system:
            return f"[{self.model}] (system: {system}) {prompt}"
        return f"[{self.model}] {prompt}"

    async def chat(
        self,
        messages: list[Message],
        remaining: Remaining,
        extra: Mapping[str, Any] | None = None,
        *,
        on_delta: OnDelta | None = None,
    ) -> ChatReply:
        reply = await self._reply(messages, remaining, extra)
        if on_delta is not None and reply.content:
            for word in words(reply.content):
                on_delta(word)
        return reply

    async def _reply(
        self, messages: list[Message], remaining: Remaining, extra: Mapping[str, Any] | None
    ) -> ChatReply:
        user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        system = next((_text(m.get("content")) for m in messages if m.get("role") == "system"), None)
        tools = (extra or {}).get("tools") or []
        called = any(m.get("role") == "tool" for m in messages)
        if tools and not called:
            calls: list[ToolCall] = []
            for tool in tools:
                fillable = _fillable(tool)
                if fillable is not None:
                    name, required = fillable
                    arguments = orjson.dumps(dict.fromkeys(required, user)).decode()
                    calls.append(ToolCall(f"call_{len(calls)}", name, arguments))
            if calls:
                return ChatReply(None, tuple(calls))
        names = {call["id"]: call["function"]["name"] for m in messages for call in m.get("tool_calls") or ()}
        lines = [await self.complete(user, system, remaining)]
        lines += [
            f"{names.get(m.get('tool_call_id'), 'tool')}: {_text(m.get('content'))}"
            for m in messages
            if m.get("role") == "tool"
        ]
        return ChatReply("\n".join(lines))

    async def aclose(self) -> None:
        return None
